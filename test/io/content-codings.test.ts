// Real-world Content-Encoding through the real proxy: a raw TCP origin sends exactly the bytes a
// server of each kind sends (raw DEFLATE labelled `deflate`, concatenated gzip members, stacked and
// odd-case codings, zstd from the reference `zstd` CLI, a body cut by the close, a bomb, bodiless
// statuses), and agents' compressed request bodies. Each record must hold the decoded content (or
// the bytes as coded with a clear, counted error), and the client must read the origin's bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { startGreytap, apiGet, waitFor, type Greytap } from '../helpers/harness.js';

let g: Greytap;
let origin: net.Server;
const sent = new Map<string, Buffer>(); // path → response bytes the origin wrote

const TEXT = Buffer.from(Array.from({ length: 4000 }, (_, i) => `word${(i * 7919) % 1009}`).join(' '));
const LONG_TEXT = Buffer.from(Array.from({ length: 60_000 }, (_, i) => `word${(i * 7919) % 100_003}`).join(' '));
const gz = (b: Buffer | string) => zlib.gzipSync(b);
/** What the reference encoder (zstd 1.5, installed by test/setup.sh) makes of `b`, read from a pipe (no size known). */
const zstd = (b: Buffer | string, ...args: string[]) => execFileSync('zstd', ['-q', '-c', ...args], { input: b });

interface Reply { status?: number; headers: [string, string][]; body: Buffer; framing?: 'length' | 'chunked' | 'close' | 'none'; cutAt?: number }
const REPLIES: Record<string, Reply> = {
  '/deflate-zlib': { headers: [['Content-Encoding', 'deflate']], body: zlib.deflateSync(TEXT) },
  '/deflate-raw': { headers: [['Content-Encoding', 'deflate']], body: zlib.deflateRawSync(TEXT) },
  '/gzip-members': { headers: [['Content-Encoding', 'gzip']], body: Buffer.concat([gz('one|'), gz('two|'), gz('three')]) },
  '/x-gzip': { headers: [['Content-Encoding', 'x-gzip']], body: gz(TEXT) },
  '/odd-case': { headers: [['content-encoding', ' GZip ']], body: gz(TEXT) },
  '/stacked': { headers: [['Content-Encoding', 'gzip, br']], body: zlib.brotliCompressSync(gz(TEXT)) },
  '/stacked-lines': { headers: [['Content-Encoding', 'gzip'], ['Content-Encoding', 'br']], body: zlib.brotliCompressSync(gz(TEXT)) },
  '/br': { headers: [['Content-Encoding', 'br']], body: zlib.brotliCompressSync(TEXT) },
  '/identity': { headers: [['Content-Encoding', 'identity']], body: TEXT },
  '/zstd': { headers: [['Content-Encoding', 'zstd']], body: zstd(TEXT, '-3') },
  '/zstd-sized': { headers: [['Content-Encoding', 'zstd']], body: zstd(TEXT, '-19', `--stream-size=${TEXT.length}`) }, // one segment, content size in the header
  '/zstd-frames': { headers: [['Content-Encoding', 'zstd']], body: Buffer.concat([zstd(TEXT.subarray(0, 1000), '--no-check'), zstd(TEXT.subarray(1000), '-1')]) },
  '/zstd-chunked': { headers: [['Content-Encoding', 'zstd']], body: zstd(TEXT), framing: 'chunked' },
  '/zstd-long': { headers: [['Content-Encoding', 'zstd']], body: zstd(TEXT, '--long=27') }, // a 128 MiB window
  '/zstd-corrupt': { headers: [['Content-Encoding', 'zstd']], body: Buffer.concat([zstd(TEXT).subarray(0, 40), Buffer.alloc(200, 0xa5)]) },
  '/zstd-cut': { headers: [['Content-Encoding', 'zstd']], body: zstd(LONG_TEXT), cutAt: 0.5 }, // several 128 KiB blocks: the half holds whole ones
  '/zstd-bomb': { headers: [['Content-Encoding', 'zstd']], body: zstd(Buffer.alloc(40 << 20)) },
  '/compress': { headers: [['Content-Encoding', 'compress']], body: Buffer.from('1f9d90', 'hex') },
  '/chunked-gzip': { headers: [['Content-Encoding', 'gzip']], body: gz(TEXT), framing: 'chunked' },
  '/close-gzip': { headers: [['Content-Encoding', 'gzip'], ['Connection', 'close']], body: gz(TEXT), framing: 'close' },
  '/cut-gzip': { headers: [['Content-Encoding', 'gzip']], body: gz(TEXT), cutAt: 0.5 },
  '/cut-br-chunked': { headers: [['Content-Encoding', 'br']], body: zlib.brotliCompressSync(TEXT), framing: 'chunked', cutAt: 0.5 },
  '/bomb': { headers: [['Content-Encoding', 'gzip']], body: gz(Buffer.alloc(40 << 20)) },
  '/no-content': { status: 204, headers: [['Content-Encoding', 'gzip']], body: Buffer.alloc(0), framing: 'none' },
  '/not-modified': { status: 304, headers: [['Content-Encoding', 'gzip'], ['Content-Length', '40']], body: Buffer.alloc(0), framing: 'none' },
  '/head': { headers: [['Content-Encoding', 'gzip'], ['Content-Length', '40']], body: Buffer.alloc(0), framing: 'none' },
};

function reply(s: net.Socket, path: string): void {
  const r = REPLIES[path];
  if (!r) return void s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  const framing = r.framing ?? 'length';
  const headers = [...r.headers];
  if (framing === 'length') headers.push(['Content-Length', String(r.body.length)]);
  if (framing === 'chunked') headers.push(['Transfer-Encoding', 'chunked']);
  const half = r.body.length >> 1;
  const body = framing === 'chunked'
    ? Buffer.concat([r.body.subarray(0, half), r.body.subarray(half)].map((c) => Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')])).concat(Buffer.from('0\r\n\r\n')))
    : r.body;
  const head = Buffer.from(`HTTP/1.1 ${r.status ?? 200} X\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
  const wire = Buffer.concat([head, r.cutAt ? body.subarray(0, Math.floor(body.length * r.cutAt)) : body]);
  sent.set(path, wire);
  if (r.cutAt) return void s.write(wire, () => setTimeout(() => s.destroy(), 50));
  if (framing === 'close') return void s.end(wire);
  s.write(wire);
}

before(async () => {
  origin = net.createServer((s) => {
    let acc = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (d) => {
      acc = Buffer.concat([acc, d]);
      for (;;) {
        const end = acc.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = acc.subarray(0, end).toString('latin1');
        // a chunked request body here is one whole message (the tests send it in one write)
        const last = /transfer-encoding: *chunked/i.test(head) ? acc.indexOf('\r\n0\r\n\r\n', end) : -1;
        const len = last >= 0 ? last + 7 - (end + 4) : Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (acc.length < end + 4 + len) return;
        acc = acc.subarray(end + 4 + len);
        reply(s, head.split(' ')[1].replace(/^http:\/\/[^/]+/, ''));
      }
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  g = await startGreytap(['--map', `codings.test:80=127.0.0.1:${(origin.address() as net.AddressInfo).port}`, '--max-body', '1MiB']);
});
after(async () => { await g?.stop(); origin?.close(); });

/** One request through the HTTP proxy on its own connection; resolves with every byte the client read. */
function request(method: string, path: string, extraHead = '', body: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const [host, port] = g.httpProxy.split(':');
  return new Promise((resolve) => {
    const s = net.connect(Number(port), host, () => s.write(Buffer.concat([Buffer.from(`${method} http://codings.test${path} HTTP/1.1\r\nHost: codings.test\r\n${extraHead}\r\n`), body])));
    const got: Buffer[] = [];
    s.on('data', (d) => {
      got.push(d);
      // every reply here is one response: done once the origin's bytes are all in (or the close)
      const wire = sent.get(path);
      if (wire && !REPLIES[path]?.cutAt && REPLIES[path]?.framing !== 'close' && Buffer.concat(got).length >= wire.length) s.end();
      if (!REPLIES[path] && Buffer.concat(got).includes('\r\n\r\nok')) s.end();
    });
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(got)));
  });
}

async function recordOf(path: string): Promise<any> {
  const t = await waitFor(async () => {
    await g.drain();
    return (await apiGet(g, '/api/transactions?kind=HTTP&limit=1000')).items.find((x: any) => x.path === path);
  }, `record of ${path}`);
  return apiGet(g, `/api/transactions/${t.id}`);
}

async function counter(name: string, label: string): Promise<number> {
  const text = await (await fetch(g.api + '/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`greytap_${name}{${label}}`));
  return Number(line?.split(' ')[1] ?? NaN);
}

async function fetched(path: string, method = 'GET') {
  const got = await request(method, path);
  assert.deepEqual(got, sent.get(path), `${path}: the client read exactly the origin's bytes`);
  return recordOf(path);
}

test('deflate (zlib-wrapped and raw), gzip members, x-gzip, odd case, stacked codings, br, identity: stored decoded', async () => {
  for (const path of ['/deflate-zlib', '/deflate-raw', '/x-gzip', '/odd-case', '/stacked', '/stacked-lines', '/br', '/identity', '/chunked-gzip', '/close-gzip']) {
    const r = await fetched(path);
    assert.equal(r.error, undefined, `${path}: ${r.error} ${r.errorDetail ?? ''}`);
    assert.equal(r.respBody, TEXT.toString(), path);
    assert.equal(r.respBodySize, TEXT.length, path);
    assert.equal(r.truncated, false, path);
  }
  const members = await fetched('/gzip-members');
  assert.equal(members.respBody, 'one|two|three', 'every gzip member is decoded');
});

test('zstd (RFC 8878) from the reference encoder, one frame or several, sized or not, chunked: stored decoded', async () => {
  for (const path of ['/zstd', '/zstd-sized', '/zstd-frames', '/zstd-chunked']) {
    const r = await fetched(path);
    assert.equal(r.error, undefined, `${path}: ${r.error} ${r.errorDetail ?? ''}`);
    assert.equal(r.respBody, TEXT.toString(), path);
    assert.equal(r.truncated, false, path);
  }
});

test('zstd refused: a window over 8 MiB (RFC 9659), a corrupt frame, an unknown coding: the body as coded, decode_failed, counted', async () => {
  const before = await counter('decode_errors_total', 'kind="decode_failed"');
  const cases: [string, RegExp][] = [
    ['/zstd-long', /^content-encoding zstd: zstd window of 134217728 bytes, over the 8388608 accepted/],
    ['/zstd-corrupt', /^content-encoding zstd: /],
    ['/compress', /^unsupported content-encoding: compress$/],
  ];
  for (const [path, detail] of cases) {
    const r = await fetched(path);
    assert.equal(r.error, 'decode_failed', path);
    assert.match(r.errorDetail, detail, path);
    assert.deepEqual(Buffer.from(r.respBodyBase64, 'base64'), REPLIES[path].body, path);
  }
  await waitFor(async () => (await counter('decode_errors_total', 'kind="decode_failed"')) === before + cases.length, 'decode_failed counted');
});

test('a compressed body cut by the close: what decodes of it is kept, truncated_stream, no decode error', async () => {
  const decodeFailed = await counter('decode_errors_total', 'kind="decode_failed"');
  for (const path of ['/cut-gzip', '/cut-br-chunked', '/zstd-cut']) {
    const r = await fetched(path);
    assert.equal(r.error, 'truncated_stream', path);
    assert.equal(r.truncated, true, path);
    assert.equal(r.respBytes, sent.get(path)!.length, `${path}: respBytes counts the head and the part of the body that came (${r.respBytes} of ${sent.get(path)!.length})`);
    const whole = (path === '/zstd-cut' ? LONG_TEXT : TEXT).toString();
    assert.ok(r.respBody.length > 1000 && whole.startsWith(r.respBody), `${path}: a decoded prefix (${r.respBody.length} chars)`);
  }
  assert.equal(await counter('decode_errors_total', 'kind="decode_failed"'), decodeFailed);
});

test('a gzip or zstd bomb is cut at --max-body: too_large, counted, the client still reads every byte', async () => {
  for (const path of ['/bomb', '/zstd-bomb']) {
    const before = await counter('capture_dropped_total', 'reason="too_large"');
    const r = await fetched(path);
    assert.equal(r.error, 'too_large', path);
    assert.equal(r.truncated, true, path);
    assert.equal(r.respBodySize, 1 << 20, path);
    assert.equal(await counter('capture_dropped_total', 'reason="too_large"'), before + 1, path);
  }
});

test('204, 304 and HEAD answers carrying Content-Encoding: no body, no error', async () => {
  for (const [path, method] of [['/no-content', 'GET'], ['/not-modified', 'GET'], ['/head', 'HEAD']]) {
    const r = await fetched(path, method);
    assert.equal(r.error, undefined, `${path}: ${r.error} ${r.errorDetail ?? ''}`);
    assert.equal(r.respBody ?? '', '', path);
  }
});

test('compressed request bodies (gzip, br, gzip under chunked, zstd as codex sends them) are stored decoded', async () => {
  const json = (s: string) => JSON.stringify({ model: 'gpt-x', input: s });
  const chunked = (b: Buffer) => Buffer.concat([Buffer.from(`5\r\n`), b.subarray(0, 5), Buffer.from(`\r\n${(b.length - 5).toString(16)}\r\n`), b.subarray(5), Buffer.from('\r\n0\r\n\r\n')]);
  const cases: [string, string, Buffer, string][] = [
    ['/up-gzip', 'Content-Encoding: gzip\r\n', gz(json('gzip')), json('gzip')],
    ['/up-br', 'Content-Encoding: br\r\n', zlib.brotliCompressSync(json('br')), json('br')],
    ['/up-gzip-chunked', 'Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n', chunked(gz(json('chunked'))), json('chunked')],
    ['/up-zstd', 'Content-Encoding: zstd\r\n', zstd(json('zstd'), '-3'), json('zstd')],
  ];
  for (const [path, head, body, want] of cases) {
    const got = await request('POST', path, head + (head.includes('chunked') ? '' : `Content-Length: ${body.length}\r\n`), body);
    assert.match(got.toString('latin1'), /\r\n\r\nok$/);
    const r = await recordOf(path);
    assert.equal(r.error, undefined, `${path}: ${r.error} ${r.errorDetail ?? ''}`);
    assert.equal(r.reqBody, want, path);
  }
});
