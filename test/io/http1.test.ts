// Playbook tests for the HTTP/1.1 framing parser: bytes in → callback sequence out. Every input is
// also fed one byte at a time and in random splits; the callbacks (body data concatenated) must be
// the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Http1Parser, type RequestHead, type ResponseHead } from '../../src/io/http1.js';
import type { Header } from '../../src/records.js';

type Ev =
  | ['head', RequestHead | ResponseHead]
  | ['body', string]
  | ['end', Header[], number]
  | ['upgraded', string] // onUpgrade's rest plus every byte pushed after it (what the new protocol gets)
  | ['error', string]
  | ['held', string]; // what upgrade() returned

interface Script {
  expect?: string[]; // expectResponseTo, in order, before any byte
  end?: boolean; // call end() after the input
  after?: (p: Http1Parser) => Buffer | void; // e.g. p.upgrade() / p.resume()
  afterInput?: string; // bytes pushed after `after` ran
}

function feed(side: 'request' | 'response', pieces: Buffer[], s: Script = {}): { evs: Ev[]; state: string } {
  const evs: Ev[] = [];
  let post: Buffer[] | undefined;
  const p = new Http1Parser(side, {
    onHead: (h) => evs.push(['head', h]),
    onBody: (d) => {
      assert.ok(d.length > 0, 'onBody with no bytes');
      const last = evs[evs.length - 1];
      if (last?.[0] === 'body') last[1] += d.toString('latin1');
      else evs.push(['body', d.toString('latin1')]);
    },
    onEnd: (i) => evs.push(['end', i.trailers, i.wireBytes]),
    onUpgrade: (rest) => {
      assert.equal(post, undefined, 'onUpgrade twice');
      post = [Buffer.from(rest)];
    },
    onError: (code, detail) => evs.push(['error', `${code}: ${detail}`]),
  });
  for (const m of s.expect ?? []) p.expectResponseTo(m);
  for (const piece of pieces) {
    if (post) post.push(piece); // the tap stops feeding HTTP once upgraded
    else p.push(piece);
  }
  if (s.after) {
    const r = s.after(p);
    if (r) evs.push(['held', r.toString('latin1')]);
  }
  if (s.afterInput) p.push(Buffer.from(s.afterInput, 'latin1'));
  if (s.end) p.end();
  if (post) evs.push(['upgraded', Buffer.concat(post).toString('latin1')]);
  return { evs, state: p.state };
}

// Deterministic PRNG (mulberry32) so a failing split can be reproduced.
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function splits(input: Buffer): Array<[string, Buffer[]]> {
  const out: Array<[string, Buffer[]]> = [['whole', [input]]];
  const bytes: Buffer[] = [];
  for (let i = 0; i < input.length; i++) bytes.push(input.subarray(i, i + 1));
  out.push(['one byte at a time', bytes]);
  for (let seed = 1; seed <= 25; seed++) {
    const r = rng(seed);
    const parts: Buffer[] = [];
    for (let i = 0; i < input.length; ) {
      const n = 1 + Math.floor(r() * Math.min(input.length, 24));
      parts.push(input.subarray(i, i + n));
      i += n;
    }
    out.push([`random split #${seed}`, parts]);
  }
  return out;
}

/** Asserts the callback sequence (and final state) for every way of splitting `input`. */
function playbook(side: 'request' | 'response', input: string, expected: Ev[], state: string, s: Script = {}): void {
  for (const [how, pieces] of splits(Buffer.from(input, 'latin1'))) {
    const got = feed(side, pieces, s);
    assert.deepEqual(got.evs, expected, how);
    assert.equal(got.state, state, how);
  }
}

const len = (s: string) => Buffer.byteLength(s, 'latin1');
const req = (method: string, target: string, headers: Header[], head: string, version = 'HTTP/1.1'): Ev => ['head', { kind: 'request', method, target, version, headers, headBytes: len(head) }];
const resp = (status: number, statusText: string, headers: Header[], head: string, informational = false): Ev => ['head', { kind: 'response', status, statusText, version: 'HTTP/1.1', headers, headBytes: len(head), informational }];

// ── requests ──────────────────────────────────────────────────────────────────────────────

test('request head: name case and order kept, OWS trimmed, no body without CL/TE', () => {
  const h = 'GET /v1/models?x=1 HTTP/1.1\r\nHost: api.test\r\nX-Empty:\r\nx-MiXed:  \t spaced value \t\r\naccept: */*\r\n\r\n';
  playbook('request', h, [req('GET', '/v1/models?x=1', [['Host', 'api.test'], ['X-Empty', ''], ['x-MiXed', 'spaced value'], ['accept', '*/*']], h), ['end', [], len(h)]], 'head');
});

test('request with Content-Length body, then a pipelined request in the same bytes', () => {
  const h1 = 'POST /v1/responses HTTP/1.1\r\nContent-Length: 11\r\n\r\n';
  const h2 = 'GET /next HTTP/1.0\r\n\r\n';
  playbook('request', h1 + 'hello world' + h2, [
    req('POST', '/v1/responses', [['Content-Length', '11']], h1), ['body', 'hello world'], ['end', [], len(h1) + 11],
    req('GET', '/next', [], h2, 'HTTP/1.0'), ['end', [], len(h2)],
  ], 'head');
});

test('three pipelined requests: GET, POST with body, GET', () => {
  const a = 'GET /1 HTTP/1.1\r\nHost: h\r\n\r\n';
  const b = 'POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n';
  const c = 'GET /3 HTTP/1.1\r\nHost: h\r\n\r\n';
  playbook('request', a + b + 'abc' + c, [
    req('GET', '/1', [['Host', 'h']], a), ['end', [], len(a)],
    req('POST', '/2', [['Host', 'h'], ['Content-Length', '3']], b), ['body', 'abc'], ['end', [], len(b) + 3],
    req('GET', '/3', [['Host', 'h']], c), ['end', [], len(c)],
  ], 'head');
});

test('chunked request: hex in both cases, extensions, trailers', () => {
  const h = 'POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Length: 999\r\n\r\n';
  const body = '5\r\nhello\r\nA;name=value;flag\r\n0123456789\r\n1a ; ext="q;uoted"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: abc\r\nX-Other:  v \r\n\r\n';
  playbook('request', h + body, [
    req('POST', '/up', [['Transfer-Encoding', 'chunked'], ['X-Length', '999']], h),
    ['body', 'hello0123456789abcdefghijklmnopqrstuvwxyz'],
    ['end', [['X-Checksum', 'abc'], ['X-Other', 'v']], len(h + body)],
  ], 'head');
});

test('chunk sizes: any number of leading zeros (as llhttp), at most 13 significant hex digits', () => {
  const h = 'POST /z HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n';
  const body = '00000000000000000005\r\nhello\r\n0000000000000000\r\n\r\n';
  playbook('request', h + body, [
    req('POST', '/z', [['Transfer-Encoding', 'chunked']], h),
    ['body', 'hello'],
    ['end', [], len(h + body)],
  ], 'head');
  const { evs } = feed('request', [Buffer.from(h + '10000000000000\r\n')]); // 14 significant digits: 2^52
  assert.ok(evs.some((e) => e[0] === 'error' && /bad chunk size/.test(String(e[1]))), JSON.stringify(evs));
});

test('chunked: "gzip, chunked" is chunked; empty chunked body without trailers', () => {
  const h = 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n';
  playbook('request', h + '0\r\n\r\n', [req('POST', '/', [['Transfer-Encoding', 'gzip'], ['Transfer-Encoding', 'Chunked']], h), ['end', [], len(h) + 5]], 'head');
});

test('identical repeated Content-Length values are one length', () => {
  const h = 'PUT /x HTTP/1.1\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\n';
  playbook('request', h + 'ok', [req('PUT', '/x', [['Content-Length', '2, 2'], ['content-length', '2']], h), ['body', 'ok'], ['end', [], len(h) + 2]], 'head');
});

test('empty lines before a request line are ignored (RFC 9112 §2.2) and counted in headBytes', () => {
  const h = '\r\n\r\nGET / HTTP/1.1\r\n\r\n';
  playbook('request', h, [req('GET', '/', [], h), ['end', [], len(h)]], 'head');
});

test('bare LF line endings are accepted', () => {
  const h = 'POST /lf HTTP/1.1\nX-Length: 1\nTransfer-Encoding: chunked\n\n';
  playbook('request', h + '2\nab\n0\n\n', [req('POST', '/lf', [['X-Length', '1'], ['Transfer-Encoding', 'chunked']], h), ['body', 'ab'], ['end', [], len(h) + 8]], 'head');
});

test('Expect: 100-continue request is an ordinary request', () => {
  const h = 'POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n';
  playbook('request', h + 'data', [req('POST', '/e', [['Expect', '100-continue'], ['Content-Length', '4']], h), ['body', 'data'], ['end', [], len(h) + 4]], 'head');
});

test('Upgrade request: bytes after it are held, not parsed, and handed over by upgrade()', () => {
  const h = 'GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
  const ws = '\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58';
  playbook('request', h + ws, [req('GET', '/ws', [['Host', 'h'], ['Upgrade', 'websocket'], ['Connection', 'Upgrade']], h), ['end', [], len(h)], ['held', ws]], 'upgraded', {
    after: (p) => {
      assert.equal(p.state, 'held');
      return p.upgrade();
    },
    afterInput: 'ignored after upgrade',
  });
});

test('Upgrade refused: resume() parses the held bytes as the next request', () => {
  const h = 'GET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\n';
  const n = 'POST /n HTTP/1.1\r\nContent-Length: 2\r\n\r\n';
  playbook('request', h + n + 'x', [req('GET', '/ws', [['Upgrade', 'h2c']], h), ['end', [], len(h)], req('POST', '/n', [['Content-Length', '2']], n), ['body', 'xy'], ['end', [], len(n) + 2]], 'head', {
    after: (p) => {
      assert.equal(p.state, 'held');
      p.resume();
    },
    afterInput: 'y',
  });
});

test('CONNECT request holds what follows; end() while held is a clean close', () => {
  const h = 'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n';
  playbook('request', h + '\x16\x03\x01', [req('CONNECT', 'api.test:443', [['Host', 'api.test:443']], h), ['end', [], len(h)]], 'done', { end: true });
});

test('held bytes beyond 64 KiB are dropped: upgrade() returns the first 64 KiB, resume() reports bad_http', () => {
  const h = Buffer.from('GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n');
  const big = Buffer.alloc(70 * 1024, 0x61);
  const up = feed('request', [h, big], { after: (p) => p.upgrade() });
  assert.equal((up.evs.at(-1) as ['held', string])[1].length, 64 * 1024);
  const res = feed('request', [h, big], { after: (p) => p.resume() });
  assert.deepEqual(res.evs.at(-1), ['error', 'bad_http: held bytes overflowed before the upgrade was refused']);
  assert.equal(res.state, 'failed');
});

test('end(): clean between messages; truncated head or body → bad_http', () => {
  assert.deepEqual(feed('request', [Buffer.from('GET / HTTP/1.1\r\n\r\n\r\n')], { end: true }).state, 'done');
  playbook('request', 'GET / HTTP/1.1\r\nHo', [['error', 'bad_http: truncated head']], 'failed', { end: true });
  const h = 'POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n';
  playbook('request', h + 'abc', [req('POST', '/', [['Content-Length', '10']], h), ['body', 'abc'], ['error', 'bad_http: truncated body (body-length)']], 'failed', { end: true });
  const c = 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n';
  playbook('request', c + '5\r\nab', [req('POST', '/', [['Transfer-Encoding', 'chunked']], c), ['body', 'ab'], ['error', 'bad_http: truncated body (chunk-data)']], 'failed', { end: true });
  // end() is idempotent
  const twice = feed('request', [Buffer.from(h)], { end: true, after: (p) => p.end() });
  assert.equal(twice.evs.filter((e) => e[0] === 'error').length, 1);
});

test('malformed requests → onError(bad_http) and the parser stays failed', () => {
  const cases: Array<[string, string]> = [
    ['\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 'bad request line'],
    ['GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n', 'obs-fold in header section'],
    ['GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n', 'obs-fold in header section'],
    ['POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', 'conflicting content-length values'],
    ['POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n', 'conflicting content-length values'],
    ['POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 'invalid content-length'],
    ['POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n', 'invalid content-length'],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'bad chunk size'],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n', 'bad chunk size'],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY', 'missing CRLF after chunk data'],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', 'request transfer-encoding without final chunked'],
    // CL.TE / TE.CL smuggling: an origin that frames by the length reads "GET /x" as a request of its own
    ['POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'both Transfer-Encoding and Content-Length'],
    ['POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n', 'both Transfer-Encoding and Content-Length'],
    ['GET / HTTP/1.1\r\nHost : a\r\n\r\n', 'bad header name'],
    ['GET / HTTP/1.1\r\nno colon\r\n\r\n', 'bad header line'],
    ['GET / HTTP/1.1\r\nX: a\rb\r\n\r\n', 'bare CR in head'],
    ['GET / HTTP/2.0\r\n\r\n', 'unsupported version'],
    ['GET  / HTTP/1.1\r\n\r\n', 'bad request line'],
  ];
  for (const [input, detail] of cases) {
    for (const [how, pieces] of splits(Buffer.from(input, 'latin1'))) {
      const got = feed('request', [...pieces, Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
      const errors = got.evs.filter((e) => e[0] === 'error');
      assert.equal(errors.length, 1, `${JSON.stringify(input)} ${how}`);
      assert.ok((errors[0][1] as string).startsWith(`bad_http: ${detail}`), `${JSON.stringify(input)} ${how}: ${errors[0][1]}`);
      assert.equal(got.evs.at(-1)![0], 'error', 'nothing is parsed after an error');
      assert.equal(got.state, 'failed');
    }
  }
});

test('header section over maxHeadBytes → bad_http, even when the end never comes', () => {
  const p = feed('request', [Buffer.from('GET / HTTP/1.1\r\n'), Buffer.from('X: ' + 'a'.repeat(300))], {});
  assert.equal(p.state, 'head');
  const errs: string[] = [];
  const parser = new Http1Parser('request', { onHead() {}, onBody() {}, onEnd() {}, onUpgrade() {}, onError: (_c, d) => errs.push(d) }, { maxHeadBytes: 256 });
  parser.push(Buffer.from('GET / HTTP/1.1\r\n'));
  parser.push(Buffer.from('X: ' + 'a'.repeat(300)));
  assert.deepEqual(errs, ['header section too large']);
  assert.equal(parser.state, 'failed');
  // default limit: 64 KiB of garbage without a line end
  const big = feed('request', [Buffer.alloc(65 * 1024, 0x41)]);
  assert.deepEqual(big.evs, [['error', 'bad_http: header section too large']]);
});

// ── responses ─────────────────────────────────────────────────────────────────────────────

test('response with Content-Length, then a pipelined HEAD response (no body despite CL) and a GET response', () => {
  const a = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n';
  const b = 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n';
  const c = 'HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\n';
  playbook('response', a + 'hi' + b + c + 'nop', [
    resp(200, 'OK', [['Content-Length', '2']], a), ['body', 'hi'], ['end', [], len(a) + 2],
    resp(200, 'OK', [['Content-Length', '1000']], b), ['end', [], len(b)],
    resp(404, 'Not Found', [['content-length', '3']], c), ['body', 'nop'], ['end', [], len(c) + 3],
  ], 'head', { expect: ['GET', 'head', 'GET'] });
});

test('204 and 304 have no body whatever the headers say', () => {
  const a = 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n';
  const b = 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n';
  playbook('response', a + b, [resp(204, 'No Content', [['Content-Length', '5']], a), ['end', [], len(a)], resp(304, 'Not Modified', [['Transfer-Encoding', 'chunked']], b), ['end', [], len(b)]], 'head');
});

test('100 Continue and 103 Early Hints are informational heads; the final response keeps the queued method', () => {
  const c = 'HTTP/1.1 100 Continue\r\n\r\n';
  const e = 'HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n';
  const f = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n';
  const g = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n';
  // HEAD first: if the 1xx had consumed it, the 200 would wrongly get a 4-byte body
  playbook('response', c + e + f + g + 'ok', [
    resp(100, 'Continue', [], c, true),
    resp(103, 'Early Hints', [['Link', '</s.css>; rel=preload']], e, true),
    resp(200, 'OK', [['Content-Length', '4']], f), ['end', [], len(f)],
    resp(200, 'OK', [['Content-Length', '2']], g), ['body', 'ok'], ['end', [], len(g) + 2],
  ], 'head', { expect: ['HEAD', 'POST'] });
});

test('101 Switching Protocols: onUpgrade gets the bytes after the head; nothing more is parsed', () => {
  const h = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';
  const frames = '\x81\x05Hello\x82\x00HTTP/1.1 200 OK\r\n\r\n';
  playbook('response', h + frames, [
    resp(101, 'Switching Protocols', [['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ['Sec-WebSocket-Accept', 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=']], h),
    ['upgraded', frames],
  ], 'upgraded', { expect: ['GET'] });
});

test('2xx to CONNECT upgrades; a 407 to CONNECT is an ordinary response', () => {
  const ok = 'HTTP/1.1 200 Connection established\r\n\r\n';
  playbook('response', ok + '\x16\x03\x03', [resp(200, 'Connection established', [], ok), ['upgraded', '\x16\x03\x03']], 'upgraded', { expect: ['CONNECT'] });
  const no = 'HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\n';
  playbook('response', no + 'no', [resp(407, 'Proxy Authentication Required', [['Content-Length', '2']], no), ['body', 'no'], ['end', [], len(no) + 2]], 'head', { expect: ['CONNECT'] });
});

test('chunked response with trailers, then a response read until close (end() completes it)', () => {
  const a = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
  const ab = 'b\r\ndata: one\n\n\r\nB\r\ndata: two\n\n\r\n0\r\nServer-Timing: x;dur=1\r\n\r\n';
  const b = 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n';
  playbook('response', a + ab + b + 'until the very end', [
    resp(200, 'OK', [['Content-Type', 'text/event-stream'], ['Transfer-Encoding', 'chunked']], a),
    ['body', 'data: one\n\ndata: two\n\n'],
    ['end', [['Server-Timing', 'x;dur=1']], len(a + ab)],
    ['head', { kind: 'response', status: 200, statusText: 'OK', version: 'HTTP/1.0', headers: [['Content-Type', 'text/plain']], headBytes: len(b), informational: false }],
    ['body', 'until the very end'],
    ['end', [], len(b) + 18],
  ], 'done', { end: true });
});

test('response: TE not ending in chunked reads until close; status line without reason', () => {
  const h = 'HTTP/1.1 200\r\nTransfer-Encoding: gzip\r\n\r\n';
  playbook('response', h + '\x1f\x8b\x08rest', [resp(200, '', [['Transfer-Encoding', 'gzip']], h), ['body', '\x1f\x8b\x08rest'], ['end', [], len(h) + 7]], 'done', { end: true });
});

test('response: truncated chunked body or empty close-delimited body', () => {
  const h = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
  playbook('response', h + '4\r\nab', [resp(200, 'OK', [['Transfer-Encoding', 'chunked']], h), ['body', 'ab'], ['error', 'bad_http: truncated body (chunk-data)']], 'failed', { end: true });
  playbook('response', h + '4\r\nabcd\r\n', [resp(200, 'OK', [['Transfer-Encoding', 'chunked']], h), ['body', 'abcd'], ['error', 'bad_http: truncated body (chunk-size)']], 'failed', { end: true });
  const u = 'HTTP/1.1 500 Oops\r\n\r\n';
  playbook('response', u, [resp(500, 'Oops', [], u), ['end', [], len(u)]], 'done', { end: true });
});

test('malformed responses → onError(bad_http)', () => {
  for (const [input, detail] of [
    ['HTTP/1.1 2000 OK\r\n\r\n', 'bad status line'],
    ['HTTP/1.1 099 Low\r\n\r\n', 'bad status code'],
    ['SSH-2.0-OpenSSH_9.2\r\n\r\n', 'bad status line'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'conflicting content-length values'],
    ['HTTP/1.1 200 OK\r\nA: b\r\n  c\r\n\r\n', 'obs-fold in header section'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1g\r\n', 'bad chunk size'],
    // a client that frames by the length (node:http refuses it) splits responses elsewhere
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n', 'both Transfer-Encoding and Content-Length'],
  ]) {
    for (const [how, pieces] of splits(Buffer.from(input))) {
      const got = feed('response', pieces);
      assert.equal(got.evs.at(-1)![0], 'error', how);
      assert.ok((got.evs.at(-1)![1] as string).startsWith(`bad_http: ${detail}`), `${input} ${how}: ${got.evs.at(-1)![1]}`);
    }
  }
});

test('non-ASCII header values: UTF-8 heads decode as UTF-8, other bytes byte-for-char', () => {
  const u = Buffer.from('HTTP/1.1 200 OK\r\nX-Title: café ✓\r\nContent-Length: 0\r\n\r\n', 'utf8');
  assert.deepEqual((feed('response', [u]).evs[0][1] as ResponseHead).headers[0], ['X-Title', 'café ✓']);
  const l = Buffer.from('HTTP/1.1 200 OK\r\nX-Title: caf\xe9\r\nContent-Length: 0\r\n\r\n', 'latin1');
  assert.deepEqual((feed('response', [l]).evs[0][1] as ResponseHead).headers[0], ['X-Title', 'caf\xe9']);
});

test('a handler may upgrade the request parser from within a response callback (tap wiring)', () => {
  let handed: Buffer | undefined;
  const reqP = new Http1Parser('request', { onHead() {}, onBody() {}, onEnd() {}, onUpgrade() {}, onError: (_c, d) => assert.fail(d) });
  const respP = new Http1Parser('response', {
    onHead() {},
    onBody() {},
    onEnd() {},
    onUpgrade: () => {
      handed = reqP.upgrade();
    },
    onError: (_c, d) => assert.fail(d),
  });
  reqP.push(Buffer.from('GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x80abcd', 'latin1'));
  respP.expectResponseTo('GET');
  respP.push(Buffer.from('HTTP/1.1 101 Switching Protocols\r\n\r\n'));
  assert.equal(handed?.toString('latin1'), '\x81\x80abcd');
  assert.equal(reqP.state, 'upgraded');
});

// ── the hot path ──────────────────────────────────────────────────────────────────────────

test('100 MiB chunked body: onBody hands out subarrays of the pushed Buffers, never copies', () => {
  const TOTAL = 100 * 1024 * 1024;
  const CHUNK = 100_003; // chunk boundaries fall anywhere inside the pushed reads
  const READ = 65_537;
  // The wire stream, generated piecewise so the test itself holds no 100 MiB buffer.
  const head = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  function* wire(): Generator<Buffer> {
    yield head;
    for (let sent = 0; sent < TOTAL; ) {
      const n = Math.min(CHUNK, TOTAL - sent);
      yield Buffer.from(n.toString(16) + ';i=' + sent + '\r\n');
      // zeros, with a marker byte at every 4096th position of the whole body
      const payload = Buffer.alloc(n);
      for (let g = Math.ceil(sent / 4096) * 4096; g < sent + n; g += 4096) payload[g - sent] = (g / 4096) & 0xff;
      yield payload;
      yield Buffer.from('\r\n');
      sent += n;
    }
    yield Buffer.from('0\r\n\r\n');
  }
  let current: Buffer = Buffer.alloc(0);
  let bodyBytes = 0;
  let calls = 0;
  let sum = 0;
  let ended: { wireBytes: number } | undefined;
  let wireTotal = 0;
  const p = new Http1Parser('response', {
    onHead() {},
    onBody: (d) => {
      calls++;
      assert.equal(d.buffer, current.buffer, 'onBody data is a view of the pushed Buffer');
      assert.ok(d.byteOffset >= current.byteOffset && d.byteOffset + d.length <= current.byteOffset + current.length);
      // checksum over the marker bytes (body position bodyBytes + i)
      for (let i = (4096 - (bodyBytes % 4096)) % 4096; i < d.length; i += 4096) sum = (sum + d[i]) | 0;
      bodyBytes += d.length;
    },
    onEnd: (i) => (ended = i),
    onUpgrade: () => assert.fail('upgrade'),
    onError: (_c, d) => assert.fail(d),
  });
  // Re-cut the wire into READ-sized reads, each its own ArrayBuffer (like socket reads).
  let pending: Buffer[] = [];
  let pendingLen = 0;
  const flush = (n: number) => {
    const all = Buffer.concat(pending, pendingLen);
    current = Buffer.allocUnsafeSlow(n);
    all.copy(current, 0, 0, n);
    pending = n < all.length ? [all.subarray(n)] : [];
    pendingLen = all.length - n;
    wireTotal += n;
    p.push(current);
  };
  for (const piece of wire()) {
    pending.push(piece);
    pendingLen += piece.length;
    while (pendingLen >= READ) flush(READ);
  }
  if (pendingLen > 0) flush(pendingLen);
  let expectSum = 0;
  for (let g = 0; g < TOTAL; g += 4096) expectSum = (expectSum + ((g / 4096) & 0xff)) | 0;
  assert.equal(bodyBytes, TOTAL);
  assert.equal(sum, expectSum);
  assert.equal(ended?.wireBytes, wireTotal);
  assert.ok(calls >= Math.ceil(TOTAL / READ));
  assert.equal(p.state, 'head');
});
