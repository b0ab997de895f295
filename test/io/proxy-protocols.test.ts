// Issue 2 end to end, the protocol corners: real clients (curl, Node's TLS sockets, Node's bundled
// undici) through the real proxy to real TLS origins, checking what the client got AND what was
// captured: Expect: 100-continue, HEAD/204/304 on a kept-alive connection, refused upgrades (h2c,
// WebSocket) followed by more requests, bodies delimited by close, SOCKS5 username/password and IP
// literal targets, gzip/br/SSE decoding, transfer codings other than chunked, and credential
// redaction in the API and in `export`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, connectTunnel, curl, tmpDir, type Greytap } from '../helpers/harness.js';

const pki = makeTestPki();
const NAMES = ['expect.test', 'pipe.test', 'upg.test', 'undici.test', 'enc.test', 'te-up.test', 'sse.test', 'secret.test', 'socks.test', '127.0.0.1'];
const SCRIPTED = ['script.test', 'close.test', 'te.test'];
let g: Greytap;
let proxyCa = '';
let origin: https.Server; // Node's HTTP server on 127.0.0.1
let origin6: https.Server; // the same handler on [::1]
let scripted: tls.Server; // answers each request head with a scripted byte string (what Node's server cannot do)
let scriptedReceived: Buffer[] = [];
let originPort = 0, origin6Port = 0, scriptedPort = 0;
const work = tmpDir('greytap-protocols-');

const GZIP_TEXT = 'gzip body line\n'.repeat(4000);
const BR_TEXT = JSON.stringify({ text: 'brotli '.repeat(5000) });
const SSE_WIRE = 'id: 1\nevent: message_start\ndata: {"a":1}\n\n: keep-alive comment\n\ndata: line1\ndata: line2\n\nevent: done\ndata: [DONE]\n\n';
const SECRETS = { auth: 'sk-live-AUTH-4f1c', cookie: 'COOKIE-9b2e', apiKey: 'APIKEY-77d0', setCookie: 'SETCOOKIE-31aa' };

/** One origin handler for every DNS name and IP literal (routing by path). */
function route(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, body: Buffer): void {
  const path = req.url ?? '';
  if (req.headers.upgrade) {
    // Node's server answers upgrade requests normally when it has no 'upgrade' listener: a refusal.
    const h2c = req.headers.upgrade === 'h2c';
    res.writeHead(h2c ? 200 : 400, { 'Content-Type': 'text/plain' });
    return void res.end(h2c ? `no h2c here ${path}` : `websocket refused ${path}`);
  }
  switch (path) {
    case '/upload':
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return void res.end(JSON.stringify({ len: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex'), expect: req.headers.expect ?? null }));
    case '/head':
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '11' });
      return void res.end(req.method === 'HEAD' ? undefined : 'hello world');
    case '/no-content':
      res.writeHead(204, { 'X-Kind': 'no-content' });
      return void res.end();
    case '/not-modified':
      res.writeHead(304, { ETag: '"v1"' });
      return void res.end();
    case '/gzip': {
      // chunked (no Content-Length) and written in two pieces: de-chunking, then gunzip
      const z = zlib.gzipSync(GZIP_TEXT);
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Encoding': 'gzip' });
      res.write(z.subarray(0, 100));
      return void res.end(z.subarray(100));
    }
    case '/br': {
      const z = zlib.brotliCompressSync(BR_TEXT);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'br', 'Content-Length': String(z.length) });
      return void res.end(z);
    }
    case '/events':
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache' });
      for (const part of SSE_WIRE.split(/(?<=\n\n)/)) res.write(part);
      return void res.end();
    case '/secret':
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Set-Cookie': `sid=${SECRETS.setCookie}; HttpOnly` });
      return void res.end('ok');
    default:
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: path, body: body.toString('utf8') }));
  }
}

function handler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (d: Buffer) => chunks.push(d));
  req.on('end', () => route(req, res, Buffer.concat(chunks)));
}

/** Scripted replies per request path: pieces written with a pause between, then optionally a close. */
const SCRIPT: Record<string, { pieces: Buffer[]; close?: boolean }> = {};

function scriptedServer(): tls.Server {
  return tls.createServer(pki.serverContext(SCRIPTED), (s) => {
    let pending = Buffer.alloc(0);
    let chain = Promise.resolve();
    s.on('data', (d: Buffer) => {
      scriptedReceived.push(Buffer.from(d));
      pending = Buffer.concat([pending, d]);
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const path = pending.toString('latin1', 0, end).split(' ')[1];
        pending = pending.subarray(end + 4); // the scripted requests carry no bodies
        const reply = SCRIPT[path];
        if (!reply) { s.destroy(); return; }
        chain = chain.then(async () => {
          for (const p of reply.pieces) { s.write(p); await new Promise((r) => setTimeout(r, 20)); }
          if (reply.close) s.end();
        });
      }
    });
    s.on('error', () => {});
  });
}

function listen(s: net.Server, host = '127.0.0.1'): Promise<number> {
  return new Promise((r) => s.listen(0, host, () => r((s.address() as net.AddressInfo).port)));
}

before(async () => {
  origin = https.createServer(pki.serverContext(NAMES), handler);
  origin6 = https.createServer(pki.serverContext(['::1']), handler);
  scripted = scriptedServer();
  [originPort, origin6Port, scriptedPort] = await Promise.all([listen(origin), listen(origin6, '::1'), listen(scripted)]);
  g = await startGreytap([
    '--upstream-ca', pki.caPath,
    '--socks-auth', 'agent-a:pw',
    ...NAMES.filter((n) => n.endsWith('.test')).flatMap((n) => ['--map', `${n}:443=127.0.0.1:${originPort}`]),
    ...SCRIPTED.flatMap((n) => ['--map', `${n}:443=127.0.0.1:${scriptedPort}`]),
  ]);
  proxyCa = readFileSync(g.caPath, 'utf8');
});

after(async () => {
  await g?.stop();
  origin?.close(); origin6?.close(); scripted?.close();
  rmSync(work, { recursive: true, force: true });
});

// ── helpers ─────────────────────────────────────────────────────────────────────────────────

/** HTTP transactions of one host, in commit order (= wire order per connection). */
async function records(host: string, min: number): Promise<any[]> {
  return waitFor(async () => {
    await g.drain();
    const items = (await apiGet(g, `/api/transactions?kind=HTTP&host=${encodeURIComponent(host)}&limit=1000`)).items;
    return items.length >= min && items;
  }, `${min} HTTP record(s) for ${host}`);
}

const full = (id: string) => apiGet(g, `/api/transactions/${id}`);

/** A connection record once it is closed (bytes and close reason final). */
const closedConnection = (id: string) => waitFor(async () => { const c = await apiGet(g, `/api/connections/${id}`); return c.endTs !== undefined && c; }, `connection ${id} closed`);

function header(headers: [string, string][], name: string): string | undefined {
  return headers.find(([n]) => n.toLowerCase() === name)?.[1];
}

/** A raw TLS client through the HTTP proxy's CONNECT, trusting the proxy's CA. */
async function rawClient(host: string) {
  const t = await connectTunnel(g.httpProxy, `${host}:443`);
  const s = tls.connect({ socket: t, servername: host, ca: proxyCa });
  await once(s, 'secureConnect');
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  const received = () => Buffer.concat(got);
  return {
    s,
    received,
    until: (text: string) => waitFor(() => received().toString('latin1').includes(text), `"${text}" from ${host}`),
    async close() { s.end(); if (!s.destroyed) await once(s, 'close'); },
  };
}

/** Node's server writes `Name: value` lines: the head's wire length follows from the stored head. */
function responseHeadLength(tx: any): number {
  return Buffer.byteLength(`HTTP/1.1 ${tx.status} ${tx.statusText}\r\n${tx.respHeaders.map(([n, v]: [string, string]) => `${n}: ${v}\r\n`).join('')}\r\n`);
}

/** Bytes up to and including the first `marker`. */
function countBytes(all: string, marker: string): number {
  const i = all.indexOf(marker);
  assert.ok(i >= 0, `missing ${marker}`);
  return i + marker.length;
}

// ── tests ───────────────────────────────────────────────────────────────────────────────────

test('Expect: 100-continue upload with curl: origin answers 100 then 200; one transaction, body intact', async () => {
  const body = Buffer.from(Array.from({ length: 40_000 }, (_, i) => `line ${i} of the upload\n`).join(''));
  const file = join(work, 'upload.txt');
  writeFileSync(file, body);
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, '-H', 'Expect: 100-continue', '-H', 'Content-Type: text/plain', '--data-binary', `@${file}`, 'https://expect.test/upload']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { len: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex'), expect: '100-continue' });
  const items = await records('expect.test', 1);
  assert.equal(items.length, 1, 'the 100 Continue is not a transaction of its own');
  const tx = await full(items[0].id);
  assert.equal(tx.method, 'POST');
  assert.equal(tx.status, 200, 'the final status, not the interim 100');
  assert.equal(header(tx.reqHeaders, 'expect'), '100-continue');
  assert.equal(tx.reqBody.length, body.length);
  assert.ok(tx.reqBody === body.toString('utf8'), 'request body stored intact');
  assert.deepEqual(JSON.parse(tx.respBody), JSON.parse(r.stdout));
  assert.equal(tx.error, undefined);
  assert.equal(tx.truncated, false);
  const conn = await closedConnection(tx.conn);
  assert.equal(conn.bytesUp, tx.reqBytes, 'the one request is every byte the client sent');
  // the interim response sits between the request and the final response on the wire
  assert.equal(conn.bytesDown, tx.respBytes + Buffer.byteLength('HTTP/1.1 100 Continue\r\n\r\n'));
});

test('HEAD, 204 and 304 pipelined on one connection, then a normal request: all captured in order with the right bodies', async () => {
  const c = await rawClient('pipe.test');
  const reqs = [
    'HEAD /head HTTP/1.1\r\nHost: pipe.test\r\n\r\n',
    'GET /no-content HTTP/1.1\r\nHost: pipe.test\r\n\r\n',
    'GET /not-modified HTTP/1.1\r\nHost: pipe.test\r\nIf-None-Match: "v1"\r\n\r\n',
    'POST /normal HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: 9\r\n\r\nafter-304',
  ];
  c.s.write(reqs.join(''));
  await c.until('after-304"}');
  const wire = c.received().toString('latin1');
  await c.close();
  const items = await records('pipe.test', 4);
  assert.deepEqual(items.map((t) => [t.method, t.path, t.status]), [
    ['HEAD', '/head', 200], ['GET', '/no-content', 204], ['GET', '/not-modified', 304], ['POST', '/normal', 200],
  ]);
  assert.equal(new Set(items.map((t) => t.conn)).size, 1, 'one kept-alive connection');
  const [head, noContent, notModified, normal] = await Promise.all(items.map((t) => full(t.id)));
  assert.equal(header(head.respHeaders, 'content-length'), '11', 'HEAD keeps its Content-Length header');
  for (const t of [head, noContent, notModified]) {
    assert.equal(t.respBody ?? '', '', `${t.path}: no response body`);
    assert.equal(t.respBodyBase64, undefined);
    assert.equal(t.error, undefined);
  }
  assert.equal(header(noContent.respHeaders, 'x-kind'), 'no-content');
  assert.equal(header(notModified.respHeaders, 'etag'), '"v1"');
  assert.equal(normal.reqBody, 'after-304');
  assert.deepEqual(JSON.parse(normal.respBody), { method: 'POST', url: '/normal', body: 'after-304' });
  // wire accounting: each request's bytes exactly, and the responses add up to what the client got
  assert.deepEqual([head, noContent, notModified, normal].map((t) => t.reqBytes), reqs.map((r) => r.length));
  assert.equal(head.respBytes + noContent.respBytes + notModified.respBytes + normal.respBytes, wire.length);
  assert.equal(head.respBytes, countBytes(wire, '\r\n\r\n'), 'the HEAD response is its head alone');
});

test('upgrades the origin refuses (h2c → 200, websocket → 400) on a kept-alive connection: the tap resumes parsing', async () => {
  const c = await rawClient('upg.test');
  const h2c = 'GET /h2c HTTP/1.1\r\nHost: upg.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n';
  c.s.write(h2c);
  await c.until('no h2c here /h2c\r\n0\r\n\r\n');
  c.s.write('GET /after-h2c HTTP/1.1\r\nHost: upg.test\r\n\r\n');
  await c.until('"url":"/after-h2c"');
  c.s.write('GET /ws HTTP/1.1\r\nHost: upg.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  await c.until('websocket refused /ws\r\n0\r\n\r\n');
  c.s.write('POST /after-ws HTTP/1.1\r\nHost: upg.test\r\nContent-Length: 2\r\n\r\nhi');
  await c.until('"url":"/after-ws"');
  await c.close();
  const items = await records('upg.test', 4);
  assert.deepEqual(items.map((t) => [t.method, t.path, t.status]), [['GET', '/h2c', 200], ['GET', '/after-h2c', 200], ['GET', '/ws', 400], ['POST', '/after-ws', 200]]);
  assert.equal(new Set(items.map((t) => t.conn)).size, 1);
  const [a, b, d, e] = await Promise.all(items.map((t) => full(t.id)));
  assert.equal(a.respBody, 'no h2c here /h2c');
  assert.equal(header(a.reqHeaders, 'upgrade'), 'h2c');
  assert.equal(JSON.parse(b.respBody).url, '/after-h2c');
  assert.equal(d.respBody, 'websocket refused /ws');
  assert.equal(e.reqBody, 'hi');
  assert.equal(JSON.parse(e.respBody).body, 'hi');
  for (const t of [a, b, d, e]) assert.equal(t.error, undefined, `${t.path}: ${t.errorDetail}`);
  const conn = await apiGet(g, `/api/connections/${a.conn}`);
  assert.deepEqual(conn.messages, [], 'no WebSocket messages on a refused upgrade');
});

test('a request pipelined right behind a refused websocket upgrade is held, then parsed: byte-exact both ways', async () => {
  scriptedReceived = [];
  const refusal = Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nno websockets');
  const after = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter');
  SCRIPT['/ws-refused'] = { pieces: [refusal] };
  SCRIPT['/after-refusal'] = { pieces: [after] };
  const request = Buffer.from(
    'GET /ws-refused HTTP/1.1\r\nHost: script.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n' +
    'GET /after-refusal HTTP/1.1\r\nHost: script.test\r\n\r\n',
  );
  const c = await rawClient('script.test');
  c.s.write(request);
  await waitFor(() => c.received().length >= refusal.length + after.length, 'both responses');
  await c.close();
  assert.deepEqual(c.received(), Buffer.concat([refusal, after]), 'client got exactly what the origin sent');
  assert.deepEqual(Buffer.concat(scriptedReceived), request, 'origin got exactly what the client sent');
  const items = await records('script.test', 2);
  assert.deepEqual(items.map((t) => [t.path, t.status]), [['/ws-refused', 400], ['/after-refusal', 200]]);
  const [x, y] = await Promise.all(items.map((t) => full(t.id)));
  assert.equal(x.respBody, 'no websockets');
  assert.equal(y.respBody, 'after');
  assert.equal(y.reqBytes, Buffer.byteLength('GET /after-refusal HTTP/1.1\r\nHost: script.test\r\n\r\n'));
  assert.equal(y.error, undefined, y.errorDetail);
});

test('a response body that ends at close (no Content-Length, Connection: close) is captured whole', async () => {
  const head = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n');
  const parts = [Buffer.from('a'.repeat(100_000)), Buffer.from('b'.repeat(100_000)), Buffer.from('the end\n')];
  SCRIPT['/until-close'] = { pieces: [head, ...parts], close: true };
  const r = await curl(['-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://close.test/until-close']);
  assert.equal(r.code, 0, r.stderr);
  const body = Buffer.concat(parts).toString();
  assert.ok(r.stdout === body, 'client got the whole body');
  const [item] = await records('close.test', 1);
  const tx = await full(item.id);
  assert.equal(tx.status, 200);
  assert.ok(tx.respBody === body, `stored body: ${tx.respBody?.length} of ${body.length} chars`);
  assert.equal(tx.respBytes, head.length + body.length);
  assert.equal(tx.error, undefined, tx.errorDetail);
  assert.equal(tx.truncated, false);
});

test('SOCKS5 username/password: the user is the connection\'s clientUser; a wrong password fails cleanly', async () => {
  const ok = await curl(['-x', `socks5h://agent-a:pw@${g.socks}`, '--cacert', g.caPath, 'https://socks.test/as-agent']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).url, '/as-agent');
  // the -U form of the same credentials
  const ok2 = await curl(['--socks5-hostname', g.socks, '-U', 'agent-a:pw', '--cacert', g.caPath, 'https://socks.test/as-agent-U']);
  assert.equal(ok2.code, 0, ok2.stderr);
  const items = await records('socks.test', 2);
  for (const t of items) {
    const conn = await apiGet(g, `/api/connections/${t.conn}`);
    assert.equal(conn.listener, 'socks');
    assert.equal(conn.clientUser, 'agent-a');
    assert.equal(conn.host, 'socks.test');
  }
  const bad = await curl(['-x', `socks5h://agent-a:wrong@${g.socks}`, '--cacert', g.caPath, 'https://socks.test/bad-password']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /SOCKS5|rejected/i);
  const none = await curl(['-x', `socks5h://${g.socks}`, '--cacert', g.caPath, 'https://socks.test/no-credentials']);
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /SOCKS5|authentication|method/i);
  const still = await curl(['-x', `socks5h://agent-a:pw@${g.socks}`, '--cacert', g.caPath, 'https://socks.test/still-serving']);
  assert.equal(still.code, 0, still.stderr);
  const after = await records('socks.test', 3);
  assert.deepEqual(after.map((t) => t.path).sort(), ['/as-agent', '/as-agent-U', '/still-serving']);
});

test('SOCKS5 to IPv4 and IPv6 literal targets: intercepted with an IP certificate and captured', async () => {
  const v4 = await curl(['-x', `socks5h://agent-a:pw@${g.socks}`, '--cacert', g.caPath, `https://127.0.0.1:${originPort}/ipv4`]);
  assert.equal(v4.code, 0, v4.stderr);
  assert.equal(JSON.parse(v4.stdout).url, '/ipv4');
  const v6 = await curl(['-g', '-x', `socks5h://agent-a:pw@${g.socks}`, '--cacert', g.caPath, `https://[::1]:${origin6Port}/ipv6`]);
  assert.equal(v6.code, 0, v6.stderr);
  assert.equal(JSON.parse(v6.stdout).url, '/ipv6');
  // and the same IPv6 literal through HTTP CONNECT
  const v6http = await curl(['-g', '-x', `http://${g.httpProxy}`, '--cacert', g.caPath, `https://[::1]:${origin6Port}/ipv6-connect`]);
  assert.equal(v6http.code, 0, v6http.stderr);
  const [t4] = await records('127.0.0.1', 1);
  assert.equal(t4.port, originPort);
  assert.equal(t4.path, '/ipv4');
  const c4 = await apiGet(g, `/api/connections/${t4.conn}`);
  assert.equal(c4.intercepted, true);
  assert.equal(c4.sni, undefined, 'no SNI for an IP literal (RFC 6066 §3)');
  assert.equal(c4.clientUser, 'agent-a');
  const t6s = await records('::1', 2);
  assert.deepEqual(t6s.map((t) => t.path), ['/ipv6', '/ipv6-connect']);
  const [c6, c6http] = await Promise.all(t6s.map((t) => apiGet(g, `/api/connections/${t.conn}`)));
  assert.deepEqual([c6.listener, c6.host, c6.port, c6.intercepted], ['socks', '::1', origin6Port, true]);
  assert.deepEqual([c6http.listener, c6http.host, c6http.intercepted], ['http', '::1', true]);
});

test("Node's bundled undici (fetch with a dispatcher) through a CONNECT tunnel: keep-alive reuse, both requests captured", async () => {
  // Node 20 bundles undici but does not export ProxyAgent and node_modules has no `undici`: take the
  // bundled Agent (the global dispatcher's class) and give it a connect() that opens our CONNECT tunnel.
  await fetch(g.api + '/healthz');
  const Agent = (globalThis as any)[Symbol.for('undici.globalDispatcher.1')]?.constructor;
  assert.equal(typeof Agent, 'function', "Node's bundled undici Agent");
  let tunnels = 0;
  const agent = new Agent({
    connect(opts: { hostname: string; port: string; servername?: string }, cb: (err: Error | null, s: tls.TLSSocket | null) => void) {
      tunnels++;
      connectTunnel(g.httpProxy, `${opts.hostname}:${opts.port || 443}`).then((sock) => {
        const t = tls.connect({ socket: sock, servername: opts.servername || opts.hostname, ca: proxyCa, ALPNProtocols: ['http/1.1'] });
        t.once('secureConnect', () => cb(null, t));
        t.once('error', (e) => cb(e, null));
      }, (e) => cb(e, null));
    },
  });
  try {
    const r1 = await fetch('https://undici.test/v1/first', { dispatcher: agent, method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' } as RequestInit);
    assert.deepEqual(await r1.json(), { method: 'POST', url: '/v1/first', body: '{"n":1}' });
    // undici returns the socket to its pool a tick after the body ends (a second fetch issued in the
    // same tick opens another connection, with or without a proxy)
    await new Promise((r) => setImmediate(r));
    const r2 = await fetch('https://undici.test/v1/second', { dispatcher: agent } as RequestInit);
    assert.equal((await r2.json()).url, '/v1/second');
    assert.equal(tunnels, 1, 'undici reused its kept-alive connection');
  } finally { await agent.close(); }
  const items = await records('undici.test', 2);
  assert.deepEqual(items.map((t) => [t.method, t.path, t.status]), [['POST', '/v1/first', 200], ['GET', '/v1/second', 200]]);
  assert.equal(items[0].conn, items[1].conn);
  const first = await full(items[0].id);
  assert.equal(first.reqBody, '{"n":1}');
  assert.equal(header(first.reqHeaders, 'content-type'), 'application/json');
});

test('gzip (chunked) and br responses are stored decoded; the client decodes the same bytes', async () => {
  const gz = await curl(['--compressed', '-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://enc.test/gzip']);
  assert.equal(gz.code, 0, gz.stderr);
  assert.ok(gz.stdout === GZIP_TEXT);
  const br = await curl(['--compressed', '-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://enc.test/br']);
  assert.equal(br.code, 0, br.stderr);
  assert.ok(br.stdout === BR_TEXT);
  const items = await records('enc.test', 2);
  const byPath = Object.fromEntries(await Promise.all(items.map(async (t) => [t.path, await full(t.id)])));
  const g1 = byPath['/gzip'], b1 = byPath['/br'];
  assert.ok(g1.respBody === GZIP_TEXT, 'gzip body stored decoded');
  assert.equal(g1.respBodySize, GZIP_TEXT.length);
  assert.equal(header(g1.respHeaders, 'content-encoding'), 'gzip', 'headers stay as on the wire');
  assert.equal(header(g1.respHeaders, 'transfer-encoding'), 'chunked');
  assert.ok(g1.respBytes < GZIP_TEXT.length, 'respBytes counts the compressed wire bytes');
  assert.ok(b1.respBody === BR_TEXT, 'br body stored decoded');
  assert.equal(b1.respBodySize, BR_TEXT.length);
  assert.equal(header(b1.respHeaders, 'content-encoding'), 'br');
  assert.equal(b1.respBytes, responseHeadLength(b1) + zlib.brotliCompressSync(BR_TEXT).length, 'head + compressed body');
  for (const t of [g1, b1]) { assert.equal(t.error, undefined, t.errorDetail); assert.equal(t.truncated, false); }
});

/** `body` in chunked framing, `size` bytes a chunk (one with an extension), then the last chunk. */
function chunked(body: Buffer, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const piece = body.subarray(i, i + size);
    parts.push(Buffer.from(`${piece.length.toString(16)}${i === 0 ? ';x=1' : ''}\r\n`), piece, Buffer.from('\r\n'));
  }
  return Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
}

const decodeFailures = async () => Number(/greytap_decode_errors_total\{kind="decode_failed"\} (\d+)/.exec(await (await fetch(g.api + '/metrics')).text())?.[1] ?? 0);

test('transfer codings before chunked (gzip, x-gzip, unknown; across header lines, any case) are undone in the capture; bytes forwarded as sent', async () => {
  const json = JSON.stringify({ text: 'transfer-coded '.repeat(3000) });
  const gz = zlib.gzipSync(json);
  // applied in order: the origin's content coding br, then transfer codings gzip, x-gzip, chunked
  const stacked = zlib.gzipSync(zlib.gzipSync(zlib.brotliCompressSync(json)));
  const replies = {
    '/te-gzip': Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'), chunked(gz, 1000)]),
    '/te-lines': Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nTransfer-Encoding: GZip\r\ntransfer-encoding: x-gzip ,\tCHUNKED\r\n\r\n'), chunked(stacked, 700)]),
    '/te-unknown': Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: compress, Chunked\r\n\r\n'), chunked(Buffer.from('LZW?not really'), 5)]),
  };
  for (const [path, reply] of Object.entries(replies)) SCRIPT[path] = { pieces: [reply.subarray(0, 150), reply.subarray(150)] };
  // no chunked: the body ends at the close
  const untilClose = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n'), gz]);
  SCRIPT['/te-close'] = { pieces: [untilClose], close: true };
  const failuresBefore = await decodeFailures();

  scriptedReceived = [];
  const request = Buffer.from(Object.keys(replies).map((p) => `GET ${p} HTTP/1.1\r\nHost: te.test\r\n\r\n`).join(''));
  const c = await rawClient('te.test');
  c.s.write(request);
  const sent = Buffer.concat(Object.values(replies));
  await waitFor(() => c.received().length >= sent.length, 'three responses');
  await c.close();
  assert.ok(c.received().equals(sent), 'client got exactly what the origin sent');
  assert.ok(Buffer.concat(scriptedReceived).equals(request), 'origin got exactly what the client sent');
  const closing = await rawClient('te.test');
  closing.s.write('GET /te-close HTTP/1.1\r\nHost: te.test\r\n\r\n');
  await once(closing.s, 'end');
  assert.ok(closing.received().equals(untilClose), 'client got the close-delimited response as sent');
  await closing.close();

  // the request side: Node's server takes the gzip bytes after de-chunking them itself
  const up = await rawClient('te-up.test');
  const upBody = zlib.gzipSync('{"prompt":"gzip as a transfer coding"}');
  up.s.write(Buffer.concat([Buffer.from('POST /upload HTTP/1.1\r\nHost: te-up.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n'), chunked(upBody, 10)]));
  await up.until('"sha256"');
  await up.close();

  const items = await records('te.test', 4);
  const byPath = Object.fromEntries(await Promise.all(items.map(async (t) => [t.path, await full(t.id)])));
  for (const p of ['/te-gzip', '/te-lines', '/te-close']) {
    const t = byPath[p];
    assert.ok(t.respBody === json, `${p}: stored decoded (${t.respBodyBase64 ? 'base64' : t.respBody?.length} of ${json.length})`);
    assert.equal(t.respBodySize, json.length, p);
    assert.equal(t.error, undefined, `${p}: ${t.errorDetail}`);
    assert.equal(t.truncated, false, p);
  }
  assert.equal(byPath['/te-gzip'].respBytes, replies['/te-gzip'].length, 'respBytes counts the wire');
  assert.equal(byPath['/te-close'].respBytes, untilClose.length);
  const unknown = byPath['/te-unknown'];
  assert.equal(unknown.respBody, 'LZW?not really', 'de-chunked, kept raw');
  assert.equal(unknown.error, 'decode_failed');
  assert.equal(unknown.errorDetail, 'unsupported transfer-encoding: compress');
  assert.equal(await decodeFailures(), failuresBefore + 1, 'counted in decode_errors_total');

  const [upTx] = await records('te-up.test', 1);
  const upload = await full(upTx.id);
  assert.equal(upload.reqBody, '{"prompt":"gzip as a transfer coding"}');
  assert.equal(JSON.parse(upload.respBody).sha256, crypto.createHash('sha256').update(upBody).digest('hex'), 'origin got the gzip bytes');
  assert.equal(upload.error, undefined, upload.errorDetail);
});

test('an SSE response is stored with its parsed events', async () => {
  const r = await curl(['-N', '-x', `http://${g.httpProxy}`, '--cacert', g.caPath, 'https://sse.test/events']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, SSE_WIRE);
  const [item] = await records('sse.test', 1);
  const tx = await full(item.id);
  assert.equal(tx.respBody, SSE_WIRE);
  assert.deepEqual(tx.respEvents, [
    { event: 'message_start', data: '{"a":1}', id: '1' },
    { data: 'line1\nline2', id: '1' }, // the last event id persists (WHATWG event stream)
    { event: 'done', data: '[DONE]', id: '1' },
  ]);
});

test('credentials are redacted in the API and in `greytap export` (run while serving)', async () => {
  const r = await curl([
    '-x', `http://${g.httpProxy}`, '--cacert', g.caPath,
    '-H', `Authorization: Bearer ${SECRETS.auth}`, '-H', `Cookie: session=${SECRETS.cookie}`, '-H', `x-api-key: ${SECRETS.apiKey}`,
    'https://secret.test/secret',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'ok');
  const [item] = await records('secret.test', 1);
  const tx = await full(item.id);
  const text = JSON.stringify(tx);
  for (const s of Object.values(SECRETS)) assert.ok(!text.includes(s), `API record leaks ${s}`);
  // the headers are still there, in wire order and case, with their values replaced
  assert.deepEqual(tx.reqHeaders.map(([n]: [string]) => n).filter((n: string) => /^(authorization|cookie|x-api-key)$/i.test(n)), ['Authorization', 'Cookie', 'x-api-key']);
  assert.match(header(tx.reqHeaders, 'authorization')!, /^Bearer \S/, 'the scheme is kept');
  assert.ok(header(tx.respHeaders, 'set-cookie'), 'Set-Cookie header kept (value redacted)');
  const out = await new Promise<string>((resolve, reject) => {
    const bin = fileURLToPath(new URL('../../../bin/greytap.js', import.meta.url));
    execFile(process.execPath, [bin, 'export', '--data-dir', g.dataDir, '--format', 'jsonl'], { maxBuffer: 256 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
  });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.some((l) => l.id === tx.id), 'export contains the transaction');
  for (const s of Object.values(SECRETS)) assert.ok(!out.includes(s), `export leaks ${s}`);
});
