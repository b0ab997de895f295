// The http-mitm-proxy contender (npm), run in a process of its own. Its defaults plus keepAlive,
// and one hook that plays the part of greytap's --map: requests and WebSocket upgrades for
// *.bench.test are dialled at 127.0.0.1 with the original name kept as SNI (the upstream's
// certificate is verified against it; the bench CA comes in through NODE_EXTRA_CA_CERTS).
// argv[2]: JSON file { sslCaDir }.
import { readFileSync } from 'node:fs';
import { Proxy } from 'http-mitm-proxy';
import type { ReadyMessage } from './protocol.js';

const { sslCaDir } = JSON.parse(readFileSync(process.argv[2], 'utf8')) as { sslCaDir: string };
const BENCH = /(^|\.)bench\.test$/;

const proxy = new Proxy();
proxy.onError(() => { /* counted by the client as failed operations */ });
proxy.onRequest((ctx, callback) => {
  const o = ctx.proxyToServerRequestOptions as unknown as { host: string; servername?: string } | undefined;
  if (o && BENCH.test(o.host)) { o.servername = o.host; o.host = '127.0.0.1'; }
  return callback();
});
proxy.onWebSocketConnection((ctx, callback) => {
  const o = ctx.proxyToServerWebSocketOptions as unknown as { url: string; servername?: string } | undefined;
  if (o) {
    const u = new URL(o.url);
    if (BENCH.test(u.hostname)) { o.servername = u.hostname; u.hostname = '127.0.0.1'; o.url = u.toString(); }
  }
  return callback();
});
proxy.listen({ host: '127.0.0.1', port: 0, sslCaDir, keepAlive: true }, (err) => {
  if (err) { console.error(String(err)); process.exit(1); }
  const addr = proxy.httpServer?.address();
  const msg: ReadyMessage = { ready: true, port: typeof addr === 'object' && addr ? addr.port : 0, caFile: `${sslCaDir}/certs/ca.pem` };
  process.send?.(msg);
});
process.on('disconnect', () => process.exit(0));
