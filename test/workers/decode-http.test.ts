// The worker-side HTTP decoder with real compressed bodies made by node:zlib, plus the shared body
// helpers and the SSE parser it relies on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { decodeHttp } from '../../src/workers/decode-http.js';
import { bodyFields, isValidUtf8, utf8Boundary } from '../../src/workers/body.js';
import { SseParser, parseSse } from '../../src/workers/sse.js';
import type { HttpCaptureTask } from '../../src/workers/tasks.js';
import type { Header } from '../../src/records.js';

const MiB = 1024 * 1024;

function ab(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function task(over: Partial<HttpCaptureTask> & { resp?: Buffer; req?: Buffer } = {}): HttpCaptureTask {
  const { resp, req, ...rest } = over;
  return {
    type: 'http',
    origin: { conn: 'c1', host: 'api.test', port: 443, scheme: 'https', path: '/v1/responses' },
    method: 'POST',
    target: '/v1/responses?x=1',
    httpVersion: 'HTTP/1.1',
    reqHeaders: [['Host', 'api.test']],
    reqBody: req ? new Uint8Array(ab(req)) : undefined,
    reqBytes: 100,
    reqBodyBytes: req?.length ?? 0,
    status: 200,
    statusText: 'OK',
    respHeaders: [],
    respBody: resp ? new Uint8Array(ab(resp)) : undefined,
    respBytes: 200,
    respBodyBytes: resp?.length ?? 0,
    truncated: false,
    startTs: 1_700_000_000_000,
    durationMs: 12,
    lastByteAt: 0,
    maxBody: 16 * MiB,
    ...rest,
  };
}

const enc = (coding: string, more: Header[] = []): Header[] => [['Content-Encoding', coding], ...more];
const te = (coding: string, more: Header[] = []): Header[] => [['Transfer-Encoding', coding], ...more];
const text = 'The quick brown fox — ünïcödé — jumps over the lazy dog. '.repeat(200);

test('record copies origin, method, status, headers, sizes, timing; ts = startTs; no body fields without bodies', () => {
  const t = task({ reqHeaders: [['Host', 'api.test'], ['Authorization', 'Bearer sk-secret']], respHeaders: [['Content-Length', '0']] });
  const { record, metrics } = decodeHttp(t, 'id-1');
  assert.deepEqual(record, {
    id: 'id-1', ts: 1_700_000_000_000, kind: 'HTTP', conn: 'c1', host: 'api.test', port: 443, scheme: 'https', path: '/v1/responses',
    method: 'POST', httpVersion: 'HTTP/1.1', status: 200, statusText: 'OK',
    reqHeaders: [['Host', 'api.test'], ['Authorization', 'Bearer sk-secret']], // not redacted here: the store does it
    respHeaders: [['Content-Length', '0']], reqBytes: 100, respBytes: 200, durationMs: 12, truncated: false,
  });
  assert.deepEqual(metrics, {});
  // no response at all, with the tap's error kept
  const none = decodeHttp(task({ status: undefined, statusText: undefined, error: 'truncated_stream', errorDetail: 'connection closed before a response' }), 'id-2').record;
  assert.equal(none.status, undefined);
  assert.equal(none.error, 'truncated_stream');
  assert.equal(none.errorDetail, 'connection closed before a response');
});

test('plain text bodies; non-UTF-8 body → bodyBase64', () => {
  const bin = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe]);
  const { record } = decodeHttp(task({ req: Buffer.from('{"model":"gpt"}'), resp: bin, respHeaders: [['Content-Type', 'image/png']] }), 'x');
  assert.equal(record.reqBody, '{"model":"gpt"}');
  assert.equal(record.reqBodySize, 15);
  assert.equal(record.respBody, undefined);
  assert.equal(record.respBodyBase64, bin.toString('base64'));
  assert.equal(record.respBodySize, bin.length);
});

test('gzip, x-gzip, br, deflate (zlib-wrapped and raw) and stacked codings are undone', () => {
  const raw = Buffer.from(text);
  const cases: Array<[string, Buffer]> = [
    ['gzip', zlib.gzipSync(raw)],
    ['x-gzip', zlib.gzipSync(raw)],
    ['br', zlib.brotliCompressSync(raw)],
    ['deflate', zlib.deflateSync(raw)],
    ['deflate', zlib.deflateRawSync(raw)], // what some servers send for "deflate"
    ['gzip, br', zlib.brotliCompressSync(zlib.gzipSync(raw))], // applied in order: gzip, then br
    ['identity, GZIP', zlib.gzipSync(raw)],
  ];
  for (const [coding, body] of cases) {
    const { record, metrics } = decodeHttp(task({ resp: body, respHeaders: enc(coding) }), 'x');
    assert.equal(record.respBody, text, coding);
    assert.equal(record.respBodySize, raw.length, coding);
    assert.equal(record.error, undefined, coding);
    assert.equal(record.truncated, false, coding);
    assert.deepEqual(metrics, {}, coding);
  }
  // request bodies too (e.g. a client that gzips its JSON)
  const { record } = decodeHttp(task({ req: zlib.gzipSync(Buffer.from('{"a":1}')), reqHeaders: enc('gzip') }), 'x');
  assert.equal(record.reqBody, '{"a":1}');
});

test('invalid gzip → decode_failed, raw body kept, counted', () => {
  const bad = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3]), Buffer.from('this is not deflate data at all')]);
  const { record, metrics } = decodeHttp(task({ resp: bad, respHeaders: enc('gzip') }), 'x');
  assert.equal(record.error, 'decode_failed');
  assert.match(record.errorDetail ?? '', /^content-encoding gzip: /);
  assert.equal(record.respBodyBase64, bad.toString('base64'));
  assert.equal(record.respBodySize, bad.length);
  assert.deepEqual(metrics, { decodeErrors: { decode_failed: 1 } });
  // a gzip stream cut short although the capture was complete is also corrupt
  const cut = zlib.gzipSync(Buffer.from(text)).subarray(0, 100);
  assert.equal(decodeHttp(task({ resp: cut, respHeaders: enc('gzip') }), 'x').record.error, 'decode_failed');
});

test('a leading UTF-8 BOM is part of the text body, small or large, plain or gzip (nothing of the bytes is lost)', () => {
  for (const payload of ['\ufeff{"a":1}', '\ufeff' + 'x'.repeat(5000)]) {
    for (const [coding, body] of [['', Buffer.from(payload)], ['gzip', zlib.gzipSync(payload)]] as const) {
      const { record } = decodeHttp(task({ resp: body, respHeaders: coding ? enc(coding, [['Content-Type', 'application/json']]) : [['Content-Type', 'application/json']] }), 'x');
      assert.equal(record.respBody, payload, `${coding || 'identity'}, ${payload.length} chars`);
      assert.equal(Buffer.byteLength(record.respBody!), record.respBodySize);
    }
  }
  // a request body too; and an event stream still parses (the parser drops the one BOM)
  assert.equal(decodeHttp(task({ req: Buffer.from('\ufeffhi') }), 'x').record.reqBody, '\ufeffhi');
  const sse = decodeHttp(task({ resp: Buffer.from('\ufeffdata: a\n\n'), respHeaders: [['Content-Type', 'text/event-stream']] }), 'x').record;
  assert.equal(sse.respBody, '\ufeffdata: a\n\n');
  assert.deepEqual(sse.respEvents, [{ data: 'a' }]);
  assert.deepEqual(bodyFields(Buffer.from('\ufeffab'), 100), { body: '\ufeffab', size: 5, truncated: false, invalidUtf8: false });
});

test('unknown content-encoding → raw kept, decode_failed', () => {
  const { record, metrics } = decodeHttp(task({ resp: Buffer.from('LZW?'), respHeaders: enc('compress') }), 'x');
  assert.equal(record.respBody, 'LZW?');
  assert.equal(record.error, 'decode_failed');
  assert.equal(record.errorDetail, 'unsupported content-encoding: compress');
  assert.deepEqual(metrics, { decodeErrors: { decode_failed: 1 } });
});

test('transfer codings other than chunked are undone in reverse order, then the content codings', () => {
  const raw = Buffer.from(text);
  const gz = zlib.gzipSync(raw);
  const cases: Array<[Header[], Buffer]> = [
    [te('gzip, chunked'), gz], // the tap removed the chunked framing
    [te('x-gzip,CHUNKED'), gz],
    [te('gzip'), gz], // no chunked: the body ended at the close
    [te('deflate, chunked'), zlib.deflateSync(raw)],
    [te('br, chunked'), zlib.brotliCompressSync(raw)],
    [[['Transfer-Encoding', 'GZip'], ['transfer-encoding', 'identity , br,\tChunked']], zlib.brotliCompressSync(gz)],
    // the origin's content coding comes first, the hop's transfer codings after it
    [te('gzip, chunked', enc('br')), zlib.gzipSync(zlib.brotliCompressSync(raw))],
  ];
  for (const [headers, body] of cases) {
    const what = JSON.stringify(headers);
    const { record, metrics } = decodeHttp(task({ resp: body, respHeaders: headers }), 'x');
    assert.equal(record.respBody, text, what);
    assert.equal(record.respBodySize, raw.length, what);
    assert.equal(record.error, undefined, what);
    assert.deepEqual(metrics, {}, what);
  }
  const { record } = decodeHttp(task({ req: zlib.gzipSync('{"a":1}'), reqHeaders: te('gzip, chunked') }), 'x');
  assert.equal(record.reqBody, '{"a":1}');
});

test('a transfer coding that cannot be undone: the de-chunked bytes kept raw, decode_failed, counted once', () => {
  const unknown = decodeHttp(task({ resp: Buffer.from('LZW?'), respHeaders: te('compress, chunked', enc('gzip')) }), 'x');
  assert.equal(unknown.record.respBody, 'LZW?');
  assert.equal(unknown.record.error, 'decode_failed');
  assert.equal(unknown.record.errorDetail, 'unsupported transfer-encoding: compress');
  assert.deepEqual(unknown.metrics, { decodeErrors: { decode_failed: 1 } });
  // a chunked that is not the last coding is not framing, so nothing removed it
  const inner = Buffer.from('4\r\nLZW?\r\n0\r\n\r\n');
  const notLast = decodeHttp(task({ resp: zlib.gzipSync(inner), respHeaders: te('chunked, gzip') }), 'x').record;
  assert.equal(notLast.errorDetail, 'unsupported transfer-encoding: chunked');
  assert.equal(notLast.respBodyBase64, zlib.gzipSync(inner).toString('base64'));
  const bad = Buffer.from('not gzip at all');
  const corrupt = decodeHttp(task({ resp: bad, respHeaders: te('gzip, chunked') }), 'x').record;
  assert.equal(corrupt.error, 'decode_failed');
  assert.match(corrupt.errorDetail ?? '', /^transfer-encoding gzip: /);
  assert.equal(corrupt.respBody, 'not gzip at all');
  // transfer codings undone, the content coding not: the content as the origin coded it
  const content = decodeHttp(task({ resp: zlib.gzipSync('LZW?'), respHeaders: te('gzip, chunked', enc('compress')) }), 'x');
  assert.equal(content.record.respBody, 'LZW?');
  assert.equal(content.record.errorDetail, 'unsupported content-encoding: compress');
  assert.deepEqual(content.metrics, { decodeErrors: { decode_failed: 1 } });
});

test('a transfer-coded bomb is cut at maxBody like a content-coded one', () => {
  const bomb = zlib.gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
  for (const headers of [te('gzip, chunked'), te('gzip, chunked', enc('gzip'))]) {
    const body = headers.length === 1 ? bomb : zlib.gzipSync(bomb);
    const { record, metrics } = decodeHttp(task({ resp: body, respHeaders: headers, maxBody: MiB }), 'x');
    assert.equal(record.truncated, true);
    assert.equal(record.error, 'too_large');
    assert.equal(record.respBody?.length, MiB);
    assert.deepEqual(metrics, { dropped: { too_large: 1 } });
  }
});

test('a decode error does not replace the error the tap already set', () => {
  const { record, metrics } = decodeHttp(task({ resp: Buffer.from('x'), respHeaders: enc('bogus'), error: 'bad_http', errorDetail: 'obs-fold' }), 'x');
  assert.equal(record.error, 'bad_http');
  assert.equal(record.errorDetail, 'obs-fold');
  assert.deepEqual(metrics, { decodeErrors: { decode_failed: 1 } });
});

test('capture cut by --max-body: the compressed prefix is decoded as far as it goes', () => {
  const full = zlib.gzipSync(Buffer.from(text));
  const copied = full.subarray(0, Math.floor(full.length / 2));
  const { record } = decodeHttp(task({ resp: copied, respBodyBytes: full.length, respHeaders: enc('gzip'), truncated: true, error: 'too_large' }), 'x');
  assert.equal(record.truncated, true);
  assert.equal(record.error, 'too_large');
  assert.ok(record.respBody && record.respBody.length > 0 && text.startsWith(record.respBody), 'a prefix of the text');
});

test('SSE response (gzip, chunked already removed) → respEvents', () => {
  const stream = ': keep-alive\r\n\r\nevent: response.created\r\nid: 1\r\ndata: {"type":"response.created"}\r\n\r\n' +
    'event: response.output_text.delta\ndata: {"delta":"Hel"}\ndata: {"delta":"lo"}\n\n' + 'data: [DONE]\r\rdata: cut short';
  const { record } = decodeHttp(task({ resp: zlib.gzipSync(Buffer.from(stream)), respHeaders: [['Content-Type', 'Text/Event-Stream; charset=utf-8'], ['Content-Encoding', 'gzip']] }), 'x');
  assert.equal(record.respBody, stream);
  assert.deepEqual(record.respEvents, [
    { event: 'response.created', data: '{"type":"response.created"}', id: '1' },
    { event: 'response.output_text.delta', data: '{"delta":"Hel"}\n{"delta":"lo"}', id: '1' },
    { data: '[DONE]', id: '1' },
    { data: 'cut short', id: '1' },
  ]);
  assert.equal(decodeHttp(task({ resp: Buffer.from('data: x\n\n'), respHeaders: [['Content-Type', 'application/json']] }), 'x').record.respEvents, undefined);
});

/** Growth of RSS / ArrayBuffer memory across a synchronous call (RSS rarely shrinks, so it reflects the peak). */
function memoryGrowth(fn: () => void): number {
  const before = process.memoryUsage();
  fn();
  const after = process.memoryUsage();
  return Math.max(after.rss - before.rss, after.arrayBuffers - before.arrayBuffers);
}

test('a gzip bomb expanding to 1 GiB is cut at maxBody: truncated, too_large, bounded memory', () => {
  // 16 gzip members of 64 MiB of zeros each (gunzip reads concatenated members): ~1 MiB on the wire.
  const member = zlib.gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
  const bomb = Buffer.concat(Array(16).fill(member));
  assert.ok(bomb.length < 2 * MiB);
  let result!: ReturnType<typeof decodeHttp>;
  const grew = memoryGrowth(() => {
    result = decodeHttp(task({ resp: bomb, respHeaders: enc('gzip'), maxBody: 4 * MiB }), 'x');
  });
  const { record, metrics } = result;
  assert.equal(record.truncated, true);
  assert.equal(record.error, 'too_large');
  assert.equal(record.respBody?.length, 4 * MiB);
  assert.ok(/^\0+$/.test(record.respBody!));
  assert.deepEqual(metrics, { dropped: { too_large: 1 } });
  assert.ok(grew < 256 * MiB, `memory grew by ${grew} bytes`);
});

test('a brotli bomb and a deflate bomb are cut the same way', () => {
  const big = Buffer.alloc(256 * MiB, 0x61);
  const br = zlib.brotliCompressSync(big, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } });
  assert.ok(br.length < 4096, 'a few hundred bytes expand to 256 MiB');
  const df = zlib.deflateSync(big);
  for (const [coding, body] of [['br', br], ['deflate', df]] as const) {
    const { record } = decodeHttp(task({ resp: body, respHeaders: enc(coding), maxBody: MiB }), 'x');
    assert.equal(record.truncated, true, coding);
    assert.equal(record.respBody?.length, MiB, coding);
    assert.ok(record.respBody!.length === MiB && /^a+$/.test(record.respBody!), coding);
  }
});

// ── body helpers ──────────────────────────────────────────────────────────────────────────

test('bodyFields: text, base64, truncation at a UTF-8 boundary, size before truncation', () => {
  assert.deepEqual(bodyFields(Buffer.from('héllo'), 100), { body: 'héllo', size: 6, truncated: false, invalidUtf8: false });
  // 'é' is 2 bytes at offsets 1..2: cutting at 2 must not keep half of it
  assert.deepEqual(bodyFields(Buffer.from('héllo'), 2), { body: 'h', size: 6, truncated: true, invalidUtf8: false });
  assert.deepEqual(bodyFields(Buffer.from('héllo'), 3), { body: 'hé', size: 6, truncated: true, invalidUtf8: false });
  const emoji = Buffer.from('a😀b'); // 😀 is 4 bytes
  for (let max = 1; max <= 4; max++) assert.equal(bodyFields(emoji, max).body, 'a');
  assert.equal(bodyFields(emoji, 5).body, 'a😀');
  assert.deepEqual(bodyFields(Buffer.from([0xff, 0x00, 0x41]), 10), { bodyBase64: '/wBB', size: 3, truncated: false, invalidUtf8: true });
  // binary truncated at exactly maxBody
  assert.deepEqual(bodyFields(Buffer.from([0xff, 0x80, 0x80, 0x80, 0x41]), 3), { bodyBase64: Buffer.from([0xff, 0x80, 0x80]).toString('base64'), size: 5, truncated: true, invalidUtf8: true });
  assert.deepEqual(bodyFields(new Uint8Array(0), 0), { body: '', size: 0, truncated: false, invalidUtf8: false });
  assert.equal(isValidUtf8(Buffer.from([0xc3, 0xa9])), true);
  assert.equal(isValidUtf8(Buffer.from([0xc3])), false);
  assert.equal(isValidUtf8(Buffer.from([0xed, 0xa0, 0x80])), false); // a UTF-16 surrogate is not UTF-8
  assert.equal(utf8Boundary(Buffer.from('ab'), 5), 2);
  // cutShort: the bytes are a prefix of a longer body, so a sequence open at the end is trimmed
  const cutText = Buffer.from('ab😀').subarray(0, 4);
  assert.deepEqual(bodyFields(cutText, 100), { bodyBase64: cutText.toString('base64'), size: 4, truncated: false, invalidUtf8: true });
  assert.deepEqual(bodyFields(cutText, 100, { cutShort: true }), { body: 'ab', size: 4, truncated: true, invalidUtf8: false });
  // a view into a larger buffer is read at its offset
  const view = Buffer.from('xxhello').subarray(2);
  assert.equal(bodyFields(new Uint8Array(view.buffer, view.byteOffset, view.length), 10).body, 'hello');
});

// ── SSE ───────────────────────────────────────────────────────────────────────────────────

test('parseSse follows the EventSource rules', () => {
  assert.deepEqual(parseSse('\ufeffdata: a\n\n'), [{ data: 'a' }], 'BOM stripped');
  assert.deepEqual(parseSse('data:no space\ndata:  two spaces\n\n'), [{ data: 'no space\n two spaces' }], 'only one leading space removed');
  assert.deepEqual(parseSse('event: only-type\n\ndata: b\n\n'), [{ data: 'b' }], 'an event without data is not dispatched and its type is forgotten');
  assert.deepEqual(parseSse('data\n\ndata:\n\n'), [{ data: '' }, { data: '' }], 'empty data lines dispatch empty events');
  assert.deepEqual(parseSse('retry: 100\nfoo: bar\n: comment\ndata: x\n\n'), [{ data: 'x' }]);
  assert.deepEqual(parseSse('id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n'), [{ data: 'a', id: '7' }, { data: 'b', id: '7' }, { data: 'c' }], 'lastEventId persists; empty id resets');
  assert.deepEqual(parseSse('id: a\0b\ndata: x\n\n'), [{ data: 'x' }], 'an id with NUL is ignored');
  assert.deepEqual(parseSse('data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n'), [{ data: '1' }, { data: '2' }, { data: '3' }], 'CRLF, CR and LF line ends');
  assert.deepEqual(parseSse('data: partial'), [{ data: 'partial' }], 'an unterminated last event is returned');
  assert.deepEqual(parseSse(''), []);
});

test('SseParser gives the same events however the text is split (CR and LF in different pushes too)', () => {
  const stream = 'event: a\r\ndata: 1\r\n\r\n: c\rdata: 2\r\rdata: x\ndata: y\n\nevent: last\ndata: end';
  const expected = parseSse(stream);
  assert.equal(expected.length, 4);
  for (let cut = 0; cut <= stream.length; cut++) {
    const p = new SseParser();
    const got = [...p.push(stream.slice(0, cut)), ...p.push(stream.slice(cut)), ...p.end()];
    assert.deepEqual(got, expected, `cut at ${cut}`);
  }
  const p = new SseParser();
  const got = [...stream].flatMap((ch) => p.push(ch));
  got.push(...p.end());
  assert.deepEqual(got, expected, 'one character at a time');
  assert.deepEqual(p.end(), [], 'end() is idempotent');
});
