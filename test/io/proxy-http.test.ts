// Issue 2 end to end: real curl / Node clients through both listeners, real TLS origins trusted via
// --upstream-ca, real LMDB. Proves byte-exact forwarding, streaming without buffering, bounded
// memory on a 100 MiB body, captured HTTP records, and clear failures on bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import tls from 'node:tls';
import net from 'node:net';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, connectTunnel, curl, tmpDir, type Greytap } from '../helpers/harness.js';
import { captureBuffers } from '../../src/io/capture-buffer.js';

const pki = makeTestPki();
let g: Greytap;
let origin: https.Server;
let plain: http.Server;
let raw: tls.Server; // records exactly what it receives, answers a scripted byte string
let rawReceived: Buffer[] = [];
const rawSockets = new Set<tls.TLSSocket>();
let rawReply = Buffer.alloc(0);
let sseGate: (() => void) | undefined;
let odd: net.Server; // plain TCP origin with HTTP that clients accept and greytap's tap does not follow
let oddEchoed: Buffer[] = []; // what odd.test received (and echoed) after switching to h2c
let originPort = 0, plainPort = 0, rawPort = 0, oddPort = 0;
const BIG = 100 * 1024 * 1024;

/** n bytes of letters that differ by seed everywhere (so a stale byte from another body shows). */
function blob(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = 97 + ((i + seed * 7) % 26);
  return b;
}

function listen(s: net.Server): Promise<number> {
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
}

before(async () => {
  origin = https.createServer(pki.serverContext(['api.test', 'sse.test', 'big.test']), (req, res) => {
    if (req.url === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('event: delta\ndata: {"n":1}\n\n');
      sseGate = () => { res.write('event: delta\ndata: {"n":2}\n\n'); res.end('event: done\ndata: [DONE]\n\n'); };
      return;
    }
    if (req.url?.startsWith('/blob?')) {
      const u = new URL(req.url, 'https://x');
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': u.searchParams.get('n')! });
      return void res.end(blob(Number(u.searchParams.get('n')), Number(u.searchParams.get('seed'))));
    }
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BIG) });
      const chunk = Buffer.alloc(1 << 20, 0x61);
      let sent = 0;
      const pump = () => { while (sent < BIG) { sent += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump); } res.end(); };
      return pump();
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo-auth': String(req.headers.authorization ?? '') });
      res.end(JSON.stringify({ method: req.method, url: req.url, body }));
    });
  });
  plain = http.createServer((req, res) => res.end(`plain ${req.method} ${req.url}`));
  raw = tls.createServer(pki.serverContext(['raw.test']), (s) => {
    rawSockets.add(s);
    s.on('close', () => rawSockets.delete(s));
    s.on('data', (d) => {
      rawReceived.push(Buffer.from(d));
      if (Buffer.concat(rawReceived).includes('X-Trailer: t\r\n\r\n')) s.write(rawReply);
    });
  });
  odd = net.createServer((s) => {
    let pending = '';
    let switched = false;
    s.on('error', () => {});
    s.on('data', (d) => {
      // after its 101 it echoes: a client byte that comes back reached this origin
      if (switched) { oddEchoed.push(Buffer.from(d)); s.write(d); return; }
      pending += d.toString('latin1');
      for (let end; (end = pending.indexOf('\r\n\r\n')) >= 0; pending = pending.slice(end + 4)) {
        const line = pending.slice(0, pending.indexOf('\r\n'));
        if (/^GET \S*\/short /.test(line)) {
          s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this'); // then the close: cut short
          return;
        }
        if (/^GET \S*\/h2c\S* /.test(line)) {
          // an h2c upgrade, then an HTTP/2 SETTINGS frame: not WebSocket
          s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
          s.write(Buffer.from('000000040000000000', 'hex'));
          switched = true;
          return;
        }
        // a folded header line (obs-fold): RFC 9112 §5.2 has user agents accept it
        const body = `odd answered: ${line}`;
        s.write(`HTTP/1.1 200 OK\r\nX-Folded: one\r\n two\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      }
    });
  });
  [originPort, plainPort, rawPort, oddPort] = await Promise.all([listen(origin), listen(plain), listen(raw), listen(odd)]);
  g = await startGreytap([
    '--upstream-ca', pki.caPath,
    '--map', `api.test:443=127.0.0.1:${originPort}`,
    '--map', `sse.test:443=127.0.0.1:${originPort}`,
    '--map', `big.test:443=127.0.0.1:${originPort}`,
    '--map', `raw.test:443=127.0.0.1:${rawPort}`,
    '--map', `plain.test:80=127.0.0.1:${plainPort}`,
    '--map', `odd.test:80=127.0.0.1:${oddPort}`,
    '--map', `nocert.test:443=127.0.0.1:${originPort}`,
    '--map', `dead.test:443=127.0.0.1:1`,
  ]);
});

after(async () => {
  await g?.stop();
  for (const s of rawSockets) s.destroy();
  for (const srv of [origin, plain]) { srv?.closeAllConnections(); srv?.close(); }
  raw?.close();
  odd?.close();
});

async function httpRecords(host: string): Promise<any[]> {
  await g.drain();
  return (await apiGet(g, `/api/transactions?kind=HTTP&host=${host}&limit=1000`)).items;
}

test('curl through the HTTP proxy: TLS intercepted, response intact, transaction captured with redacted credentials', async () => {
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, '-H', 'Authorization: Bearer sk-secret-123', '-d', '{"q":1}', 'https://api.test/v1/echo?x=1&key=AIza-secret']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { method: 'POST', url: '/v1/echo?x=1&key=AIza-secret', body: '{"q":1}' }, 'forwarded untouched');
  const [tx] = await waitFor(async () => (await httpRecords('api.test')).filter((t) => t.path === '/v1/echo?x=1&key=[REDACTED]'), 'HTTP record, its query key redacted');
  assert.equal(tx.method, 'POST');
  assert.equal(tx.status, 200);
  assert.equal(tx.scheme, 'https');
  const full = await apiGet(g, `/api/transactions/${tx.id}`);
  assert.equal(full.reqBody, '{"q":1}');
  assert.equal(JSON.parse(full.respBody).url, '/v1/echo?x=1&key=AIza-secret', 'bodies keep their content');
  const auth = full.reqHeaders.find(([n]: [string]) => n === 'Authorization');
  assert.ok(auth && !auth[1].includes('sk-secret-123'), `Authorization must be redacted, got ${auth}`);
  const conn = await apiGet(g, `/api/connections/${tx.conn}`);
  assert.equal(conn.listener, 'http');
  assert.equal(conn.intercepted, true);
  assert.equal(conn.sni, 'api.test');
  assert.equal(conn.alpn, 'http/1.1');
});

test('curl through SOCKS5 (remote DNS): intercepted and captured, listener recorded', async () => {
  const r = await curl(['--socks5-hostname', g.socks, '--cacert', g.caPath, 'https://api.test/socks-path']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).url, '/socks-path');
  const [tx] = await waitFor(async () => (await httpRecords('api.test')).filter((t) => t.path === '/socks-path'), 'SOCKS record');
  const conn = await apiGet(g, `/api/connections/${tx.conn}`);
  assert.equal(conn.listener, 'socks');
  assert.equal(conn.host, 'api.test');
});

test('plain absolute-URI request through the HTTP proxy is forwarded and captured', async () => {
  const r = await curl(['-x', `http://${g.httpProxy}`, 'http://plain.test/hello?a=b']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'plain GET http://plain.test/hello?a=b');
  const [tx] = await waitFor(async () => (await httpRecords('plain.test')).filter((t) => t.path === '/hello?a=b'), 'plain record');
  assert.equal(tx.scheme, 'http');
  assert.equal(tx.status, 200);
});

test('byte-exact both ways: odd header case, chunked with extensions and trailers, pipelined requests', async () => {
  rawReceived = [];
  const request = Buffer.from(
    'POST /one HTTP/1.1\r\nHost: raw.test\r\nX-MiXeD-CaSe:  spaced value \r\nTransfer-Encoding: chunked\r\n\r\n' +
    '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n' +
    'GET /two HTTP/1.1\r\nHost: raw.test\r\n\r\n',
  );
  // the origin answers after the first request's last chunk: two pipelined responses in one write
  rawReply = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Reply: A\r\n\r\nokHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
  const t = await connectTunnel(g.httpProxy, 'raw.test:443');
  const s = tls.connect({ socket: t, servername: 'raw.test', ca: await (await fetch(g.api + '/ca.pem')).text() });
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  await new Promise((r) => s.once('secureConnect', r));
  // split the request at awkward places, as a slow client would
  for (const cut of [[0, 7], [7, 60], [60, 101], [101, request.length]]) {
    s.write(request.subarray(cut[0], cut[1]));
    await new Promise((r) => setTimeout(r, 10));
  }
  await waitFor(() => Buffer.concat(got).length >= rawReply.length, 'pipelined responses');
  s.end();
  assert.deepEqual(Buffer.concat(got), rawReply, 'client received exactly what the origin sent');
  assert.deepEqual(Buffer.concat(rawReceived), request, 'origin received exactly what the client sent');
  const txs = await waitFor(async () => { const l = await httpRecords('raw.test'); return l.length >= 2 && l; }, 'two records');
  const one = await apiGet(g, `/api/transactions/${txs.find((x: any) => x.path === '/one').id}`);
  assert.equal(one.reqBody, 'hello world', 'chunk framing removed from the stored body');
  assert.deepEqual(one.reqHeaders[1], ['X-MiXeD-CaSe', 'spaced value']);
  assert.equal(one.status, 200);
  assert.equal(one.respBody, 'ok');
  assert.equal(txs.find((x: any) => x.path === '/two').status, 404);
});

test('SSE streams through without buffering: the client sees the first event before the response ends', async () => {
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const t = await connectTunnel(g.httpProxy, 'sse.test:443');
  const events: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const req = https.request({ host: 'sse.test', path: '/sse', createConnection: () => tls.connect({ socket: t, servername: 'sse.test', ca }) }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        events.push(d);
        if (events.length === 1) { assert.match(d, /"n":1/); sseGate!(); }
      });
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
  assert.match(events.join(''), /\[DONE\]/);
  const [tx] = await waitFor(async () => (await httpRecords('sse.test')), 'SSE record');
  const full = await apiGet(g, `/api/transactions/${tx.id}`);
  assert.deepEqual(full.respEvents.map((e: any) => e.event), ['delta', 'delta', 'done']);
});

test('100 MiB response streams through with bounded memory; capture is truncated at --max-body and flagged', async () => {
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, '-o', '/dev/null', '-w', '%{size_download}', 'https://big.test/big'], 120_000);
  clearInterval(timer);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(Number(r.stdout), BIG);
  // origin, proxy and capture share this process: 100 MiB must not be held at once
  assert.ok(peak - rss0 < 80 * 1024 * 1024, `RSS grew by ${((peak - rss0) / 1048576).toFixed(0)} MiB`);
  const [tx] = await waitFor(async () => (await httpRecords('big.test')), 'big record');
  assert.equal(tx.truncated, true);
  assert.equal(tx.error, 'too_large');
  assert.equal(tx.respBytes > BIG, true);
});

test('big bodies captured into reused buffers stay exact: consecutive multi-MiB responses on one connection', async () => {
  const sizes = [3 << 20, (2 << 20) + 12345, 3 << 20, (3 << 20) - 7];
  const urls = sizes.map((n, i) => `https://big.test/blob?n=${n}&seed=${i + 1}`);
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, ...urls.flatMap((u) => ['-o', '/dev/null', u])], 60_000);
  assert.equal(r.code, 0, r.stderr);
  await g.drain();
  // the body buffers came back from the worker once committed, ready for the next capture
  assert.ok(captureBuffers.idleByteLength >= 2 << 20, `idle capture buffers: ${captureBuffers.idleByteLength}`);
  const items = (await httpRecords('big.test')).filter((t) => t.path.startsWith('/blob?'));
  assert.equal(items.length, sizes.length);
  for (const meta of items) {
    const u = new URL(meta.path, 'https://x');
    const full = await apiGet(g, `/api/transactions/${meta.id}`);
    assert.equal(full.respBody, blob(Number(u.searchParams.get('n')), Number(u.searchParams.get('seed'))).toString(), `body of ${meta.path}`);
  }
});

test('client that closes early and dead upstreams: clear errors, proxy keeps serving', async () => {
  // client aborts mid-response
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const t = await connectTunnel(g.httpProxy, 'big.test:443');
  const s = tls.connect({ socket: t, servername: 'big.test', ca });
  await new Promise((r) => s.once('secureConnect', r));
  s.write('GET /big HTTP/1.1\r\nHost: big.test\r\n\r\n');
  await new Promise<void>((r) => { let n = 0; s.on('data', (d) => { n += d.length; if (n > 1 << 20) { s.destroy(); r(); } }); });
  const unreachable = async () => Object.fromEntries([...(await (await fetch(g.api + '/metrics')).text())
    .matchAll(/^greytap_connection_errors_total\{listener="(\w+)",error="upstream_unreachable"\} (\d+)/gm)].map((m) => [m[1], Number(m[2])]));
  const before = await unreachable();
  // dead upstream via HTTP CONNECT → 502, via SOCKS5 → connection refused reply
  const r1 = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://dead.test/']);
  assert.notEqual(r1.code, 0);
  assert.match(r1.stderr, /502|CONNECT/i);
  const r2 = await curl(['--socks5-hostname', g.socks, '--cacert', g.caPath, 'https://dead.test/']);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, /refused|SOCKS/i);
  const after = await unreachable();
  assert.deepEqual([after.http - before.http, after.socks - before.socks], [1, 1], 'each dead upstream is counted, by listener');
  // still serving
  const ok = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://api.test/after']);
  assert.equal(ok.code, 0, ok.stderr);
  const aborted = await waitFor(async () => (await httpRecords('big.test')).find((x) => x.error === 'truncated_stream'), 'aborted record');
  assert.ok(aborted.respBytes > 0);
});

test('upstream certificate that does not match the name: the client gets a clean 502, not a hang', async () => {
  // nocert.test is mapped to an origin whose certificate does not cover that name
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://nocert.test/']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /greytap: TLS to nocert\.test:443 failed/);
  const metrics = await (await fetch(g.api + '/metrics')).text();
  const m = /greytap_tls_handshakes_total\{side="upstream",result="error"\} (\d+)/.exec(metrics);
  assert.ok(m && Number(m[1]) >= 1, 'the upstream verification failure is counted');
});

test('garbage on both listeners gets a clear error and does not disturb other connections', async () => {
  const send = (addr: string, bytes: Buffer) => new Promise<Buffer>((resolve) => {
    const [h, p] = addr.split(':');
    const s = net.connect(Number(p), h, () => s.end(bytes));
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('error', () => resolve(Buffer.concat(got)));
  });
  const http400 = await send(g.httpProxy, Buffer.from('\x00\x01garbage\r\n\r\n'));
  assert.match(http400.toString(), /^HTTP\/1\.1 400 /);
  const originForm = await send(g.httpProxy, Buffer.from('GET /not-absolute HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.match(originForm.toString(), /^HTTP\/1\.1 400 [\s\S]*absolute/);
  const socksBad = await send(g.socks, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  assert.match(socksBad.toString(), /^HTTP\/1\.1 400 [^]*SOCKS5 port/, 'SOCKS5 listener refuses a non-SOCKS greeting, in HTTP to an HTTP client');
  const ok = await curl(['--socks5-hostname', g.socks, '--cacert', g.caPath, 'https://api.test/still-ok']);
  assert.equal(ok.code, 0, ok.stderr);
});

test('no-intercept tunnels TLS raw: the client sees the origin certificate', async () => {
  const g2 = await startGreytap(['--upstream-ca', pki.caPath, '--map', `api.test:443=127.0.0.1:${originPort}`, '--no-intercept', '*.test']);
  try {
    const r = await curl(['-x', `http://${g2.httpProxy}`, '--cacert', pki.caPath, 'https://api.test/raw']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).url, '/raw');
    await g2.drain();
    const items = (await apiGet(g2, '/api/transactions?limit=100')).items;
    assert.equal(items.length, 0, 'nothing decoded from a raw tunnel');
  } finally { await g2.stop(); }
});

test('config: a CA file that is missing fails serve start with a clear reason', async () => {
  const dir = tmpDir();
  writeFileSync(join(dir, 'bad.pem'), 'not a certificate');
  await assert.rejects(startGreytap(['--upstream-ca', join(dir, 'bad.pem')]), /bad\.pem/);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * On a raw connection to the HTTP proxy: sends `first`, waits for its answer (`answered`), then
 * sends `second`. Resolves with what the client had when `second` went and all it got by the close.
 */
async function reuseProxyConnection(first: string, answered: string, second: string): Promise<{ before: number; after: number }> {
  const [h, p] = g.httpProxy.split(':');
  const s = net.connect(Number(p), h);
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.on('error', () => {});
  s.write(first);
  await waitFor(() => Buffer.concat(got).includes(answered), 'first response');
  const before = Buffer.concat(got).length;
  s.write(second);
  await closed;
  return { before, after: Buffer.concat(got).length };
}

async function refusedRecord(host: string, detail: RegExp): Promise<any> {
  const bad = await waitFor(async () => {
    for (const t of (await httpRecords(host)).filter((r) => r.error === 'bad_http')) {
      const full = await apiGet(g, `/api/transactions/${t.id}`);
      if (detail.test(full.errorDetail)) return full;
    }
    return undefined;
  }, `the refused request recorded (${detail})`);
  return bad;
}

test('a reused plain-HTTP proxy connection asking for another origin is closed, never answered by the bound one', async () => {
  const r = await reuseProxyConnection('GET http://plain.test/first HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'plain GET http://plain.test/first',
    'GET http://elsewhere.test/second HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n');
  assert.equal(r.after, r.before, 'nothing after the first response reached the client');
  await refusedRecord('plain.test', /elsewhere\.test:80 on a proxy connection bound to plain\.test:80/);
  // Another scheme in absolute-form names another origin too.
  const s = await reuseProxyConnection('GET http://plain.test/third HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'plain GET http://plain.test/third',
    'GET https://plain.test/fourth HTTP/1.1\r\nHost: plain.test\r\n\r\n');
  assert.equal(s.after, s.before, 'an https:// request on a plain connection is not answered by the http origin');
  await refusedRecord('plain.test', /request for https:\/\/plain\.test on a proxy connection bound to plain\.test:80/);
});

test('the origin check holds after a response greytap cannot parse (obs-fold), while the client reads it fine', async () => {
  const r = await reuseProxyConnection('GET http://odd.test/first HTTP/1.1\r\nHost: odd.test\r\n\r\n', 'odd answered: GET http://odd.test/first',
    'GET http://plain.test/second HTTP/1.1\r\nHost: plain.test\r\n\r\n');
  assert.equal(r.after, r.before, 'the second origin\'s request was not answered by the first');
  const first = await waitFor(async () => (await httpRecords('odd.test')).find((t) => t.path === '/first'), 'the folded exchange recorded');
  assert.equal(first.error, 'bad_http');
  await refusedRecord('odd.test', /plain\.test:80 on a proxy connection bound to odd\.test:80/);
});

test('request bytes behind an Upgrade request on a plain-HTTP proxy connection close it: they could only be checked too late', async () => {
  const [h, p] = g.httpProxy.split(':');
  const s = net.connect(Number(p), h);
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  // plain.test has no upgrade handler: it answers both; the second must never reach the client
  s.write('GET http://plain.test/up HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' +
    'GET http://elsewhere.test/behind HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n');
  await closed;
  assert.ok(!Buffer.concat(got).includes('/behind'), `the pipelined request was answered: ${Buffer.concat(got)}`);
  const up = await waitFor(async () => (await httpRecords('plain.test')).find((t) => t.path === '/up'), 'the Upgrade request recorded');
  assert.equal(up.error, 'truncated_stream');
  const conn = await waitFor(async () => { const c = await apiGet(g, `/api/connections/${up.conn}`); return c.endTs !== undefined && c; }, 'connection closed');
  assert.equal(conn.closeReason, 'unchecked_request');
  assert.equal(conn.error, 'bad_http', 'counted in connection_errors_total');
});

const H2C_UPGRADE = 'Host: odd.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n';
const H2_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

test('a 101 to another protocol (h2c) in a tunnel is relayed raw, not decoded as WebSocket', async () => {
  const badFrames = async () => Number(/greytap_decode_errors_total\{kind="bad_frame"\} (\d+)/.exec(await (await fetch(g.api + '/metrics')).text())?.[1] ?? 0);
  const before = await badFrames();
  const s = await connectTunnel(g.httpProxy, 'odd.test:80'); // the client chose the origin: not bound
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  s.on('error', () => {});
  s.write(`GET /h2c HTTP/1.1\r\n${H2C_UPGRADE}`);
  await waitFor(() => Buffer.concat(got).length >= 80, 'the 101 and the SETTINGS frame');
  s.write(H2_PREFACE);
  await waitFor(() => Buffer.concat(got).includes(H2_PREFACE), 'the preface relayed to the origin and echoed back');
  s.destroy();
  const up = await waitFor(async () => (await httpRecords('odd.test')).find((t) => t.path === '/h2c'), 'the 101 recorded');
  assert.equal(up.status, 101);
  assert.equal(up.error, undefined);
  const conn = (await apiGet(g, `/api/transactions?host=odd.test&limit=100`)).items.filter((t: any) => t.conn === up.conn);
  assert.deepEqual(conn.map((t: any) => t.kind), ['HTTP'], 'no WebSocket records from HTTP/2 bytes');
  assert.equal(await badFrames(), before, 'no bad_frame counted');
});

test('a 101 to another protocol (h2c) on a plain-HTTP proxy connection closes it: no byte after it reaches the bound origin unchecked', async (t) => {
  const badHttpConns = async () => Number(/^greytap_connection_errors_total\{listener="http",error="bad_http"\} (\d+)/m.exec(await (await fetch(g.api + '/metrics')).text())?.[1]);
  const before = await badHttpConns();
  oddEchoed = [];
  const [h, p] = g.httpProxy.split(':');
  const s = net.connect(Number(p), h);
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  s.on('error', () => {});
  t.after(() => s.destroy());
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.write(`GET http://odd.test/h2c-bound HTTP/1.1\r\n${H2C_UPGRADE}`);
  await waitFor(() => Buffer.concat(got).includes('\r\n\r\n'), 'the 101');
  assert.match(Buffer.concat(got).toString('latin1'), /^HTTP\/1\.1 101 /, 'the 101 itself reaches the client, then the close');
  // HTTP/2 frames behind this preface could name any :authority: greytap cannot check them
  s.write(H2_PREFACE);
  const echoed = new Promise<void>((r) => s.on('data', () => { if (Buffer.concat(got).includes(H2_PREFACE)) r(); }));
  await Promise.race([closed, echoed]);
  assert.ok(!Buffer.concat(got).includes(H2_PREFACE), 'the bound origin answered bytes sent after the 101');
  await closed;
  assert.equal(Buffer.concat(oddEchoed).length, 0, 'the bound origin received bytes sent after the 101');
  const up = await waitFor(async () => (await httpRecords('odd.test')).find((t) => t.path === '/h2c-bound'), 'the 101 recorded');
  assert.equal(up.status, 101);
  assert.equal(up.error, 'bad_http');
  assert.match((await apiGet(g, `/api/transactions/${up.id}`)).errorDetail, /101 to h2c on a proxy connection bound to odd\.test:80/);
  const conn = await waitFor(async () => { const c = await apiGet(g, `/api/connections/${up.conn}`); return c.endTs !== undefined && c; }, 'connection closed');
  assert.equal(conn.closeReason, 'unchecked_upgrade');
  assert.equal(conn.error, 'bad_http');
  assert.equal(await badHttpConns(), before + 1, 'counted in connection_errors_total');
  const txs = (await apiGet(g, `/api/transactions?host=odd.test&limit=100`)).items.filter((t: any) => t.conn === up.conn);
  assert.deepEqual(txs.map((t: any) => t.kind), ['HTTP'], 'the 101 is the connection\'s only record');
});

test('a client that disconnects right after CONNECT is finished: connections_active returns to zero', async () => {
  const active = async () => {
    const text = await (await fetch(g.api + '/metrics')).text();
    return [...text.matchAll(/^greytap_connections_active\{listener="(?:http|socks)"\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };
  await waitFor(async () => (await active()) === 0, 'no open connections before');
  for (let i = 0; i < 5; i++) {
    const t = await connectTunnel(g.httpProxy, 'api.test:443');
    t.destroy(); // gone before sending a byte: the peek sees a closed socket
  }
  await waitFor(async () => (await active()) === 0, 'every abandoned tunnel finished', 10_000);
});

test('handshake timeout: a silent client of either listener, and an origin that stalls its TLS handshake, are closed with a clear reason', async () => {
  const silent = net.createServer(() => {}); // accepts, never speaks
  const silentPort = await listen(silent);
  const g2 = await startGreytap(['--handshake-timeout', '1s', '--upstream-ca', pki.caPath, '--map', `silent.test:443=127.0.0.1:${silentPort}`]);
  const opened: net.Socket[] = [];
  const connect = (addr: string) => {
    const [h, p] = addr.split(':');
    const s = net.connect(Number(p), h);
    opened.push(s);
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    return { s, got, closed: new Promise<void>((r) => s.on('close', () => r())) };
  };
  try {
    const t0 = Date.now();
    const http = connect(g2.httpProxy);
    http.s.write('GET http://plain.test/ HTTP/1.1\r\n'); // a head that never ends
    const socks = connect(g2.socks);
    socks.s.write(Buffer.from([5, 1, 0])); // a greeting, then no request
    await Promise.all([http.closed, socks.closed]);
    assert.ok(Date.now() - t0 >= 900, 'not before the timeout');
    assert.match(Buffer.concat(http.got).toString(), /^HTTP\/1\.1 408 /);
    assert.deepEqual(Buffer.concat(socks.got), Buffer.from([5, 0]), 'the method reply, then the close');

    const tunnel = await connectTunnel(g2.httpProxy, 'silent.test:443');
    const tlsClient = tls.connect({ socket: tunnel, servername: 'silent.test', ca: readFileSync(g2.caPath) });
    const reply: Buffer[] = [];
    tlsClient.on('data', (d) => reply.push(d));
    tlsClient.on('error', () => {});
    await new Promise<void>((r) => tlsClient.on('close', () => r()));
    assert.match(Buffer.concat(reply).toString(), /^HTTP\/1\.1 502 [\s\S]*TLS to silent\.test:443 failed: TLS handshake not finished within 1 s/);

    // A client that starts its ClientHello and stalls: past the 3 s peek it is a TLS handshake
    // like any other, closed at the timeout (it had become a raw tunnel, held for ever).
    const partial = await connectTunnel(g2.httpProxy, 'silent.test:443');
    partial.on('error', () => {});
    partial.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03])); // record and ClientHello headers
    const t5 = Date.now();
    const closed = await Promise.race([new Promise<boolean>((r) => partial.on('close', () => r(true))), new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
    assert.ok(closed, 'closed within 15 s');
    assert.ok(Date.now() - t5 >= 3500, `not before the peek and the timeout (${Date.now() - t5} ms)`);

    // A byte 0x16 that begins no ClientHello (a client of another protocol) still gets a raw tunnel.
    const echoed: Buffer[] = [];
    const echo = net.createServer((s) => { s.on('error', () => {}); s.on('data', (d) => s.write(Buffer.concat([Buffer.from('ACK:'), d]))); });
    const echoPort = await listen(echo);
    const g4 = await startGreytap(['--handshake-timeout', '1s', '--map', `echo.test:7=127.0.0.1:${echoPort}`]);
    try {
      const e = await connectTunnel(g4.httpProxy, 'echo.test:7');
      e.on('data', (d) => echoed.push(d));
      e.on('error', () => {});
      e.write(Buffer.from([0x16]));
      await waitFor(() => Buffer.concat(echoed).equals(Buffer.from([0x41, 0x43, 0x4b, 0x3a, 0x16])) || undefined, 'the echo through a raw tunnel', 10_000);
      e.destroy();
    } finally {
      await g4.stop();
      echo.close();
    }
    const active = async (gt: Greytap) => [...(await (await fetch(gt.api + '/metrics')).text()).matchAll(/^greytap_connections_active\{listener="(?:http|socks)"\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    await waitFor(async () => (await active(g2)) === 0, 'every timed-out connection finished');

    // A client that resets mid-handshake ends both handshakes then, not at the (long) timeout.
    const g3 = await startGreytap(['--handshake-timeout', '60s', '--upstream-ca', pki.caPath, '--map', `silent.test:443=127.0.0.1:${silentPort}`]);
    try {
      const t3 = await connectTunnel(g3.httpProxy, 'silent.test:443');
      const tc = tls.connect({ socket: t3, servername: 'silent.test', ca: readFileSync(g3.caPath) });
      tc.on('error', () => {});
      await waitFor(async () => (await active(g3)) === 1, 'the tunnel open');
      await new Promise((r) => setTimeout(r, 200)); // the ClientHello is in, both handshakes running
      t3.resetAndDestroy();
      await waitFor(async () => (await active(g3)) === 0, 'the reset connection finished', 5000);
      // and one that sends its FIN instead
      const t4 = await connectTunnel(g3.httpProxy, 'silent.test:443');
      tls.connect({ socket: t4, servername: 'silent.test', ca: readFileSync(g3.caPath) }).on('error', () => {});
      await waitFor(async () => (await active(g3)) === 1, 'the second tunnel open');
      await new Promise((r) => setTimeout(r, 200));
      t4.end();
      await waitFor(async () => (await active(g3)) === 0, 'the half-closed connection finished', 5000);
    } finally { await g3.stop(); }
  } finally {
    for (const s of opened) s.destroy();
    await g2.stop();
    silent.close();
  }
});

test('a bound connection whose response the tap cannot parse (guard mode) holds no capture memory for the request body still arriving', async () => {
  const memory = async () => Number(/^greytap_capture_memory_bytes (\d+)/m.exec(await (await fetch(g.api + '/metrics')).text())?.[1]);
  const [h, p] = g.httpProxy.split(':');
  const s = net.connect(Number(p), h);
  s.on('error', () => {});
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  const body = Buffer.alloc(4 << 20, 0x61);
  s.write(`POST http://odd.test/early HTTP/1.1\r\nHost: odd.test\r\nContent-Length: ${body.length}\r\n\r\n`);
  await waitFor(() => Buffer.concat(got).includes('odd answered'), 'the early (folded) answer');
  await new Promise<void>((r) => s.write(body, () => r()));
  s.end();
  await new Promise<void>((r) => s.on('close', () => r()));
  await g.drain();
  await waitFor(async () => (await memory()) === 0, 'capture memory back to 0');
});

test('a response cut by the close, with a partial request behind it: one record, one error', async () => {
  const errors = async () => Number(/greytap_decode_errors_total\{kind="truncated_stream"\} (\d+)/.exec(await (await fetch(g.api + '/metrics')).text())?.[1] ?? 0);
  const before = await errors();
  const s = await connectTunnel(g.httpProxy, 'odd.test:80'); // plain HTTP in a tunnel: tapped, not bound
  s.on('error', () => {});
  s.resume();
  s.write('GET /short HTTP/1.1\r\nHost: odd.test\r\n\r\nGET /next HTTP/1.1\r\nHo');
  await new Promise<void>((r) => s.on('close', () => r()));
  const cut = await waitFor(async () => (await httpRecords('odd.test')).find((t) => t.path === '/short'), 'the cut exchange');
  assert.equal(cut.error, 'truncated_stream');
  await g.drain();
  const all = (await apiGet(g, '/api/transactions?host=odd.test&limit=1000')).items.filter((t: any) => t.conn === cut.conn);
  assert.equal(all.length, 1, `records of that connection: ${JSON.stringify(all.map((t: any) => [t.path, t.error]))}`);
  assert.equal(await errors(), before + 1);
});

test('metrics: a connect-and-close probe is no bad request; a connection is counted in connections_total when it opens, not when it ends', async () => {
  const metric = async (re: RegExp) => Number(re.exec(await (await fetch(g.api + '/metrics')).text())?.[1] ?? NaN);
  const badHttp = () => metric(/^greytap_connection_errors_total\{listener="http",error="bad_http"\} (\d+)/m);
  const total = () => metric(/^greytap_connections_total\{listener="http",intercepted="false"\} (\d+)/m);
  const before = await badHttp();
  const [h, p] = g.httpProxy.split(':');
  await Promise.all(Array.from({ length: 3 }, () => new Promise<void>((r) => {
    const s = net.connect(Number(p), h, () => s.end());
    s.on('close', () => r());
    s.on('error', () => r());
  })));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await badHttp(), before, 'health-check probes are not bad_http');

  const opened = await total();
  const t = await connectTunnel(g.httpProxy, 'plain.test:80');
  t.write('GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n');
  await waitFor(async () => (await total()) === opened + 1, 'counted while still open');
  t.destroy();
});

test('a request cut by the client\'s own close on a bound connection keeps the close reason it had', async (t) => {
  const mute = net.createServer((c) => c.resume()); // reads, never answers; ends when the client does
  const mutePort = await listen(mute);
  t.after(() => mute.close());
  const g4 = await startGreytap(['--map', `mute.test:80=127.0.0.1:${mutePort}`]);
  t.after(() => g4.stop());
  const [h, p] = g4.httpProxy.split(':');
  const s = net.connect(Number(p), h);
  s.on('error', () => {});
  s.resume();
  const sent = 'POST http://mute.test/cut-by-close HTTP/1.1\r\nHost: mute.test\r\nContent-Length: 100\r\n\r\nabc';
  s.end(sent);
  await new Promise<void>((r) => s.on('close', () => r()));
  await g4.drain();
  const cut = await waitFor(async () => (await apiGet(g4, '/api/transactions?kind=HTTP&limit=10')).items.find((x: any) => x.path === '/cut-by-close'), 'the cut request recorded');
  assert.equal(cut.error, 'truncated_stream');
  assert.equal(cut.reqBytes, Buffer.byteLength(sent), 'reqBytes: the head and the 3 body bytes that came');
  const conn = await waitFor(async () => { const c = await apiGet(g4, `/api/connections/${cut.conn}`); return c.endTs !== undefined && c; }, 'connection closed');
  assert.equal(conn.closeReason, 'client_end');
});

test('no byte of a request for another origin reaches the bound one, even a head split across reads; a split head for the bound origin goes once whole', async () => {
  // Clients (curl, Node's keep-alive agent) reuse a proxy connection for another origin: its
  // request carries that origin's cookies and body, and was forwarded before the check closed it.
  let received = Buffer.alloc(0);
  const recorder = net.createServer((s) => {
    s.on('data', (d) => {
      received = Buffer.concat([received, d]);
      const heads = d.toString('latin1').match(/^[A-Z]+ \S+/gm) ?? [];
      for (const line of heads) s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${line.length}\r\n\r\n${line}`);
    });
    s.on('error', () => {});
  });
  const recPort = await listen(recorder);
  const own = await startGreytap(['--map', `rec.test:80=127.0.0.1:${recPort}`, '--map', `plain.test:80=127.0.0.1:${plainPort}`]);
  try {
    const [h, p] = own.httpProxy.split(':');
    const open = () => {
      const s = net.connect(Number(p), h);
      const got: Buffer[] = [];
      s.on('data', (d) => got.push(d));
      s.on('error', () => {});
      const closed = new Promise<void>((r) => s.on('close', () => r()));
      return { s, text: () => Buffer.concat(got).toString('latin1'), closed };
    };
    const a = open();
    a.s.write('POST http://rec.test/a HTTP/1.1\r\nHost: rec.test\r\nContent-Length: 5\r\n\r\nfirst');
    await waitFor(() => a.text().endsWith('POST http://rec.test/a'), 'the bound origin\'s answer');
    a.s.write('POST http://plain.test/b HTTP/1.1\r\nHost: plain.test\r\nCookie: session=B-SECRET\r\n');
    await new Promise((r) => setTimeout(r, 150));
    a.s.write('Content-Length: 6\r\n\r\nsecret');
    await a.closed;
    assert.equal(received.toString('latin1'), 'POST http://rec.test/a HTTP/1.1\r\nHost: rec.test\r\nContent-Length: 5\r\n\r\nfirst', 'the bound origin got its own request only');
    await waitFor(async () => (await apiGet(own, '/api/transactions?kind=HTTP&limit=50')).items.some((t: any) => t.error === 'bad_http'), 'the refused request recorded');

    received = Buffer.alloc(0);
    const b = open();
    b.s.write('GET http://rec.test/split HTTP/1.1\r\nHo');
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(received.length, 0, 'a head not yet whole waits');
    b.s.write('st: rec.test\r\n\r\n');
    await waitFor(() => b.text().endsWith('GET http://rec.test/split'), 'the answer to the split head');
    assert.equal(received.toString('latin1'), 'GET http://rec.test/split HTTP/1.1\r\nHost: rec.test\r\n\r\n', 'forwarded whole, as sent');
    b.s.end();
    await b.closed;
  } finally {
    await own.stop();
    recorder.close();
  }
});

test('the plain proxy\'s first request: any method token, a long target, blank lines before it; a head past 64 KiB gets 431 before the origin sees a byte', async () => {
  const [h, p] = g.httpProxy.split(':');
  const ask = async (bytes: string[]): Promise<string> => {
    const s = net.connect(Number(p), h);
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    for (const b of bytes) {
      s.write(b);
      await new Promise((r) => setTimeout(r, 50));
    }
    await waitFor(() => /\r\n\r\n/.test(Buffer.concat(got).toString('latin1')), 'an answer');
    s.end();
    await closed;
    return Buffer.concat(got).toString('latin1');
  };
  assert.match(await ask(['M-SEARCH http://plain.test/ssdp HTTP/1.1\r\nHost: plain.test\r\n\r\n']), /plain M-SEARCH http:\/\/plain\.test\/ssdp$/);
  const long = `/q?${'x'.repeat(9000)}`;
  assert.ok((await ask([`GET http://plain.test${long} HTTP/1.1\r\nHost: plain.test\r\n\r\n`])).endsWith(`plain GET http://plain.test${long}`), 'a 9 KB target goes through');
  assert.match(await ask(['\r\nGET http://plain.test/after-crlf HTTP/1.1\r\nHost: plain.test\r\n\r\n']), /plain GET http:\/\/plain\.test\/after-crlf$/);
  assert.match(await ask(['\r\n\r\nGET http://plain.test/after-two HTTP/1.1\r\nHost: plain.test\r\n\r\n']), /plain GET http:\/\/plain\.test\/after-two$/);
  // A 70 KB head whose end comes in its second read: refused whole (the origin would have run it
  // while the tap, failing it, closed the connection without an answer).
  const before = (await httpRecords('plain.test')).length;
  const big = await ask([`POST http://plain.test/big HTTP/1.1\r\nHost: plain.test\r\nX-Big: ${'b'.repeat(60_000)}`, `${'c'.repeat(10_000)}\r\nContent-Length: 2\r\n\r\nhi`]);
  assert.match(big, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  await g.drain();
  assert.ok(!(await httpRecords('plain.test')).slice(before).some((t) => t.path === '/big'), 'the origin never answered it');
});
