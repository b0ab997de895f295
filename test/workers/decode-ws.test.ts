// The worker-side decoder against real compressed streams: node:zlib deflaters kept open across
// messages (context takeover, as every permessage-deflate sender does), the `ws` library's own
// PerMessageDeflate, window bits 9–15, fragmented and masked frames, and every error path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { randomBytes, randomInt } from 'node:crypto';
import { decodeWsBatch, unmask } from '../../src/workers/decode-ws.js';
import { DeflateWindow, allocateWindow, windowSize } from '../../src/workers/deflate-window.js';
import type { DeflateParams, WsBatchTask, WsCapturedMessage } from '../../src/workers/tasks.js';
import type { WsMessageRecord } from '../../src/records.js';

let idn = 0;
const nextId = () => String(++idn).padStart(16, '0');

/** A persistent raw deflater: each message is compressed, sync-flushed and its 00 00 ff ff tail stripped (RFC 7692 §7.2.1). */
class Compressor {
  private d: zlib.DeflateRaw;
  constructor(private readonly windowBits: number, private readonly takeover = true) {
    this.d = zlib.createDeflateRaw({ windowBits });
  }
  async compress(msg: Buffer): Promise<Buffer> {
    if (!this.takeover) this.d = zlib.createDeflateRaw({ windowBits: this.windowBits });
    const chunks: Buffer[] = [];
    const onData = (c: Buffer) => chunks.push(c);
    this.d.on('data', onData);
    this.d.write(msg);
    await new Promise<void>((r) => this.d.flush(zlib.constants.Z_SYNC_FLUSH, () => r()));
    this.d.off('data', onData);
    const out = Buffer.concat(chunks);
    assert.deepEqual([...out.subarray(out.length - 4)], [0, 0, 0xff, 0xff]);
    return out.subarray(0, out.length - 4);
  }
}

interface Wire {
  plain: Buffer;
  opcode?: number;
  compressed?: Buffer; // payload as sent (compressed when rsv1)
}

/** Captures a message as the main thread would: payload split into random frames, each masked with a random key (client). */
function capture(seq: number, w: Wire, masked: boolean, maxFrames = 4): WsCapturedMessage {
  const payload = w.compressed ?? w.plain;
  const n = payload.length === 0 ? 1 : Math.min(maxFrames, 1 + randomInt(maxFrames));
  const cuts = [0, ...Array.from({ length: n - 1 }, () => randomInt(payload.length + 1)).sort((a, b) => a - b), payload.length];
  const out = new Uint8Array(payload.length);
  const masks: number[] = [];
  for (let f = 0; f < n; f++) {
    const [s, e] = [cuts[f], cuts[f + 1]];
    const key = masked ? randomBytes(4) : null;
    for (let i = s; i < e; i++) out[i] = key ? payload[i] ^ key[(i - s) & 3] : payload[i];
    if (key && e > s) masks.push(s, e - s, key.readUInt32BE(0));
  }
  return {
    seq, opcode: w.opcode ?? 1, rsv1: !!w.compressed, frames: n, wireBytes: payload.length + 2 * n, payloadBytes: payload.length,
    payload: payload.length ? out.buffer : undefined, masks: masked ? masks : undefined, copiedBytes: payload.length,
    ts: Date.now(), lastByteAt: performance.timeOrigin + performance.now(),
  };
}

/** Runs messages through the decoder in random batch sizes, carrying window/desync as the pool does. */
function decodeAll(msgs: WsCapturedMessage[], deflate: DeflateParams | null, direction: 'client' | 'server' = 'client', maxBody = 1 << 20, maxBatch = 40): WsMessageRecord[] {
  // the lane's shared window, advanced in place batch after batch
  const window = deflate?.contextTakeover ? allocateWindow(deflate.windowBits) : null;
  let desynced = false;
  const records: WsMessageRecord[] = [];
  for (let i = 0; i < msgs.length;) {
    const n = 1 + randomInt(maxBatch);
    const task: WsBatchTask = {
      type: 'ws', origin: { conn: 'c1', host: 'h', port: 443, scheme: 'wss', path: '/ws' }, upgrade: 'u1', direction, deflate,
      window, desynced, maxBody,
      // payloads are unmasked in place: hand the decoder copies, as a transfer would
      messages: msgs.slice(i, i + n).map((m) => ({ ...m, payload: m.payload?.slice(0) })),
    };
    const out = decodeWsBatch(task, nextId);
    assert.equal(out.records.length, task.messages.length);
    records.push(...out.records);
    desynced = out.desynced;
    i += n;
  }
  return records;
}

/** JSON-ish text with repeats across messages, so later messages refer back into earlier ones. */
function corpus(count: number, sizeOf: (i: number) => number): Buffer[] {
  const words = Array.from({ length: 80 }, () => randomBytes(5).toString('hex'));
  return Array.from({ length: count }, (_, i) => {
    const parts: string[] = [];
    let len = 0;
    const target = sizeOf(i);
    while (len < target) {
      const w = `{"type":"response.output_text.delta","delta":"${words[randomInt(words.length)]} ü€"}`;
      parts.push(w);
      len += Buffer.byteLength(w);
    }
    return Buffer.from(parts.join('').slice(0, target));
  });
}

function assertBody(r: WsMessageRecord, plain: Buffer, what: string): void {
  assert.equal(r.error, undefined, `${what}: ${r.error} ${r.errorDetail ?? ''}`);
  const got = r.body !== undefined ? Buffer.from(r.body) : Buffer.from(r.bodyBase64 ?? '', 'base64');
  assert.ok(got.equals(plain), `${what}: body differs`);
  assert.equal(r.size, plain.length);
}

test('unmask: 32-bit path matches the byte-wise definition at every alignment', () => {
  for (let off = 0; off < 8; off++) {
    const plain = randomBytes(97);
    const key = randomBytes(4);
    const buf = new Uint8Array(off + plain.length + 3);
    for (let i = 0; i < plain.length; i++) buf[off + 3 + i] = plain[i] ^ key[i & 3];
    const view = new Uint8Array(buf.buffer, off, plain.length + 3);
    unmask(view, [3, plain.length, key.readUInt32BE(0)], view.length);
    assert.deepEqual(Buffer.from(view.subarray(3)), plain, `offset ${off}`);
  }
});

test('1,000 context-takeover messages, fragmented, masked, in random batches decode byte-exact', async () => {
  const c = new Compressor(15);
  // sizes either side of the 4 KiB at which a record keeps the plaintext's bytes (body.ts LAZY_FROM):
  // below it the decoder lends the inflater's scratch space, from it on each message has its own
  const plains = corpus(1000, (i) => (i % 97 === 0 ? 40_000 : i % 31 === 0 ? 4095 + (i % 3) : 20 + ((i * 131) % 3000)));
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
  const recs = decodeAll(msgs, { contextTakeover: true, windowBits: 15 });
  recs.forEach((r, i) => {
    assertBody(r, plains[i], `message ${i}`);
    assert.equal(r.kind, 'WS_REQ');
    assert.equal(r.compressed, true);
    assert.equal(r.seq, i);
    assert.equal(r.frames, msgs[i].frames);
  });
});

test('the shared window keeps exactly the last 2^bits bytes in stream order, and its stamp moves with every push', () => {
  for (const bits of [8, 9, 12, 15]) {
    const sab = allocateWindow(bits);
    const w = new DeflateWindow(sab);
    assert.equal(w.size, windowSize(bits));
    assert.equal(w.size, 1 << Math.max(bits, 9));
    let all = Buffer.alloc(0);
    const stamps = new Set([w.stamp]);
    for (let i = 0; i < 300; i++) {
      // sizes around the ring size: wraps, exact fits, pushes longer than the window
      const n = [0, 1, 3, w.size - 1, w.size, w.size + 7, randomInt(w.size >> 2)][i % 7];
      const chunk = randomBytes(n);
      w.push(chunk);
      all = Buffer.concat([all, chunk]).subarray(-w.size);
      assert.deepEqual(Buffer.from(w.bytes()), all, `bits ${bits}, push ${i}`);
      // another thread sees the same state through its own view of the buffer
      assert.deepEqual(Buffer.from(new DeflateWindow(sab).bytes()), all);
      if (n > 0) { assert.ok(!stamps.has(w.stamp), 'a push changes the stamp'); stamps.add(w.stamp); }
    }
  }
  // two lanes never share a stamp (the nonce), even in the same state
  assert.notEqual(new DeflateWindow(allocateWindow(15)).stamp, new DeflateWindow(allocateWindow(15)).stamp);
});

test('a worker whose kept inflater is stale (another worker advanced the lane) starts again from the shared window', async () => {
  const c = new Compressor(15);
  const plains = corpus(90, (i) => 200 + ((i * 37) % 900));
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
  const deflate = { contextTakeover: true, windowBits: 15 };
  const window = allocateWindow(15);
  const batch = (conn: string, from: number, to: number) => decodeWsBatch({
    type: 'ws', origin: { conn, host: 'h', port: 443, scheme: 'wss', path: '/ws' }, upgrade: 'u1', direction: 'client', deflate,
    window, desynced: false, maxBody: 1 << 20, messages: msgs.slice(from, to).map((m) => ({ ...m, payload: m.payload?.slice(0) })),
  }, nextId);
  // This worker keeps an inflater for lane "w1:client" after the first batch. The second batch of
  // the same lane is then decoded elsewhere (modelled by another lane key over the same window), so
  // the kept inflater no longer matches the window when the third batch comes back here.
  const recs = [...batch('w1', 0, 30).records, ...batch('w2', 30, 60).records, ...batch('w1', 60, 90).records];
  recs.forEach((r, i) => assertBody(r, plains[i], `message ${i}`));
});

test('window bits 9–15 with context takeover (server direction, unmasked)', async () => {
  for (let wb = 9; wb <= 15; wb++) {
    const c = new Compressor(wb);
    const plains = corpus(150, (i) => 10 + ((i * 53) % 2000));
    const msgs: WsCapturedMessage[] = [];
    for (let i = 0; i < plains.length; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, false));
    const recs = decodeAll(msgs, { contextTakeover: true, windowBits: wb }, 'server');
    recs.forEach((r, i) => {
      assertBody(r, plains[i], `wb ${wb} message ${i}`);
      assert.equal(r.kind, 'WS_RESP');
    });
  }
});

test("the ws library's PerMessageDeflate (window bits 10, context takeover) decodes exactly", async () => {
  const PerMessageDeflate = createRequire(import.meta.url)('ws').PerMessageDeflate;
  const pmd = new PerMessageDeflate({ threshold: 0 });
  pmd.accept([{ client_max_window_bits: ['10'] }]); // as a client, given the server's response
  const plains = corpus(200, (i) => 5 + ((i * 71) % 1500));
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) {
    const comp: Buffer = await new Promise((res, rej) => pmd.compress(plains[i], true, (e: Error | null, d: Buffer) => (e ? rej(e) : res(d))));
    msgs.push(capture(i, { plain: plains[i], compressed: comp }, true));
  }
  pmd.cleanup();
  decodeAll(msgs, { contextTakeover: true, windowBits: 10 }).forEach((r, i) => assertBody(r, plains[i], `ws message ${i}`));
});

test('no_context_takeover: every message stands alone; uncompressed and control messages mixed in', async () => {
  const c = new Compressor(15, false);
  const plains = corpus(100, (i) => 50 + i * 10);
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) {
    const w: Wire = i % 5 === 0 ? { plain: plains[i], opcode: 2 } : i % 7 === 0 ? { plain: plains[i].subarray(0, 100), opcode: 9 } : { plain: plains[i], compressed: await c.compress(plains[i]) };
    msgs.push(capture(i, w, true, w.opcode === 9 ? 1 : 4));
  }
  const recs = decodeAll(msgs, { contextTakeover: false, windowBits: 15 });
  recs.forEach((r, i) => {
    const plain = msgs[i].opcode === 9 ? plains[i].subarray(0, 100) : plains[i];
    assertBody(r, plain, `message ${i}`);
    assert.equal(r.kind, msgs[i].opcode === 9 ? 'WS_CTRL' : 'WS_REQ');
    assert.equal(r.opcode, msgs[i].opcode === 9 ? 'ping' : msgs[i].opcode === 2 ? 'binary' : 'text');
  });
});

test('uncompressed messages in a takeover stream do not enter the window (RFC 7692 §6)', async () => {
  const c = new Compressor(15);
  const plains = corpus(60, () => 500);
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) {
    msgs.push(capture(i, i % 3 === 1 ? { plain: plains[i] } : { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
  }
  decodeAll(msgs, { contextTakeover: true, windowBits: 15 }).forEach((r, i) => assertBody(r, plains[i], `message ${i}`));
});

test('a dropped compressed message desyncs later compressed messages; a dropped uncompressed one does not', async () => {
  const c = new Compressor(15);
  const plains = corpus(30, () => 800);
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) {
    msgs.push(capture(i, i === 20 || i === 25 ? { plain: plains[i] } : { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
  }
  const drop = (m: WsCapturedMessage) => Object.assign(m, { payload: undefined, masks: undefined, copiedBytes: 0, error: 'queue_full' });
  drop(msgs[5]); // compressed: every later compressed message is lost
  const first = decodeAll(msgs, { contextTakeover: true, windowBits: 15 });
  first.forEach((r, i) => {
    if (i < 5) assertBody(r, plains[i], `before the gap ${i}`);
    else if (i === 5) {
      assert.equal(r.error, 'queue_full');
      assert.equal(r.body, undefined);
      assert.equal(r.size, msgs[5].payloadBytes);
    } else if (i === 20 || i === 25) assertBody(r, plains[i], `uncompressed after the gap ${i}`);
    else {
      assert.equal(r.error, 'desynced', `message ${i}`);
      assert.ok(r.bodyBase64, 'stored raw');
    }
  });

  // Losing an uncompressed message leaves the window intact.
  const c2 = new Compressor(15);
  const msgs2: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) {
    msgs2.push(capture(i, i === 10 ? { plain: plains[i] } : { plain: plains[i], compressed: await c2.compress(plains[i]) }, true));
  }
  drop(msgs2[10]);
  decodeAll(msgs2, { contextTakeover: true, windowBits: 15 }).forEach((r, i) => {
    if (i === 10) assert.equal(r.error, 'queue_full');
    else assertBody(r, plains[i], `message ${i}`);
  });
});

test('the raw bytes of a desynced message are unmasked', async () => {
  const c = new Compressor(15);
  const plains = corpus(3, () => 300);
  const comps = [await c.compress(plains[0]), await c.compress(plains[1]), await c.compress(plains[2])];
  const msgs = comps.map((comp, i) => capture(i, { plain: plains[i], compressed: comp }, true));
  Object.assign(msgs[0], { payload: undefined, masks: undefined, copiedBytes: 0, error: 'queue_full' });
  const recs = decodeAll(msgs, { contextTakeover: true, windowBits: 15 });
  assert.equal(recs[2].error, 'desynced');
  assert.deepEqual(Buffer.from(recs[2].bodyBase64!, 'base64'), comps[2]);
});

test('invalid deflate data → inflate_failed, stored raw; the takeover direction desyncs after it', async () => {
  const c = new Compressor(15);
  const plains = corpus(4, () => 400);
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < 4; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, false));
  const bad = Buffer.from([0xff, 0xff, 0xff, 0x00, 0x13]);
  msgs[1] = capture(1, { plain: bad, compressed: bad }, false);
  const recs = decodeAll(msgs, { contextTakeover: true, windowBits: 15 }, 'server', 1 << 20, 1);
  assertBody(recs[0], plains[0], 'before');
  assert.equal(recs[1].error, 'inflate_failed');
  assert.ok(recs[1].errorDetail);
  assert.deepEqual(Buffer.from(recs[1].bodyBase64!, 'base64'), bad);
  assert.equal(recs[2].error, 'desynced');
  assert.equal(recs[3].error, 'desynced');
  // without context takeover the next message is independent
  const c2 = new Compressor(15, false);
  const m3 = [capture(0, { plain: bad, compressed: bad }, false), capture(1, { plain: plains[2], compressed: await c2.compress(plains[2]) }, false)];
  const r3 = decodeAll(m3, { contextTakeover: false, windowBits: 15 }, 'server');
  assert.equal(r3[0].error, 'inflate_failed');
  assertBody(r3[1], plains[2], 'independent');
});

type StreamEnd = 'sync' | 'final' | 'stored';

/**
 * A context-takeover sender that may end a message's DEFLATE stream with a final block (RFC 7692
 * §7.2.3.3). Its next message is then a new stream with the earlier plaintext as dictionary, which is
 * how the LZ77 window carries over the end. `final`: a BFINAL=1 block, then the empty stored block of
 * §7.2.1 minus its last 4 bytes; `stored`: an empty message at level 0, whose final block is an empty
 * stored block, all stripped but its first byte; `sync`: no end, as usual.
 */
function finalBlockSender(): (plain: Buffer, end: StreamEnd) => Buffer {
  let sent = Buffer.alloc(0);
  return (plain, end) => {
    const dictionary = sent.length > 0 ? sent : undefined;
    sent = Buffer.concat([sent, plain]).subarray(-32768);
    if (end === 'final') return Buffer.concat([zlib.deflateRawSync(plain, { dictionary }), Buffer.from([0])]);
    const out = zlib.deflateRawSync(plain, end === 'stored' ? { dictionary, level: 0 } : { dictionary, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    assert.deepEqual([...out.subarray(out.length - 4)], [0, 0, 0xff, 0xff]);
    return out.subarray(0, out.length - 4);
  };
}

test('context takeover across final blocks (RFC 7692 §7.2.3.3): later messages decode exact, in one batch and across batches', () => {
  assert.deepEqual([...finalBlockSender()(Buffer.from('Hello'), 'final')], [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 'the RFC example');
  const send = finalBlockSender();
  const plains = corpus(40, (i) => (i % 13 === 5 ? 0 : i === 17 ? 9000 : 30 + ((i * 89) % 700)));
  // final blocks back to back, between sync-flushed messages, and an empty stored one whose stream
  // end the decoder sees only at the next message
  const ends = plains.map((p, i): StreamEnd => (p.length === 0 ? 'stored' : i < 4 || i % 3 === 0 ? 'final' : 'sync'));
  const msgs = plains.map((p, i) => capture(i, { plain: p, compressed: send(p, ends[i]) }, false));
  const deflate = { contextTakeover: true, windowBits: 15 };
  const { records } = decodeWsBatch({
    type: 'ws', origin: { conn: 'c1', host: 'h', port: 443, scheme: 'wss', path: '/ws' }, upgrade: 'u1', direction: 'server', deflate,
    window: allocateWindow(15), desynced: false, maxBody: 1 << 20, messages: msgs.map((m) => ({ ...m, payload: m.payload?.slice(0) })),
  }, nextId);
  records.forEach((r, i) => assertBody(r, plains[i], `one batch, message ${i} (${ends[i]})`));
  decodeAll(msgs, deflate, 'server', 1 << 20, 1).forEach((r, i) => assertBody(r, plains[i], `own batch, message ${i} (${ends[i]})`));
  decodeAll(msgs, deflate, 'server').forEach((r, i) => assertBody(r, plains[i], `random batches, message ${i} (${ends[i]})`));
});

test('DEFLATE data after a final block within one message → inflate_failed, stored raw, counted; the takeover direction desyncs', () => {
  const send = finalBlockSender();
  const plains = corpus(4, () => 300);
  const first = send(plains[0], 'final');
  // two streams in one message: §7.2.2 inflates a message as one stream, so the second is not part of it
  const two = Buffer.concat([zlib.deflateRawSync(plains[1], { dictionary: plains[0] }), zlib.deflateRawSync(plains[2]), Buffer.from([0])]);
  const msgs = [first, two, send(plains[3], 'final')].map((c, i) => capture(i, { plain: plains[i], compressed: c }, false));
  const out = decodeWsBatch({
    type: 'ws', origin: { conn: 'c1', host: 'h', port: 443, scheme: 'wss', path: '/ws' }, upgrade: 'u1', direction: 'server',
    deflate: { contextTakeover: true, windowBits: 15 }, window: allocateWindow(15), desynced: false, maxBody: 1 << 20, messages: msgs,
  }, nextId);
  assertBody(out.records[0], plains[0], 'before');
  assert.equal(out.records[1].error, 'inflate_failed');
  assert.match(out.records[1].errorDetail ?? '', /after the end of the DEFLATE stream/);
  assert.deepEqual(Buffer.from(out.records[1].bodyBase64!, 'base64'), two);
  assert.equal(out.records[2].error, 'desynced');
  assert.equal(out.desynced, true);
  assert.deepEqual(out.metrics.decodeErrors, { inflate_failed: 1 });
});

test('invalid UTF-8 in a text message → invalid_utf8 with bodyBase64; binary is always bodyBase64, never judged', () => {
  const bad = Buffer.from([0x61, 0xc3, 0x28, 0x62]);
  const recs = decodeAll([capture(0, { plain: bad, opcode: 1 }, true), capture(1, { plain: bad, opcode: 2 }, true)], null);
  assert.equal(recs[0].error, 'invalid_utf8');
  assert.deepEqual(Buffer.from(recs[0].bodyBase64!, 'base64'), bad);
  assert.equal(recs[1].error, undefined);
  assert.deepEqual(Buffer.from(recs[1].bodyBase64!, 'base64'), bad);
  // binary stays bytes even when it happens to be valid UTF-8; text is a string
  const [bin, txt] = decodeAll([capture(0, { plain: Buffer.from('{"a":1}'), opcode: 2 }, true), capture(1, { plain: Buffer.from('{"a":1}'), opcode: 1 }, true)], null);
  assert.equal(bin.body, undefined);
  assert.equal(Buffer.from(bin.bodyBase64!, 'base64').toString(), '{"a":1}');
  assert.equal(txt.body, '{"a":1}');
});

test('close frames: code and reason parsed; invalid code, 1-byte payload and bad UTF-8 are errors', () => {
  const close = (b: number[]) => capture(0, { plain: Buffer.from(b), opcode: 8 }, true, 1);
  const [ok, empty, badCode, oneByte, badUtf8] = decodeAll([
    close([0x03, 0xe8, ...Buffer.from('bye')]), close([]), close([0x03, 0xed]), close([0x03]), close([0x0f, 0xa0, 0xc3, 0x28]),
  ], null, 'server', 1 << 20, 1);
  assert.equal(ok.kind, 'WS_CTRL');
  assert.equal(ok.opcode, 'close');
  assert.equal(ok.closeCode, 1000);
  assert.equal(ok.closeReason, 'bye');
  assert.equal(ok.error, undefined);
  assert.equal(empty.closeCode, undefined);
  assert.equal(empty.error, undefined);
  assert.equal(badCode.closeCode, 1005);
  assert.equal(badCode.error, 'bad_frame');
  assert.equal(oneByte.error, 'bad_frame');
  assert.equal(badUtf8.closeCode, 4000);
  assert.equal(badUtf8.error, 'invalid_utf8');
});

test('a close reason that starts with U+FEFF keeps it (a byte order mark is part of the text, as in bodies)', () => {
  // found by bench/fuzz-ws.ts: the reason's decoder dropped a leading EF BB BF
  const [r] = decodeAll([capture(0, { plain: Buffer.from([0x03, 0xe8, ...Buffer.from('\ufeffbye')]), opcode: 8 }, true, 1)], null, 'client');
  assert.deepEqual([r.error, r.closeCode, r.closeReason], [undefined, 1000, '\ufeffbye']);
});

test('a decoded message over maxBody is stored truncated, and its full plaintext still feeds the window', async () => {
  const c = new Compressor(15);
  const plains = corpus(5, (i) => (i === 1 ? 200_000 : 3000));
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < plains.length; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
  assert.ok(msgs[1].payloadBytes < 100_000, 'the compressed form fits');
  const recs = decodeAll(msgs, { contextTakeover: true, windowBits: 15 }, 'client', 100_000, 1);
  assert.equal(recs[1].error, 'too_large');
  assert.equal(recs[1].truncated, true);
  assert.equal(recs[1].size, 200_000);
  assert.ok(plains[1].subarray(0, Buffer.byteLength(recs[1].body!)).equals(Buffer.from(recs[1].body!)));
  for (const i of [0, 2, 3, 4]) assertBody(recs[i], plains[i], `message ${i}`);
});

test('a message that inflates past the inflate bound keeps its decoded start, cut at maxBody; a takeover direction desyncs after it', async () => {
  const maxBody = 1 << 20; // inflate bound: max(2 × maxBody, 32 MiB)
  const big = Buffer.from('{"type":"response.output_text.delta","delta":"ü€ x"}'.repeat(Math.ceil((40 << 20) / 54)));
  for (const takeover of [true, false]) {
    const c = new Compressor(15, takeover);
    const plains = [Buffer.from('{"hello":1}'), big, Buffer.from('{"after":2}')];
    const msgs: WsCapturedMessage[] = [];
    for (let i = 0; i < plains.length; i++) msgs.push(capture(i, { plain: plains[i], compressed: await c.compress(plains[i]) }, true));
    const recs = decodeAll(msgs, { contextTakeover: takeover, windowBits: 15 }, 'client', maxBody, 1);
    assertBody(recs[0], plains[0], 'before');
    assert.equal(recs[1].error, 'too_large');
    assert.equal(recs[1].errorDetail, `inflated size over ${32 << 20} bytes`);
    assert.equal(recs[1].truncated, true);
    assert.equal(recs[1].size, 32 << 20, 'how far decoding went');
    assert.ok(recs[1].body !== undefined, 'decoded text, not the compressed bytes');
    const kept = Buffer.from(recs[1].body!);
    assert.ok(kept.length > maxBody - 4 && kept.length <= maxBody && big.subarray(0, kept.length).equals(kept), 'the start, cut at maxBody');
    if (takeover) assert.equal(recs[2].error, 'desynced', 'the window after it is unknown');
    else assertBody(recs[2], plains[2], 'after, no context takeover');
  }
});

test('a message cut on the main thread (too_large while copying, truncated_stream) is stored raw and desyncs only if compressed', async () => {
  const c = new Compressor(15);
  const plains = corpus(4, () => 2000);
  const msgs: WsCapturedMessage[] = [];
  for (let i = 0; i < 4; i++) msgs.push(capture(i, i === 1 ? { plain: plains[i] } : { plain: plains[i], compressed: await c.compress(plains[i]) }, true, 1));
  // message 1 (uncompressed) was cut at 100 bytes: its prefix is kept, nothing desyncs
  Object.assign(msgs[1], { copiedBytes: 100, error: 'truncated_stream' });
  const recs = decodeAll(msgs, { contextTakeover: true, windowBits: 15 }, 'client', 1 << 20, 1);
  assert.equal(recs[1].error, 'truncated_stream');
  assert.equal(recs[1].truncated, true);
  assert.equal(recs[1].body, plains[1].subarray(0, 100).toString());
  for (const i of [0, 2, 3]) assertBody(recs[i], plains[i], `message ${i}`);
  // message 2 (compressed) cut: 3 cannot be inflated
  Object.assign(msgs[2], { copiedBytes: 10, error: 'too_large' });
  const recs2 = decodeAll(msgs, { contextTakeover: true, windowBits: 15 }, 'client', 1 << 20, 1);
  assert.equal(recs2[2].error, 'too_large');
  assert.equal(recs2[3].error, 'desynced');
});

test('an uncompressed text message cut inside a character (too_large while copying, truncated_stream) stays text, cut before that character', () => {
  // found by bench/fuzz-ws.ts: such a prefix went to bodyBase64, where a decoded (compressed)
  // message over maxBody stays text, cut at a character boundary
  const plain = Buffer.from('€'.repeat(10)); // 3 bytes a character
  const cut = (copiedBytes: number, error: 'too_large' | 'truncated_stream', maxBody: number) => {
    const m = Object.assign(capture(0, { plain }, true, 1), { copiedBytes, error });
    return decodeAll([m], null, 'client', maxBody)[0];
  };
  const r = cut(10, 'too_large', 10);
  assert.deepEqual([r.error, r.truncated, r.size, r.body, r.bodyBase64], ['too_large', true, 30, '€€€', undefined]);
  const t = cut(5, 'truncated_stream', 1 << 20);
  assert.deepEqual([t.error, t.truncated, t.size, t.body, t.bodyBase64], ['truncated_stream', true, 30, '€', undefined]);
});

test('messages in one shared slab (offsets, masked, compressed or not) decode exact, and no record keeps a view of the slab', async () => {
  const deflate: DeflateParams = { contextTakeover: true, windowBits: 15 };
  const comp = new Compressor(15);
  const plains = corpus(12, (i) => 200 + i * 37);
  const wires: Wire[] = [];
  for (const [i, p] of plains.entries()) wires.push(i % 3 === 2 ? { plain: p } : { plain: p, compressed: await comp.compress(p) });
  wires.push({ plain: Buffer.from('binary \x00\x01'), opcode: 2 });
  // each captured payload copied into its own region of one SharedArrayBuffer, as the tap's slab does
  const sab = new SharedArrayBuffer(64 << 10);
  const slab = new Uint8Array(sab);
  let used = 7; // regions need not start at 0
  const messages = wires.map((w, seq) => {
    const m = capture(seq, w, true, 1);
    const bytes = new Uint8Array(m.payload as ArrayBuffer);
    slab.set(bytes, used);
    const out: WsCapturedMessage = { ...m, payload: sab, payloadOffset: used };
    used += bytes.length + 3;
    return out;
  });
  const task: WsBatchTask = {
    type: 'ws', origin: { conn: 'c1', host: 'h', port: 443, scheme: 'wss', path: '/ws' }, upgrade: 'u1', direction: 'client', deflate,
    window: allocateWindow(15), desynced: false, maxBody: 1 << 20, messages,
  };
  const { records } = decodeWsBatch(task, nextId);
  slab.fill(0xee); // the slab is reused once the task settled: records must not change
  records.forEach((r, i) => assertBody(r, wires[i].plain, `message ${i}`));
  assert.equal(records[1].compressed, true);
  assert.equal(records[2].compressed, false);
});
