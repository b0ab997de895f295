// The metrics against real traffic through a real greytap: bytes_forwarded_total equals what each
// side sent (raw tunnels, plain HTTP, intercepted HTTPS, WebSocket over TLS, both listeners), record
// and lag counts equal what was committed, drops and decode errors equal the records marked so,
// failing connections leave connections_active at 0, and forward_latency_seconds is observed on
// every path. The registry is this process's: every check is a difference between two scrapes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import zlib from 'node:zlib';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, connectTunnel, connectSocks, type Greytap } from '../helpers/harness.js';
import { startWsOrigin } from '../ws/ws-helpers.js';
import WebSocket from 'ws';

const pki = makeTestPki();
let g: Greytap;
let servers: net.Server[] = [];
/** bytes each origin read and wrote (plaintext for the TLS ones) */
const seen = { raw: { in: 0, out: 0 }, plain: { in: 0, out: 0 }, api: { in: 0, out: 0 } };
let apiPort = 0, wsPort = 0;

type Scrape = Map<string, number>;

async function scrape(gt: Greytap): Promise<Scrape> {
  const text = await (await fetch(gt.api + '/metrics')).text();
  const m: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

/** The sum of a metric's series whose labels include `labels`. */
function sum(m: Scrape, name: string, labels: Record<string, string> = {}): number {
  let n = 0;
  for (const [series, v] of m) {
    if (series !== name && !series.startsWith(name + '{')) continue;
    if (Object.entries(labels).every(([l, x]) => series.includes(`${l}="${x}"`))) n += v;
  }
  return n;
}

/** What a metric grew by between two scrapes. */
const grew = (m0: Scrape, m1: Scrape, name: string, labels: Record<string, string> = {}) => sum(m1, name, labels) - sum(m0, name, labels);
const forwarded = (m0: Scrape, m1: Scrape) => [grew(m0, m1, 'greytap_bytes_forwarded_total', { direction: 'up' }), grew(m0, m1, 'greytap_bytes_forwarded_total', { direction: 'down' })];

const listen = (s: net.Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
const active = async (gt: Greytap) => sum(await scrape(gt), 'greytap_connections_active');
const closed = (s: net.Socket) => new Promise<void>((r) => (s.closed ? r() : s.once('close', () => r())));
const allClosed = (gt: Greytap) => waitFor(async () => (await active(gt)) === 0, 'connections_active back to 0', 10_000);
/** No connection open, every capture committed: a scrape now is not disturbed by what came before. */
async function settled(gt: Greytap): Promise<void> {
  await allClosed(gt);
  await gt.drain();
}

before(async () => {
  const raw = net.createServer((s) => {
    s.on('error', () => {});
    s.on('data', (d) => { seen.raw.in += d.length; seen.raw.out += d.length; s.write(d); });
    s.on('end', () => s.end());
  });
  const plain = net.createServer((s) => {
    s.on('error', () => {});
    s.on('data', (d) => {
      seen.plain.in += d.length;
      if (!d.includes('\r\n\r\n')) return;
      const body = 'hello plain '.repeat(100);
      const resp = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
      seen.plain.out += Buffer.byteLength(resp);
      s.end(resp);
    });
  });
  // HTTP/1.1 by hand, so what it read and wrote is known to the byte
  const api = tls.createServer(pki.serverContext(['api.test']), (s) => {
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      seen.api.in += d.length;
      buf += d.toString('latin1');
      for (let end; (end = buf.indexOf('\r\n\r\n')) >= 0; buf = buf.slice(end + 4)) {
        const path = buf.slice(0, end).split(' ')[1];
        let resp: Buffer;
        if (path === '/gzip-bad') resp = Buffer.from('HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!');
        else if (path === '/gzip') {
          const z = zlib.gzipSync('x'.repeat(5000));
          resp = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: ${z.length}\r\n\r\n`), z]);
        } else resp = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n${'y'.repeat(30000)}`);
        seen.api.out += resp.length;
        s.write(resp);
      }
    });
  });
  const sse = https.createServer(pki.serverContext(['sse.test']), (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    let i = 0;
    const t = setInterval(() => { res.write(`data: {"n":${i}}\n\n`); if (++i === 40) { clearInterval(t); res.end(); } }, 2);
  });
  const silent = net.createServer((s) => s.on('error', () => {})); // accepts, never answers a ClientHello
  const o = await startWsOrigin(pki);
  servers = [raw, plain, api, sse, silent, o.server];
  const [rawPort, plainPort, aPort, ssePort, silentPort] = await Promise.all([listen(raw), listen(plain), listen(api), listen(sse), listen(silent)]);
  apiPort = aPort;
  wsPort = o.port;
  g = await startGreytap([
    '--upstream-ca', pki.caPath,
    '--map', `raw.test:9000=127.0.0.1:${rawPort}`,
    '--map', `plain.test:80=127.0.0.1:${plainPort}`,
    '--map', `api.test:443=127.0.0.1:${apiPort}`,
    '--map', `nocert.test:443=127.0.0.1:${apiPort}`,
    '--map', `sse.test:443=127.0.0.1:${ssePort}`,
    '--map', `ws.test:443=127.0.0.1:${wsPort}`,
    '--map', `dead.test:443=127.0.0.1:1`,
    '--map', `silent.test:443=127.0.0.1:${silentPort}`,
  ]);
});
after(async () => {
  await g?.stop();
  for (const s of servers) { (s as Partial<https.Server>).closeAllConnections?.(); s.close(); }
});

/** A TLS connection to `host` through either listener, trusting greytap's CA. */
async function tlsVia(gt: Greytap, via: 'http' | 'socks', host: string): Promise<tls.TLSSocket> {
  const raw = via === 'http' ? await connectTunnel(gt.httpProxy, `${host}:443`) : await connectSocks(gt.socks, host, 443);
  const s = tls.connect({ socket: raw, servername: host, ca: await (await fetch(gt.api + '/ca.pem')).text() });
  await new Promise((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject); });
  return s;
}

/** Short raw tunnels (not HTTP, not TLS) through both listeners to an echo origin: bytes each way. */
async function rawTunnels(n: number): Promise<{ sent: number; got: number }> {
  let sent = 0, got = 0;
  for (let i = 0; i < n; i++) {
    const s = i % 2 ? await connectTunnel(g.httpProxy, 'raw.test:9000') : await connectSocks(g.socks, 'raw.test', 9000);
    s.on('data', (d) => (got += d.length));
    const data = Buffer.alloc(i === 0 ? 300_000 : 100, 0); // one big enough to be several chunks
    sent += data.length;
    s.end(data);
    await closed(s);
  }
  return { sent, got };
}

/** Plain HTTP requests in absolute form, one connection each. */
async function plainRequests(n: number): Promise<{ sent: number; got: number }> {
  const [h, p] = g.httpProxy.split(':');
  let sent = 0, got = 0;
  for (let i = 0; i < n; i++) {
    const s = net.connect(Number(p), h);
    const req = `GET http://plain.test/x${i} HTTP/1.1\r\nHost: plain.test\r\n\r\n`;
    sent += req.length;
    s.write(req);
    s.on('data', (d) => (got += d.length));
    await closed(s);
  }
  return { sent, got };
}

/** A WebSocket over TLS through the CONNECT listener: `n` text messages, each echoed before the next, then a close. Counts the client's plaintext bytes. */
async function wsExchange(gt: Greytap, n: number, size = 10): Promise<{ sent: number; got: number }> {
  const sock = await tlsVia(gt, 'http', 'ws.test');
  let sent = 0, got = 0;
  const write = sock.write.bind(sock) as (...a: unknown[]) => boolean;
  (sock as unknown as { write: (...a: unknown[]) => boolean }).write = (d: unknown, ...rest: unknown[]) => {
    sent += Buffer.byteLength(d as Buffer);
    return write(d, ...rest);
  };
  sock.on('data', (d: Buffer) => (got += d.length));
  const ws = new WebSocket('wss://ws.test/plain', { createConnection: () => sock, perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  const echoes: (() => void)[] = [];
  ws.on('message', () => echoes.shift()?.());
  // one at a time, as an agent's turns go (and so each is a chunk of its own)
  for (let i = 0; i < n; i++) {
    const echoed = new Promise<void>((r) => echoes.push(r));
    ws.send(`message ${i} `.padEnd(size, '.'));
    await echoed;
  }
  ws.close(1000);
  await new Promise((r) => ws.once('close', r));
  await closed(sock);
  return { sent, got };
}

test('bytes_forwarded_total: a raw tunnel through each listener counts what the client and the echo origin sent', async () => {
  await settled(g);
  const m0 = await scrape(g);
  seen.raw.in = seen.raw.out = 0;
  const c = await rawTunnels(2);
  await allClosed(g);
  assert.deepEqual([c.sent, c.got], [seen.raw.in, seen.raw.out], 'the echo came back whole');
  assert.deepEqual(forwarded(m0, await scrape(g)), [seen.raw.in, seen.raw.out]);
});

test('bytes_forwarded_total: plain HTTP through the proxy counts what reached the origin and what it answered', async () => {
  await settled(g);
  const m0 = await scrape(g);
  seen.plain.in = seen.plain.out = 0;
  const c = await plainRequests(5);
  await allClosed(g);
  assert.deepEqual([c.sent, c.got], [seen.plain.in, seen.plain.out]);
  assert.deepEqual(forwarded(m0, await scrape(g)), [seen.plain.in, seen.plain.out]);
});

test('intercepted HTTPS through each listener: plaintext bytes each way, one record and one lag sample per exchange, decode errors as recorded', async () => {
  await settled(g);
  const m0 = await scrape(g);
  seen.api.in = seen.api.out = 0;
  let sent = 0, got = 0;
  const paths = ['/a', '/gzip', '/gzip-bad', '/b'];
  for (const via of ['http', 'socks'] as const) {
    const s = await tlsVia(g, via, 'api.test');
    s.on('data', (d) => (got += d.length));
    const reqs = paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: api.test\r\n\r\n`).join('');
    sent += reqs.length;
    s.write(reqs);
    await waitFor(() => got === seen.api.out && seen.api.in === sent, 'the answers');
    s.end();
    await closed(s);
  }
  await allClosed(g);
  await g.drain();
  const m1 = await scrape(g);
  assert.deepEqual([sent, got], [seen.api.in, seen.api.out]);
  assert.deepEqual(forwarded(m0, m1), [seen.api.in, seen.api.out]);
  const recs = (await apiGet(g, '/api/transactions?kind=HTTP&host=api.test&limit=100')).items;
  assert.equal(recs.length, 8);
  assert.equal(grew(m0, m1, 'greytap_store_records_total', { kind: 'HTTP' }), 8);
  assert.equal(grew(m0, m1, 'greytap_store_records_total', { kind: 'CONN' }), 2);
  assert.equal(grew(m0, m1, 'greytap_http_transactions_total'), 8);
  assert.equal(grew(m0, m1, 'greytap_capture_lag_seconds_count'), 8, 'a lag sample per committed record');
  assert.equal(grew(m0, m1, 'greytap_decode_errors_total'), recs.filter((r: any) => r.error === 'decode_failed').length);
  assert.equal(grew(m0, m1, 'greytap_decode_errors_total', { kind: 'decode_failed' }), 2);
  assert.deepEqual([grew(m0, m1, 'greytap_tls_handshakes_total', { side: 'client', result: 'ok' }), grew(m0, m1, 'greytap_tls_handshakes_total', { side: 'upstream', result: 'ok' })], [2, 2]);
});

test('a WebSocket over TLS: plaintext bytes each way, a ws_messages_total and a record per message, a lag sample per record', async () => {
  await settled(g);
  const m0 = await scrape(g);
  const c = await wsExchange(g, 10);
  await allClosed(g);
  await g.drain();
  const m1 = await scrape(g);
  assert.deepEqual(forwarded(m0, m1), [c.sent, c.got]);
  assert.deepEqual([grew(m0, m1, 'greytap_ws_messages_total', { direction: 'client', opcode: 'text' }), grew(m0, m1, 'greytap_ws_messages_total', { direction: 'server', opcode: 'text' }), grew(m0, m1, 'greytap_ws_messages_total', { opcode: 'close' })], [10, 10, 2]);
  const records = ['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL'].map((kind) => grew(m0, m1, 'greytap_store_records_total', { kind }));
  assert.deepEqual(records, [1, 10, 10, 2]);
  assert.equal(grew(m0, m1, 'greytap_capture_lag_seconds_count'), 23);
});

test('forward_latency_seconds is observed on short connections of every path: plain HTTP, raw tunnels, WebSocket, SSE', async () => {
  const observed = async (what: string, traffic: () => Promise<unknown>) => {
    await settled(g);
  const m0 = await scrape(g);
    await traffic();
    await allClosed(g);
    return [what, grew(m0, await scrape(g), 'greytap_forward_latency_seconds_count') > 0];
  };
  const sse = async () => {
    const s = await tlsVia(g, 'http', 'sse.test');
    s.resume();
    s.write('GET /sse HTTP/1.1\r\nHost: sse.test\r\nConnection: close\r\n\r\n');
    await closed(s);
  };
  // each of these is 40 or more chunks in all, a few per connection
  const results = [
    await observed('plain HTTP, 20 connections', () => plainRequests(20)),
    await observed('raw tunnels, 20 connections', () => rawTunnels(20)),
    await observed('a WebSocket, 20 messages each way', () => wsExchange(g, 20)),
    await observed('an SSE stream of 40 events', sse),
  ];
  assert.deepEqual(results, results.map(([what]) => [what, true]));
});

test('failing connections (dead upstream, client and upstream TLS failures, a SOCKS refusal, a client reset) leave connections_active at 0 and are counted by listener and error', async () => {
  await settled(g);
  const m0 = await scrape(g);
  await assert.rejects(connectTunnel(g.httpProxy, 'dead.test:443'));
  await assert.rejects(connectSocks(g.socks, 'dead.test', 443));
  // a client that does not trust greytap's CA
  const untrusting = tls.connect({ socket: await connectTunnel(g.httpProxy, 'api.test:443'), servername: 'api.test' });
  await new Promise((r) => untrusting.once('error', r));
  untrusting.destroy();
  // an origin whose certificate does not cover the name: the client gets a 502
  const nocert = await tlsVia(g, 'http', 'nocert.test');
  nocert.resume();
  await closed(nocert);
  // SOCKS5 BIND: refused
  const [h, p] = g.socks.split(':');
  const bind = net.connect(Number(p), h, () => bind.write(Buffer.from([5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])));
  bind.on('error', () => {});
  bind.resume();
  await closed(bind);
  // a client reset in the middle of a response
  const raw = await connectSocks(g.socks, 'api.test', 443);
  const reset = tls.connect({ socket: raw, servername: 'api.test', ca: await (await fetch(g.api + '/ca.pem')).text() });
  await new Promise((r) => reset.once('secureConnect', r));
  reset.write('GET /a HTTP/1.1\r\nHost: api.test\r\n\r\n');
  await new Promise((r) => reset.once('data', r));
  raw.resetAndDestroy();
  reset.destroy();
  await allClosed(g);
  const m1 = await scrape(g);
  const errors = Object.fromEntries([...m1.keys()].filter((k) => k.startsWith('greytap_connection_errors_total{')).map((k) => [k, (m1.get(k) ?? 0) - (m0.get(k) ?? 0)]).filter(([, v]) => v));
  assert.deepEqual(errors, {
    'greytap_connection_errors_total{listener="http",error="upstream_unreachable"}': 1,
    'greytap_connection_errors_total{listener="socks",error="upstream_unreachable"}': 1,
    'greytap_connection_errors_total{listener="http",error="client_tls"}': 1,
    'greytap_connection_errors_total{listener="http",error="upstream_tls"}': 1,
    'greytap_connection_errors_total{listener="socks",error="bad_socks"}': 1,
  });
  assert.equal(grew(m0, m1, 'greytap_connections_total'), 6);
});

test('a client that gives up on its TLS handshake while the origin\'s is still running is a client TLS failure, not an upstream one', async () => {
  await settled(g);
  const m0 = await scrape(g);
  for (const how of ['rejects the certificate', 'closes']) {
    const raw = await connectTunnel(g.httpProxy, 'silent.test:443');
    const s = tls.connect({ socket: raw, servername: 'silent.test', ...(how === 'closes' ? { ca: await (await fetch(g.api + '/ca.pem')).text() } : {}) });
    s.on('error', () => {});
    if (how === 'closes') {
      await new Promise((r) => s.once('secureConnect', r));
      await new Promise((r) => setTimeout(r, 100)); // greytap's side of it done too; the origin's never will be
      s.end();
    } else await new Promise((r) => s.once('error', r));
    await closed(s);
  }
  await allClosed(g);
  const m1 = await scrape(g);
  const handshakes = (side: string, result: string) => grew(m0, m1, 'greytap_tls_handshakes_total', { side, result });
  assert.deepEqual({ client: [handshakes('client', 'ok'), handshakes('client', 'error')], upstream: [handshakes('upstream', 'ok'), handshakes('upstream', 'error')] },
    { client: [1, 1], upstream: [0, 0] }, 'the origin never failed: its handshakes were abandoned');
  assert.equal(grew(m0, m1, 'greytap_connection_errors_total', { error: 'upstream_tls' }), 0);
});

/** Every record of a kind, page by page. */
/** `n` GETs pipelined on one intercepted connection to api.test (each answered with 30,000 bytes); resolves once every answer arrived and the connection closed. */
async function pipelinedAnswers(gt: Greytap, n: number): Promise<void> {
  const s = await tlsVia(gt, 'http', 'api.test');
  let got = 0;
  s.on('data', (d) => (got += d.length));
  s.write(Array.from({ length: n }, (_, i) => `GET /r${i} HTTP/1.1\r\nHost: api.test\r\n\r\n`).join(''));
  await waitFor(() => got >= n * 30_000, 'the answers');
  s.end();
  await closed(s);
}

async function allRecords(gt: Greytap, kind: string): Promise<any[]> {
  const out: any[] = [];
  for (let after: string | null = null; ;) {
    const page: any = await apiGet(gt, `/api/transactions?kind=${kind}&limit=1000${after ? `&after=${after}` : ''}`);
    out.push(...page.items);
    if (!page.next) return out;
    after = page.next;
  }
}

test('under a tiny capture budget and --max-body: capture_dropped_total by reason equals the records marked so, plus the messages dropped whole', async () => {
  const g2 = await startGreytap(['--upstream-ca', pki.caPath, '--map', `api.test:443=127.0.0.1:${apiPort}`, '--map', `ws.test:443=127.0.0.1:${wsPort}`,
    '--max-capture-memory', '64KiB', '--max-conn-capture-memory', '64KiB', '--max-body', '20KiB']);
  try {
    await settled(g); // the registry is shared: g's late commits would count here
    const m0 = await scrape(g2);
    // 40 pipelined requests, 30,000-byte answers: over --max-body, and over the budget together
    await pipelinedAnswers(g2, 40);
    await wsExchange(g2, 300, 16 << 10);
    await allClosed(g2);
    await g2.drain();
    const m1 = await scrape(g2);
    const recs = (await Promise.all(['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL'].map((k) => allRecords(g2, k)))).flat();
    const marked = (reason: string) => recs.filter((r) => r.error === reason).length;
    const wsMessages = grew(m0, m1, 'greytap_ws_messages_total');
    const wsRecords = recs.filter((r) => r.kind !== 'HTTP').length;
    assert.ok(marked('queue_full') > 0 && marked('too_large') > 0, 'both kinds of drop happened');
    assert.equal(grew(m0, m1, 'greytap_capture_dropped_total', { reason: 'queue_full' }), marked('queue_full') + (wsMessages - wsRecords));
    assert.equal(grew(m0, m1, 'greytap_capture_dropped_total', { reason: 'too_large' }), marked('too_large'));
    for (const kind of ['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL']) {
      assert.equal(grew(m0, m1, 'greytap_store_records_total', { kind }), recs.filter((r) => r.kind === kind).length, kind);
    }
    assert.equal(grew(m0, m1, 'greytap_capture_lag_seconds_count'), recs.length);
  } finally { await g2.stop(); }
});

test('--retention SIZE on /metrics: the bound, live data over it and back under it after a size sweep, the sweep and what it removed, matching what the API still lists', async () => {
  const bound = 1 << 20;
  const g3 = await startGreytap(['--upstream-ca', pki.caPath, '--map', `api.test:443=127.0.0.1:${apiPort}`, '--retention', '1MiB']);
  try {
    await settled(g); // the registry is shared: g's late commits would count here
    const m0 = await scrape(g3);
    assert.equal(sum(m0, 'greytap_retention_max_bytes'), bound);
    assert.equal(sum(m0, 'greytap_retention_max_age_seconds'), 0);
    // 120 answers of 30,000 bytes, each stored with its body: ~3.5× the bound
    await pipelinedAnswers(g3, 120);
    await allClosed(g3);
    await g3.drain();
    // the size is checked every 5 s: the first scrape may come before or after a sweep
    const first = await scrape(g3);
    const t0 = performance.now();
    const removedBy = (m: Scrape) => grew(m0, m, 'greytap_retention_removed_total', { table: 'transactions' });
    const firstLive = sum(first, 'greytap_store_live_bytes');
    const m1 = await waitFor(async () => {
      const m = await scrape(g3);
      return removedBy(m) > 0 ? m : null;
    }, 'a size sweep', 20_000);
    // (a scrape in a sweep's last moments sees live data back under the bound before the sweep is counted)
    if (removedBy(first) === 0) assert.ok(firstLive > bound || performance.now() - t0 < 1000, `live data over the bound before a sweep: ${firstLive}`);
    const live = sum(m1, 'greytap_store_live_bytes');
    assert.ok(live > 0 && live <= bound, `live data back under the bound: ${live}`);
    assert.ok(sum(m1, 'greytap_store_bytes') >= live, 'the file holds the live data');
    assert.ok(grew(m0, m1, 'greytap_retention_sweeps_total', { bound: 'size', result: 'ok' }) >= 1);
    assert.ok(grew(m0, m1, 'greytap_retention_sweep_seconds_count', { bound: 'size' }) >= 1);
    assert.equal(grew(m0, m1, 'greytap_retention_sweeps_total', { result: 'error' }), 0);
    assert.equal(grew(m0, m1, 'greytap_retention_sweeps_total', { bound: 'age' }), 0, 'no age bound, no age sweep');
    const left = (await allRecords(g3, 'HTTP')).length;
    assert.ok(left > 0 && left < 120, `${left} of 120 exchanges left`);
    assert.equal(grew(m0, m1, 'greytap_store_records_total', { kind: 'HTTP' }) - grew(m0, m1, 'greytap_retention_removed_total', { table: 'transactions' }), left,
      'committed less removed is what the API lists');
  } finally { await g3.stop(); }
});
