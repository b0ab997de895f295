// The "TLS pipe" contender: the physical ceiling of a Node MITM on this box. An HTTP CONNECT
// listener that terminates TLS with one pre-generated leaf (bench.test, *.bench.test), dials the
// CONNECT target over TLS with the client's SNI, and pipes both ways. No parsing, no capture, no
// per-host certificates. argv[2]: JSON file { key, cert, upstreamCa } (PEM).
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { ReadyMessage } from './protocol.js';
import { holdsEnough } from '../src/io/backpressure.js';

const { key, cert, upstreamCa } = JSON.parse(readFileSync(process.argv[2], 'utf8')) as { key: string; cert: string; upstreamCa: string };
const ctx = tls.createSecureContext({ key, cert });

/**
 * Every chunk written on as read; the reading side pauses only while the other holds greytap's
 * forwarding window (stream.pipe() paused at every 16 KiB TLS record, which made this pipe ~1.4×
 * slower on bulk than it can be: not the physical limit it stands for).
 */
function forward(src: tls.TLSSocket, dst: tls.TLSSocket): void {
  let paused = false;
  dst.on('drain', () => { if (paused) { paused = false; src.resume(); } });
  src.on('data', (chunk: Buffer) => {
    if (!dst.write(chunk) && !paused && holdsEnough(dst)) { paused = true; src.pause(); }
  });
  src.on('end', () => dst.end());
}

const server = net.createServer({ noDelay: true }, (client) => {
  client.on('error', () => client.destroy());
  let head = Buffer.alloc(0);
  const onHead = (c: Buffer) => {
    head = Buffer.concat([head, c]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) { if (head.length > 8192) client.destroy(); return; }
    client.removeListener('data', onHead);
    const m = /^CONNECT ([^\s:]+):(\d+) /.exec(head.toString('latin1'));
    if (!m) { client.end('HTTP/1.1 400 Bad Request\r\n\r\n'); return; }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    const down = new tls.TLSSocket(client, { isServer: true, secureContext: ctx, ALPNProtocols: ['http/1.1'] });
    down.on('error', () => down.destroy());
    down.once('secure', () => {
      const sni = (down as tls.TLSSocket & { servername?: string | false }).servername || m[1];
      const up = tls.connect({ host: m[1], port: Number(m[2]), servername: sni, ca: upstreamCa, ALPNProtocols: ['http/1.1'] });
      up.setNoDelay(true);
      up.on('error', () => { up.destroy(); down.destroy(); });
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
      forward(down, up);
      forward(up, down);
    });
  };
  client.on('data', onHead);
});
server.listen(0, '127.0.0.1', () => {
  const msg: ReadyMessage = { ready: true, port: (server.address() as net.AddressInfo).port };
  process.send?.(msg);
});
process.on('disconnect', () => process.exit(0));
