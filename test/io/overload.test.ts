// Issue 6: overload must cost capture, never traffic. A one-thread pool with a small capture budget
// is flooded; every forwarded byte must still arrive, drops must be counted, and capture must
// recover when the flood stops. A slow reader must not grow memory without bound.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { makeTestPki } from '../helpers/test-ca.js';
import { apiGet, startGreytap, connectSocks, connectTunnel, waitFor, type Greytap } from '../helpers/harness.js';
import { startWsOrigin, openClient, closeClient, capturedMessages, payloadOf } from '../ws/ws-helpers.js';

const pki = makeTestPki();
let g: Greytap;
let wsOrigin: https.Server;
let bulk: https.Server;
let silent: net.Server;
let upgrader: net.Server;
/** bytes the never-answering origin read */
let silentGot = createHash('sha256');
let silentBytes = 0;
const BULK = 256 * 1024 * 1024;

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(g.api + '/metrics')).text();
  const key = labels ? `${name}{${labels}}` : `${name} `;
  const line = text.split('\n').find((l) => l.startsWith(key));
  return line ? Number(line.split(' ').pop()) : 0;
}

before(async () => {
  const o = await startWsOrigin(pki);
  wsOrigin = o.server;
  bulk = https.createServer(pki.serverContext(['bulk.test']), (_req, res) => {
    res.writeHead(200, { 'content-length': String(BULK) });
    const chunk = Buffer.alloc(1 << 20, 0x62);
    let sent = 0;
    const pump = () => { while (sent < BULK) { sent += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump); } res.end(); };
    pump();
  });
  const bulkPort = await new Promise<number>((r) => bulk.listen(0, '127.0.0.1', () => r((bulk.address() as net.AddressInfo).port)));
  // reads every request, answers none
  silent = net.createServer((c) => { c.on('error', () => {}); c.on('data', (d) => { silentGot.update(d); silentBytes += d.length; }); });
  const silentPort = await new Promise<number>((r) => silent.listen(0, '127.0.0.1', () => r((silent.address() as net.AddressInfo).port)));
  // answers the first request with a 101 to WebSocket, whatever follows it
  upgrader = net.createServer({ allowHalfOpen: true }, (c) => {
    c.on('error', () => {});
    c.once('data', () => c.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'));
    c.on('end', () => c.end());
  });
  const upgraderPort = await new Promise<number>((r) => upgrader.listen(0, '127.0.0.1', () => r((upgrader.address() as net.AddressInfo).port)));
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `ws.test:443=127.0.0.1:${o.port}`, '--map', `bulk.test:443=127.0.0.1:${bulkPort}`,
    '--map', `silent.test:80=127.0.0.1:${silentPort}`, '--map', `upgrade.test:80=127.0.0.1:${upgraderPort}`,
    '--workers', '1', '--max-capture-memory', '1MiB', '--max-conn-capture-memory', '1MiB']);
});
after(async () => { await g?.stop(); for (const s of [wsOrigin, bulk]) { s?.closeAllConnections(); s?.close(); } silent?.close(); upgrader?.close(); });

test('a flood that saturates a one-thread pool drops capture (counted), loses no forwarded byte, and capture recovers', async () => {
  const dropped0 = await metric('greytap_capture_dropped_total', 'reason="queue_full"');
  const c = await openClient(g, '/plain', 'http', { perMessageDeflate: false });
  const N = 1500;
  const msg = (i: number) => Buffer.alloc(64 * 1024, i % 251);
  const digest = createHash('sha256');
  for (let i = 0; i < N; i++) { const m = msg(i); digest.update(m); c.ws.send(m); }
  await waitFor(() => c.received.length === N, 'all echoes', 120_000);
  const echo = createHash('sha256');
  for (const m of c.received) echo.update(m as Buffer);
  assert.equal(echo.digest('hex'), digest.digest('hex'), 'the echo stream is intact: no forwarded byte lost');
  await closeClient(c);
  const dropped = (await metric('greytap_capture_dropped_total', 'reason="queue_full"')) - dropped0;
  assert.ok(dropped > 0, 'the flood overran the capture budget and drops were counted');
  const { messages } = await capturedMessages(g, c.tag, (ms) => ms.filter((m) => m.opcode === 'binary').length === 2 * N);
  const marked = messages.filter((m) => m.error === 'queue_full');
  assert.ok(marked.length > 0, 'dropped messages are still recorded, marked queue_full');
  // (a close frame behind the flood can be dropped too, under a busy host: its wire size is its own)
  const short = marked.filter((m) => m.wireBytes <= (m.opcode === 'binary' ? 64 * 1024 : 0));
  assert.deepEqual(short.map((m) => [m.opcode, m.direction, m.wireBytes]), [], 'with their wire size');

  // recovery: after the flood, a new connection is captured whole
  const after = await openClient(g, '/ctx', 'http');
  for (let i = 0; i < 20; i++) after.ws.send(`calm ${i}`);
  await waitFor(() => after.received.length === 20, 'calm echoes');
  await closeClient(after);
  const calm = await capturedMessages(g, after.tag, (ms) => ms.filter((m) => m.opcode === 'text').length === 40);
  for (const m of calm.messages.filter((x) => x.opcode === 'text')) {
    assert.equal(m.error, undefined);
    assert.match(String(await payloadOf(g, m)), /^calm \d+$/);
  }
});

test('a slow reader does not make the proxy buffer the download', async () => {
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const t = await connectTunnel(g.httpProxy, 'bulk.test:443');
  const s = tls.connect({ socket: t, servername: 'bulk.test', ca });
  await new Promise((r) => s.once('secureConnect', r));
  const rss0 = process.memoryUsage().rss;
  s.write('GET / HTTP/1.1\r\nHost: bulk.test\r\n\r\n');
  let got = 0;
  s.on('data', (d) => { got += d.length; });
  s.pause(); // the reader stalls: the origin keeps trying to send 256 MiB
  await new Promise((r) => setTimeout(r, 1500));
  const stalled = process.memoryUsage().rss - rss0;
  assert.ok(stalled < 48 * 1024 * 1024, `memory grew by ${(stalled / 1048576).toFixed(0)} MiB while the reader stalled`);
  s.resume();
  await waitFor(() => got >= BULK, 'the whole download after resuming', 120_000);
  s.destroy();
});

test('requests pipelined to an origin that never answers are held within the capture memory bound: then capture of the connection stops (recorded, counted), forwarding goes on', async () => {
  // Each waiting exchange held ~1 KB uncounted: 60 MiB of 56-byte GETs grew greytap past 1 GiB,
  // and a longer flood ended in V8's out-of-memory abort, taking every connection with it.
  const dropped0 = await metric('greytap_capture_dropped_total', 'reason="queue_full"');
  silentGot = createHash('sha256');
  silentBytes = 0;
  const [host, port] = g.httpProxy.split(':');
  const c = net.connect(Number(port), host);
  await new Promise((r) => c.once('connect', r));
  const one = 'GET http://silent.test/x HTTP/1.1\r\nHost: silent.test\r\n\r\n';
  const N = 20_000; // ~1.1 MB of requests; --max-conn-capture-memory 1MiB holds ~900 waiting exchanges
  const sent = createHash('sha256');
  const block = Buffer.from(one.repeat(500));
  for (let i = 0; i < N / 500; i++) {
    sent.update(block);
    if (!c.write(block)) await new Promise((r) => c.once('drain', r));
  }
  await waitFor(() => silentBytes === N * one.length, 'every request at the origin');
  assert.equal(silentGot.digest('hex'), sent.digest('hex'), 'forwarded byte for byte');
  c.destroy();
  type Tx = { id: string; path: string; error?: string; errorDetail?: string; status?: number };
  const all: Tx[] = [];
  await waitFor(async () => {
    all.length = 0;
    for (let after: string | undefined; ;) {
      const page = await apiGet<{ items: Tx[]; next: string | null }>(g, `/api/transactions?host=silent.test&limit=1000${after ? `&after=${after}` : ''}`);
      all.push(...page.items);
      if (!page.next || !page.items.length) break;
      after = page.next;
    }
    return all.some((t) => t.error === 'queue_full' && /capture of the connection stopped/.test(t.errorDetail ?? ''));
  }, 'the records of the stopped capture', 30_000);
  assert.ok(all.length > 100 && all.length < 2000, `the waiting exchanges within the bound are recorded, the rest are not kept: ${all.length} records of ${N} requests`);
  assert.ok(all.every((t) => t.status === undefined && t.path === '/x'), 'no response; the path of each');
  const dropped = (await metric('greytap_capture_dropped_total', 'reason="queue_full"')) - dropped0;
  assert.ok(dropped >= all.length, `each counted as queue_full: ${dropped} for ${all.length} records`);
});

test('a request pipelined behind one the origin answers with a 101 is recorded, and the capture memory it held is given back', async () => {
  // The WebSocket tap took the connection over and the exchange waiting behind the upgrade was
  // never submitted: what it held against the bounds leaked, until bodies of other connections
  // were dropped as queue_full.
  const pad = 'x'.repeat(30_000);
  for (let i = 0; i < 5; i++) {
    const c = await connectSocks(g.socks, 'upgrade.test', 80);
    c.on('error', () => {});
    c.write(`GET /a HTTP/1.1\r\nHost: upgrade.test\r\n\r\nGET /b HTTP/1.1\r\nHost: upgrade.test\r\nX-Pad: ${pad}\r\n\r\n`);
    c.resume();
    c.end();
    await new Promise((r) => c.once('close', r));
  }
  await g.drain();
  const text = await (await fetch(g.api + '/metrics')).text();
  assert.match(text, /^greytap_capture_memory_bytes \d+$/m, 'the gauge is read');
  await waitFor(async () => (await metric('greytap_capture_memory_bytes', '')) === 0 || undefined, 'every byte of capture memory given back', 10_000)
    .catch(async () => assert.fail(`capture memory held: ${await metric('greytap_capture_memory_bytes', '')} bytes`));
  const page = await apiGet<{ items: { path: string; status?: number; error?: string; errorDetail?: string }[] }>(g, '/api/transactions?host=upgrade.test&limit=100');
  const behind = page.items.filter((t) => t.path === '/b');
  assert.equal(behind.length, 5, 'each request behind the upgrade recorded');
  assert.ok(behind.every((t) => t.status === undefined && t.error === 'truncated_stream' && /switched to WebSocket/.test(t.errorDetail ?? '')));
  assert.equal(page.items.filter((t) => t.path === '/a' && t.status === 101).length, 5);
});
