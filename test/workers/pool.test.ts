// The capture pool with real parts: a Piscina pool running the real worker, real LMDB in a temp
// dir, and (for the tap) a real `ws` client and server whose bytes pass through a TCP relay that
// feeds WsConnectionTap exactly as the tunnel does. Proves ordering per stream under concurrency,
// the memory bound (queue_full) with recovery, and recovery from a worker crash.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import WebSocket, { WebSocketServer } from 'ws';
import { CapturePool, type CapturePoolOptions } from '../../src/workers/pool.js';
import { WsConnectionTap } from '../../src/io/ws-tap.js';
import { PREALLOC_MAX } from '../../src/io/capture-buffer.js';
import { openStore } from '../../src/store/lmdb.js';
import { nextId } from '../../src/store/ids.js';
import { registry } from '../../src/metrics.js';
import type { Header, WsMessageRecord } from '../../src/records.js';
import type { StreamOrigin, WsCapturedMessage } from '../../src/workers/tasks.js';

const dirs: string[] = [];
const pools: CapturePool[] = [];
after(async () => {
  // pools a failed test left open (close() is idempotent), then their data dirs
  await Promise.all(pools.map((p) => p.close()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function newPool(over: Partial<CapturePoolOptions> = {}): { pool: CapturePool; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-pool-'));
  dirs.push(dir);
  const pool = new CapturePool({ workers: 2, dataDir: dir, maxBody: 1 << 20, maxCaptureMemory: 64 << 20, maxConnCaptureMemory: 16 << 20, redactHeaders: [], ...over });
  pools.push(pool);
  return { pool, dir };
}

/**
 * A one-worker pool whose worker runs `prelude` (JavaScript over `task`, with `items(task)`) before
 * the real one, and `after` once it is done. `budget`: the worker's decoded bound (decoded-budget.ts
 * is there as `budget`, `writeFileSync` too).
 */
function wrappedPool(prelude: string, o: { budget?: number; after?: string; pool?: Partial<CapturePoolOptions> } = {}): { pool: CapturePool; dir: string } {
  const real = new URL('../../src/workers/worker.js', import.meta.url).href;
  const budget = new URL('../../src/workers/decoded-budget.js', import.meta.url).href;
  const dir0 = mkdtempSync(join(tmpdir(), 'greytap-wrapped-'));
  dirs.push(dir0);
  const file = join(dir0, 'wrapped-worker.mjs');
  writeFileSync(file, `import run from ${JSON.stringify(real)};
import * as budget from ${JSON.stringify(budget)};
import { writeFileSync } from 'node:fs';
${o.budget !== undefined ? `budget.setDecodedHeldMax(${o.budget});` : ''}
const items = (t) => (t.type === 'multi' ? t.parts.flatMap(items) : t.type === 'lane' ? t.items : [t]);
export default async function (task) {
  ${prelude}
  try { return await run(task); } finally { ${o.after ?? ''} }
}
`);
  return newPool({ workers: 1, workerFile: file, ...o.pool });
}

/**
 * A one-worker pool whose worker process exits when a task carries an item matching `crashIf`
 * (JavaScript source of a predicate over one WebSocket batch, HTTP exchange or connection record).
 */
function crashingPool(crashIf: string): { pool: CapturePool; dir: string } {
  return wrappedPool(`if (items(task).some(${crashIf})) process.exit(1);`);
}

function records(dir: string, conn: string, direction: 'client' | 'server'): WsMessageRecord[] {
  const store = openStore(dir, { readOnly: true });
  try {
    return store.wsMessages(conn).filter((m: WsMessageRecord) => m.direction === direction).sort((a: WsMessageRecord, b: WsMessageRecord) => a.seq - b.seq);
  } finally {
    void store.close();
  }
}

function text(r: WsMessageRecord): Buffer {
  return r.body !== undefined ? Buffer.from(r.body) : Buffer.from(r.bodyBase64 ?? '', 'base64');
}

async function metricValue(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values as { labels: Record<string, string>; value: number }[] | undefined)?.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

function origin(conn: string): StreamOrigin {
  return { conn, host: 'example.test', port: 80, scheme: 'ws', path: '/ws' };
}

/** A persistent raw deflater (context takeover): compressed message without the 00 00 ff ff tail. */
function compressor(): (b: Buffer) => Promise<Buffer> {
  const d = zlib.createDeflateRaw();
  return async (b) => {
    const chunks: Buffer[] = [];
    const on = (c: Buffer) => chunks.push(c);
    d.on('data', on);
    d.write(b);
    await new Promise<void>((r) => d.flush(zlib.constants.Z_SYNC_FLUSH, () => r()));
    d.off('data', on);
    const out = Buffer.concat(chunks);
    return out.subarray(0, out.length - 4);
  };
}

function message(seq: number, payload: Buffer, rsv1: boolean): WsCapturedMessage {
  const ab = new Uint8Array(payload).buffer;
  return {
    seq, opcode: 1, rsv1, frames: 1, wireBytes: payload.length + 4, payloadBytes: payload.length,
    payload: payload.length ? ab : undefined, copiedBytes: payload.length, ts: Date.now(), lastByteAt: performance.timeOrigin + performance.now(),
  };
}

/**
 * A real ws server and client with a relay between them that forwards every chunk untouched and
 * hands the same chunk to the tap (what src/io does). The 101 response headers are parsed from the
 * relayed bytes, so the tap sees exactly what the client saw.
 */
async function relayedSession(pool: CapturePool, conn: string, perMessageDeflate: object | false, run: (ws: WebSocket) => Promise<void>) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate });
  await new Promise((r) => wss.once('listening', r));
  const got: (string | Buffer)[] = [];
  wss.on('connection', (s) => s.on('message', (d, bin) => {
    const m = bin ? Buffer.from(d as Buffer) : d.toString();
    got.push(m);
    s.send(m);
  }));
  let tap: WsConnectionTap | undefined;
  const relay = net.createServer((c) => {
    const u = net.connect((wss.address() as net.AddressInfo).port, '127.0.0.1');
    let head = Buffer.alloc(0);
    let clientHeadDone = false;
    c.on('data', (d) => {
      u.write(d);
      if (!clientHeadDone) {
        const i = d.indexOf('\r\n\r\n');
        if (i < 0) return;
        clientHeadDone = true;
        d = d.subarray(i + 4);
      }
      if (tap && d.length) tap.fromClient(d);
    });
    u.on('data', (d) => {
      c.write(d);
      if (!tap) {
        head = Buffer.concat([head, d]);
        const i = head.indexOf('\r\n\r\n');
        if (i < 0) return;
        const lines = head.subarray(0, i).toString('latin1').split('\r\n').slice(1);
        const headers = lines.map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()] as Header);
        tap = new WsConnectionTap({ origin: origin(conn), upgrade: nextId(), responseHeaders: headers, pool, maxBody: 1 << 20 });
        d = head.subarray(i + 4);
      }
      if (d.length) tap.fromServer(d);
    });
    c.on('close', () => { u.destroy(); tap?.close(); });
    u.on('close', () => { c.destroy(); tap?.close(); });
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  const ws = new WebSocket(`ws://127.0.0.1:${(relay.address() as net.AddressInfo).port}/ws`, { perMessageDeflate: perMessageDeflate ? {} : false });
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  await run(ws);
  await new Promise((r) => { ws.once('close', r); ws.close(1000, 'done'); });
  await new Promise((r) => setTimeout(r, 20));
  relay.close();
  wss.close();
  await pool.drain();
  return got;
}

test('tap → pool → worker → LMDB: real ws peers, context takeover, fragments and pings, byte-exact in order', async () => {
  const { pool, dir } = newPool();
  const sent: (string | Buffer)[] = [];
  const got = await relayedSession(pool, 'conn-tap', { threshold: 0 }, async (ws) => {
    let echoes = 0;
    ws.on('message', () => echoes++);
    for (let i = 0; i < 300; i++) {
      const m = i % 4 === 3 ? randomBytes(50 + i) : JSON.stringify({ type: 'response.create', i, input: 'fix the failing test '.repeat(1 + (i % 9)) });
      sent.push(m);
      if (i % 10 === 5) {
        // fragmented: three frames, a ping between them
        const s = typeof m === 'string' ? Buffer.from(m) : m;
        const bin = typeof m !== 'string';
        ws.send(s.subarray(0, 10), { fin: false, binary: bin });
        ws.ping('between');
        ws.send(s.subarray(10, 20), { fin: false, binary: bin });
        ws.send(s.subarray(20), { fin: true, binary: bin });
      } else ws.send(m);
    }
    while (echoes < sent.length) await new Promise((r) => setTimeout(r, 10));
  });
  assert.deepEqual(got, sent);
  const client = records(dir, 'conn-tap', 'client');
  const data = client.filter((r) => r.kind === 'WS_REQ');
  assert.equal(data.length, sent.length);
  data.forEach((r, i) => {
    assert.equal(r.error, undefined, `client #${i}: ${r.error} ${r.errorDetail ?? ''}`);
    assert.deepEqual(text(r), Buffer.from(sent[i] as string), `client #${i}`);
    assert.equal(r.opcode, typeof sent[i] === 'string' ? 'text' : 'binary');
    assert.equal(r.compressed, true);
    assert.equal(r.frames, i % 10 === 5 ? 3 : 1);
  });
  assert.deepEqual(client.map((r) => r.seq), client.map((_, i) => i), 'seq from 0, control frames included');
  const pings = client.filter((r) => r.opcode === 'ping');
  assert.equal(pings.length, 30);
  assert.ok(pings.every((p) => p.body === 'between' && p.kind === 'WS_CTRL'));
  const server = records(dir, 'conn-tap', 'server').filter((r) => r.kind === 'WS_RESP');
  assert.equal(server.length, sent.length);
  server.forEach((r, i) => assert.deepEqual(text(r), Buffer.from(sent[i] as string), `server #${i}`));
  const closes = [...client, ...records(dir, 'conn-tap', 'server')].filter((r) => r.opcode === 'close');
  assert.deepEqual(closes.map((c) => [c.closeCode, c.closeReason]), [[1000, 'done'], [1000, 'done']]);
  await pool.close();
});

test('ordering per stream survives concurrency: 16 context-takeover streams interleaved on 2 workers', async () => {
  const { pool, dir } = newPool();
  const streams = Array.from({ length: 16 }, (_, s) => ({
    conn: `conn-order-${s}`, compress: compressor(), plains: [] as Buffer[],
    stream: pool.wsStream(origin(`conn-order-${s}`), 'u', 'server', { contextTakeover: true, windowBits: 15 }, `conn-order-${s}`),
  }));
  for (let i = 0; i < 100; i++) {
    for (const s of streams) {
      const plain = Buffer.from(JSON.stringify({ seq: i, delta: 'token '.repeat(randomInt(1, 60)), s: s.conn }));
      s.plains.push(plain);
      s.stream.push(message(i, await s.compress(plain), true));
    }
    if (i % 7 === 0) await new Promise((r) => setImmediate(r)); // let batches form and run
  }
  await pool.drain();
  for (const s of streams) {
    const recs = records(dir, s.conn, 'server');
    assert.equal(recs.length, 100);
    recs.forEach((r, i) => {
      assert.equal(r.error, undefined, `${s.conn} #${i}: ${r.error} ${r.errorDetail ?? ''}`);
      assert.deepEqual(text(r), s.plains[i]);
    });
    const ids = recs.map((r) => r.id);
    assert.deepEqual([...ids].sort(), ids, 'ids follow commit order = wire order');
  }
  assert.equal(pool.queueDepth, 0);
  await pool.close();
});

test('over the memory bound: messages recorded without payload as queue_full, counted; capture recovers', async () => {
  const { pool, dir } = newPool({ maxCaptureMemory: 256 << 10, maxConnCaptureMemory: 256 << 10, workers: 1 });
  const compress = compressor();
  const s = pool.wsStream(origin('conn-full'), 'u', 'client', { contextTakeover: true, windowBits: 15 }, 'conn-full');
  // What the tap does: reserve before copying, hand over. 64 messages of 16 KiB in one tick = 1 MiB > 256 KiB.
  const plains: Buffer[] = [];
  for (let i = 0; i < 64; i++) {
    const plain = randomBytes(16 << 10); // incompressible: compressed ≈ 16 KiB
    plains.push(plain);
    const comp = await compress(plain);
    const m = message(i, comp, true);
    if (!s.reserve(comp.length)) Object.assign(m, { payload: undefined, copiedBytes: 0, error: 'queue_full' });
    else s.release(comp.length); // the copy is handed over: the pool holds it from here
    s.push(m);
  }
  await pool.drain();
  assert.equal(pool.memoryBytes, 0, 'every byte released after commit');
  const recs = records(dir, 'conn-full', 'client');
  assert.equal(recs.length, 64, 'every message has a record');
  const firstDrop = recs.findIndex((r) => r.error === 'queue_full');
  assert.ok(firstDrop > 0 && firstDrop < 20, `dropped from #${firstDrop}`);
  recs.slice(0, firstDrop).forEach((r, i) => assert.deepEqual(text(r), plains[i]));
  assert.ok(recs.slice(firstDrop + 1).every((r) => r.error === 'queue_full' || r.error === 'desynced'), 'a gap in a takeover stream desyncs the rest');

  // Recovery: a new connection after the pressure is gone is captured whole.
  const s2 = pool.wsStream(origin('conn-after'), 'u', 'client', null, 'conn-after');
  for (let i = 0; i < 10; i++) {
    assert.equal(s2.reserve(16 << 10), true);
    s2.release(16 << 10);
    s2.push(message(i, Buffer.from(`after ${i}`), false));
  }
  await pool.drain();
  assert.deepEqual(records(dir, 'conn-after', 'client').map((r) => r.body), Array.from({ length: 10 }, (_, i) => `after ${i}`));
  await pool.close();
});

test('the tap under a small budget: every message still gets a record (with its sizes); drops counted once', async () => {
  const { pool, dir } = newPool({ maxCaptureMemory: 64 << 10, maxConnCaptureMemory: 64 << 10, workers: 1 });
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' });
  const tap = new WsConnectionTap({ origin: origin('conn-small'), upgrade: 'u', responseHeaders: [], pool, maxBody: 1 << 20 });
  // 20 unmasked server frames of 16 KiB in one read: the budget holds three.
  const frames = Array.from({ length: 20 }, (_, i) => Buffer.concat([Buffer.from([0x82, 126, 0x40, 0x00]), Buffer.alloc(16384, i)]));
  tap.fromServer(Buffer.concat(frames));
  tap.close();
  await pool.drain();
  const recs = records(dir, 'conn-small', 'server');
  assert.equal(recs.length, 20);
  const dropped = recs.filter((r) => r.error === 'queue_full').length;
  assert.equal(dropped, 17);
  recs.slice(0, 3).forEach((r, i) => assert.deepEqual(text(r), Buffer.alloc(16384, i)));
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' }), before + dropped);
  assert.ok(recs.every((r) => r.wireBytes === 16388 && r.size === 16384));
  await pool.close();
});

test('a compressed message dropped without a record desyncs what follows it, not what was queued before it', async () => {
  const { pool, dir } = newPool({ maxCaptureMemory: 64 << 10, maxConnCaptureMemory: 64 << 10, workers: 1 });
  const compress = compressor();
  const s = pool.wsStream(origin('conn-gap'), 'u', 'server', { contextTakeover: true, windowBits: 15 }, 'conn-gap');
  const plains = Array.from({ length: 5 }, (_, i) => Buffer.from(`gap ${i} `.repeat(30)));
  const compressed = [];
  for (const p of plains) compressed.push(await compress(p));
  // one tick: three complete messages queue, then memory is far over the bound for the fourth
  for (let i = 0; i < 3; i++) s.push(message(i, compressed[i], true));
  pool.hold('conn-gap', 100 << 10);
  s.push({ ...message(3, compressed[3], true), payload: undefined, copiedBytes: 0, error: 'queue_full' });
  pool.release('conn-gap', 100 << 10);
  s.push(message(4, compressed[4], true));
  await pool.drain();
  const recs = records(dir, 'conn-gap', 'server');
  assert.deepEqual(recs.map((r) => [r.seq, r.error ?? null]), [[0, null], [1, null], [2, null], [4, 'desynced']]);
  recs.slice(0, 3).forEach((r, i) => assert.deepEqual(text(r), plains[i]));
  await pool.close();
});

test('a flood of messages far over the bound: records beyond the slack are dropped whole, all counted, memory bounded', async () => {
  const { pool, dir } = newPool({ maxCaptureMemory: 8 << 10, maxConnCaptureMemory: 8 << 10, workers: 1 });
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' });
  const tap = new WsConnectionTap({ origin: origin('conn-flood'), upgrade: 'u', responseHeaders: [], pool, maxBody: 1 << 20 });
  const frame = Buffer.concat([Buffer.from([0x82, 126, 0x10, 0x00]), Buffer.alloc(4096, 7)]);
  tap.fromServer(Buffer.concat(Array(500).fill(frame)));
  assert.ok(pool.memoryBytes <= (8 << 10) + (1 << 10), `held ${pool.memoryBytes} bytes`);
  tap.close();
  await pool.drain();
  const recs = records(dir, 'conn-flood', 'server');
  assert.ok(recs.length < 500 && recs.length > 1, `${recs.length} records`);
  const captured = recs.filter((r) => !r.error).length;
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' }), before + 500 - captured);
  await pool.close();
});

/** One client frame (masked with a random key, a 7-bit length) per byte of `plain`: one fragmented message. */
function oneByteFrames(plain: Buffer, opcode: number): Buffer {
  return Buffer.concat(Array.from(plain, (x, i) => {
    const key = randomBytes(4);
    const b0 = (i === plain.length - 1 ? 0x80 : 0) | (i === 0 ? opcode : 0);
    return Buffer.concat([Buffer.from([b0, 0x81]), key, Buffer.from([x ^ key[0]])]);
  }));
}

/** Every message the pool is handed, as the tap built it (the real stream still gets it). */
function handedOver(pool: CapturePool): WsCapturedMessage[] {
  const out: WsCapturedMessage[] = [];
  const wsStream = pool.wsStream.bind(pool);
  pool.wsStream = (...a) => {
    const s = wsStream(...a);
    return { ...s, push: (m, slab) => { out.push(m); s.push(m, slab); } };
  };
  return out;
}

test('a message of tiny masked frames: masks are kept only for the frames the copy reaches, and the copy is unmasked up to the cap', async () => {
  const { pool, dir } = newPool({ workers: 1, maxBody: 1024 });
  const handed = handedOver(pool);
  const tap = new WsConnectionTap({ origin: origin('conn-masks'), upgrade: 'u', responseHeaders: [], pool, maxBody: 1024 });
  const plain = randomBytes(30_000);
  tap.fromClient(oneByteFrames(plain, 2));
  assert.equal(handed.length, 1);
  // it kept 3 numbers for every one of the 30,000 frames, copied or not: ~4 bytes of heap per wire byte, unbounded
  assert.equal(handed[0].masks!.length, 3 * 1024);
  assert.ok(pool.memoryBytes >= 1024 + 3 * 1024 * 4, `the queued message's masks count against the budget too (held ${pool.memoryBytes})`);
  tap.close();
  await pool.drain();
  const [r] = records(dir, 'conn-masks', 'client');
  assert.deepEqual([r.error, r.truncated, r.size, r.frames], ['too_large', true, 30_000, 30_000]);
  assert.deepEqual(text(r), plain.subarray(0, 1024));
  await pool.close();
});

test('masks past the capture budget drop the message (queue_full, counted) like a payload past it; the budget comes back', async () => {
  const { pool, dir } = newPool({ workers: 1, maxCaptureMemory: 64 << 10, maxConnCaptureMemory: 64 << 10 });
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' });
  const tap = new WsConnectionTap({ origin: origin('conn-masks-budget'), upgrade: 'u', responseHeaders: [], pool, maxBody: 1 << 20 });
  // 20,000 payload bytes fit the budget; their 20,000 frames' masks (~480 KB) do not
  tap.fromClient(oneByteFrames(randomBytes(20_000), 2));
  assert.ok(pool.memoryBytes <= 64 << 10, `held ${pool.memoryBytes} bytes`);
  const after = Buffer.from('after the flood');
  tap.fromClient(oneByteFrames(after, 1));
  tap.close();
  await pool.drain();
  const recs = records(dir, 'conn-masks-budget', 'client');
  assert.deepEqual(recs.map((r) => [r.error ?? null, r.size]), [['queue_full', 20_000], [null, after.length]]);
  assert.deepEqual(text(recs[1]), after);
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' }), before + 1);
  assert.equal(pool.memoryBytes, 0);
  await pool.close();
});

test('a payload dropped for memory is counted even when its message already carries an error (a masked server frame)', async () => {
  const { pool, dir } = newPool({ workers: 1, maxCaptureMemory: 8 << 10, maxConnCaptureMemory: 8 << 10 });
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' });
  const tap = new WsConnectionTap({ origin: origin('conn-masked-server'), upgrade: 'u', responseHeaders: [], pool, maxBody: 1 << 20 });
  const key = randomBytes(4);
  const payload = randomBytes(16 << 10).map((x, i) => x ^ key[i % 4]);
  tap.fromServer(Buffer.concat([Buffer.from([0x82, 0x80 | 126, 0x40, 0x00]), key, payload]));
  tap.close();
  await pool.drain();
  const [r] = records(dir, 'conn-masked-server', 'server');
  assert.deepEqual([r.error, r.size, r.truncated], ['bad_frame', 16 << 10, true], 'the first error stays the record\'s');
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'queue_full' }), before + 1);
  await pool.close();
});

test('frame headers alone reserve at most PREALLOC_MAX each: other connections are still captured, and a declared message that does arrive is whole', async () => {
  const { pool, dir } = newPool({ workers: 1, maxBody: 512 << 10, maxCaptureMemory: 1 << 20, maxConnCaptureMemory: 1 << 20 });
  const tap = (conn: string) => new WsConnectionTap({ origin: origin(conn), upgrade: 'u', responseHeaders: [], pool, maxBody: 512 << 10 });
  const key = Buffer.from([9, 8, 7, 6]);
  const masked = (p: Buffer) => Buffer.from(p.map((x, i) => x ^ key[i & 3]));
  // a masked binary frame declaring 512 KiB (64-bit length), then nothing: two of them took the whole 1 MiB
  const header = Buffer.concat([Buffer.from([0x82, 0x80 | 127]), Buffer.from([0, 0, 0, 0, 0, 8, 0, 0]), key]);
  const idle = Array.from({ length: 4 }, (_, i) => tap(`conn-idle-${i}`));
  for (const t of idle) t.fromClient(header);
  assert.ok(pool.memoryBytes <= 4 * PREALLOC_MAX, `${pool.memoryBytes} bytes held for 4 headers`);
  const hello = Buffer.from('hello from another connection');
  const other = tap('conn-other');
  other.fromClient(Buffer.concat([Buffer.from([0x81, 0x80 | hello.length]), key, masked(hello)]));
  // one declared payload does arrive, in reads of 64 KiB
  const body = randomBytes(512 << 10);
  const wire = masked(body);
  for (let i = 0; i < wire.length; i += 64 << 10) idle[0].fromClient(wire.subarray(i, i + (64 << 10)));
  for (const t of [...idle, other]) t.close();
  await pool.drain();
  assert.deepEqual(records(dir, 'conn-other', 'client').map((r) => [r.error ?? null, r.body]), [[null, hello.toString()]]);
  const [whole] = records(dir, 'conn-idle-0', 'client');
  assert.equal(whole.error, undefined);
  assert.deepEqual(text(whole), body);
  assert.deepEqual(records(dir, 'conn-idle-1', 'client').map((r) => [r.error, r.size]), [['truncated_stream', 0]]);
  assert.equal(pool.memoryBytes, 0);
  await pool.close();
});

test('a worker crash: its batch is recorded as worker_error from a fresh task, later items keep their order', async () => {
  const { pool, dir } = crashingPool("(t) => t.type === 'ws' && t.messages.some((m) => m.errorDetail === 'crash this worker')");
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'worker_error' });
  const compress = compressor();
  const s = pool.wsStream(origin('conn-crash'), 'u', 'server', { contextTakeover: true, windowBits: 15 }, 'conn-crash');
  const plains = Array.from({ length: 12 }, (_, i) => Buffer.from(`message ${i} `.repeat(20)));
  for (let i = 0; i < 4; i++) s.push(message(i, await compress(plains[i]), true));
  await pool.drain();
  const bomb = message(4, await compress(plains[4]), true);
  bomb.errorDetail = 'crash this worker';
  s.push(bomb);
  s.push(message(5, plains[5], false)); // same batch, uncompressed
  await pool.drain();
  for (let i = 6; i < 12; i++) s.push(i % 2 ? message(i, plains[i], false) : message(i, await compress(plains[i]), true));
  await pool.drain();
  const recs = records(dir, 'conn-crash', 'server');
  assert.deepEqual(recs.map((r) => r.seq), Array.from({ length: 12 }, (_, i) => i));
  recs.slice(0, 4).forEach((r, i) => assert.deepEqual(text(r), plains[i]));
  assert.equal(recs[4].error, 'worker_error');
  assert.equal(recs[5].error, 'worker_error');
  for (let i = 6; i < 12; i++) {
    if (i % 2) assert.deepEqual(text(recs[i]), plains[i], 'uncompressed messages still decode');
    else assert.equal(recs[i].error, 'desynced', 'the lost compressed message desynced the direction');
  }
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'worker_error' }), before + 2);
  await pool.close();
});

test('the tap records bad input: violations, a mask error, a cut message, a partial header', async () => {
  const { pool, dir } = newPool({ workers: 1 });
  const tap = (conn: string, ext = '') => new WsConnectionTap({ origin: origin(conn), upgrade: 'u', responseHeaders: ext ? [['Sec-WebSocket-Extensions', ext]] : [], pool, maxBody: 1 << 20 });
  const key = Buffer.from([1, 2, 3, 4]);
  const masked = (b0: number, p: Buffer) => Buffer.concat([Buffer.from([b0, 0x80 | p.length]), key, Buffer.from(p.map((x, i) => x ^ key[i & 3]))]);
  // 1: a good message, then a reserved opcode: recorded, then nothing more is parsed
  const t1 = tap('conn-bad-1');
  t1.fromClient(Buffer.concat([masked(0x81, Buffer.from('ok')), masked(0x83, Buffer.from('x')), masked(0x81, Buffer.from('never'))]));
  // 2: RSV1 on a continuation frame (deflate negotiated): the open message ends as bad_frame
  const t2 = tap('conn-bad-2', 'permessage-deflate');
  t2.fromClient(Buffer.concat([masked(0x01, Buffer.from('part')), masked(0xc0, Buffer.from('x'))]));
  // 3: server sends a masked frame (flagged, still decoded), then a message cut mid-payload
  const t3 = tap('conn-bad-3');
  t3.fromServer(Buffer.concat([masked(0x81, Buffer.from('masked!')), Buffer.from([0x81, 10]), Buffer.from('hello')]));
  t3.close();
  t3.close(); // idempotent
  // 4: a connection closed inside a frame header
  const t4 = tap('conn-bad-4');
  t4.fromClient(Buffer.from([0x82]));
  t4.close();
  await pool.drain();
  const c1 = records(dir, 'conn-bad-1', 'client');
  assert.deepEqual(c1.map((r) => [r.body ?? null, r.error ?? null, r.errorDetail ?? null]), [['ok', null, null], ['', 'bad_frame', 'reserved opcode 3']]);
  const c2 = records(dir, 'conn-bad-2', 'client');
  assert.deepEqual(c2.map((r) => [r.body, r.error, r.errorDetail]), [['part', 'bad_frame', 'RSV1 set on a continuation frame']]);
  const s3 = records(dir, 'conn-bad-3', 'server');
  assert.deepEqual(s3.map((r) => [r.body, r.error, r.truncated, r.size, r.wireBytes]), [['masked!', 'bad_frame', false, 7, 13], ['hello', 'truncated_stream', true, 5, 7]]);
  const c4 = records(dir, 'conn-bad-4', 'client');
  assert.deepEqual(c4.map((r) => [r.opcode, r.error, r.wireBytes]), [['binary', 'truncated_stream', 1]]);
  await pool.close();
});

test('HTTP exchanges and connection records of one connection commit in order, bodies moved, memory released', async () => {
  const { pool, dir } = newPool({ redactHeaders: ['x-secret'] });
  const conn = 'conn-http';
  const now = Date.now();
  const rec = { id: conn, ts: now, listener: 'http' as const, clientAddr: '127.0.0.1:1', host: 'api.test', port: 443, intercepted: true, mode: 'intercept' as const, bytesUp: 0, bytesDown: 0, startTs: now };
  pool.connection(rec);
  const ids: string[] = [];
  const bodies: Uint8Array[] = [];
  for (let i = 0; i < 20; i++) {
    const id = nextId();
    ids.push(id);
    const body = new TextEncoder().encode(JSON.stringify({ i, text: 'x'.repeat(i * 100) }));
    pool.http({
      type: 'http', id, origin: { conn, host: 'api.test', port: 443, scheme: 'https', path: `/v1/${i}` }, method: 'POST', target: `/v1/${i}`, httpVersion: '1.1',
      reqHeaders: [['Content-Type', 'application/json'], ['X-Secret-Token', 'hunter2']], reqBody: body, reqBytes: body.length + 50, reqBodyBytes: body.length,
      status: 200, statusText: 'OK', respHeaders: [['Content-Type', 'text/plain']], respBody: new TextEncoder().encode(`answer ${i}`), respBytes: 60, respBodyBytes: 8,
      truncated: false, startTs: now + i, durationMs: 1, lastByteAt: performance.timeOrigin + performance.now(), maxBody: 1 << 20,
    }, conn);
    bodies.push(body);
  }
  pool.connection({ ...rec, endTs: now + 100, closeReason: 'client_end', bytesUp: 123 });
  assert.ok(pool.memoryBytes > 0, 'queued bodies count against the capture memory bound');
  await pool.drain();
  assert.equal(pool.memoryBytes, 0);
  assert.ok(bodies.every((b) => b.byteLength === 0), 'body buffers were transferred to the worker, not copied');
  const store = openStore(dir, { readOnly: true });
  try {
    assert.equal(store.getConnection(conn)?.closeReason, 'client_end', 'the close record landed after the open one');
    const page = store.listTransactions({ conn, limit: 100 });
    assert.deepEqual(page.items.map((t) => t.id), ids, 'committed in submission order');
    const t5 = store.getTransaction(ids[5]);
    assert.ok(t5 && t5.kind === 'HTTP');
    assert.equal(JSON.parse(t5.reqBody!).i, 5);
    assert.equal(t5.respBody, 'answer 5');
    assert.notEqual(t5.reqHeaders.find(([n]) => n === 'X-Secret-Token')?.[1], 'hunter2', 'configured header redacted');
  } finally {
    await store.close();
  }
  await pool.close();
});

function exchange(conn: string, i: number, target = `/v1/${i}`): Parameters<CapturePool['http']>[0] {
  const now = Date.now();
  const body = new TextEncoder().encode(JSON.stringify({ i }));
  return {
    type: 'http', id: nextId(), origin: { conn, host: 'api.test', port: 443, scheme: 'https', path: target }, method: 'POST', target, httpVersion: '1.1',
    reqHeaders: [['Content-Type', 'application/json']], reqBody: body, reqBytes: body.length + 50, reqBodyBytes: body.length,
    status: 200, statusText: 'OK', respHeaders: [], respBytes: 40, respBodyBytes: 0,
    truncated: false, startTs: now + i, durationMs: 1, lastByteAt: performance.timeOrigin + performance.now(), maxBody: 1 << 20,
  };
}

async function taskCount(): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === 'greytap_worker_task_seconds');
  return ((m?.values ?? []) as { metricName?: string; value: number }[]).filter((v) => v.metricName === 'greytap_worker_task_seconds_count').reduce((n, v) => n + v.value, 0);
}

test('a busy keep-alive connection: exchanges queued behind the one in flight go as one task, in order', async () => {
  const { pool, dir } = newPool({ workers: 1 });
  const conn = 'conn-busy';
  const first = exchange(conn, 0);
  pool.http(first, conn);
  await new Promise((r) => setImmediate(r)); // the first one is posted; the rest queue behind it
  const rest = Array.from({ length: 300 }, (_, i) => exchange(conn, i + 1));
  const tasks0 = await taskCount();
  for (const x of rest) pool.http(x, conn);
  await pool.drain();
  // One capture task per exchange would be 300 here, posted at most one per flush interval.
  assert.ok((await taskCount()) - tasks0 <= 3, `queued exchanges were batched (${(await taskCount()) - tasks0} tasks)`);
  const store = openStore(dir, { readOnly: true });
  try {
    assert.deepEqual(store.listTransactions({ conn, limit: 1000 }).items.map((t) => t.id), [first, ...rest].map((x) => x.id), 'all committed, in order');
  } finally {
    await store.close();
  }
  await pool.close();
});

test('pool_queue_depth, scraped at once, counts every captured item not yet committed: behind a task in flight, waiting for the batching flush, in a worker', async () => {
  // A slow worker: nothing commits while the test looks.
  const { pool } = wrappedPool('await new Promise((r) => setTimeout(r, 500));');
  const depth = () => metricValue('greytap_pool_queue_depth');
  pool.http(exchange('conn-depth-0', 0), 'conn-depth-0');
  await new Promise((r) => setImmediate(r)); // posted at once (idle pool): the next flush waits ~50 ms
  for (let i = 1; i <= 5; i++) pool.http(exchange('conn-depth-0', i), 'conn-depth-0'); // behind the one in flight
  for (let c = 1; c <= 20; c++) pool.http(exchange(`conn-depth-${c}`, 0), `conn-depth-${c}`); // one part each, for the flush
  await new Promise((r) => setImmediate(r)); // the lanes have handed their parts to the flush
  assert.equal(await depth(), 1 + 5 + 20);
  await pool.drain();
  assert.equal(await depth(), 0);
  await pool.close();
});

test('pool_utilization is the share of the last second the workers were busy: near 1 while they decode without pause, near 0 once idle', async () => {
  // A worker that spins 3 s on its task
  const { pool } = wrappedPool('for (const end = Date.now() + 3000; Date.now() < end;);');
  pool.http(exchange('conn-busy', 0), 'conn-busy');
  await new Promise((r) => setTimeout(r, 2500)); // the sample at 2 s covers a whole busy second
  const busy = await metricValue('greytap_pool_utilization');
  await pool.drain();
  await new Promise((r) => setTimeout(r, 2100));
  const idle = await metricValue('greytap_pool_utilization');
  await pool.close();
  assert.ok(busy > 0.7, `while busy: ${busy}`);
  assert.ok(idle < 0.2, `once idle: ${idle}`);
});

test('a part of a multi task that throws fails alone: the other connections\' records are kept once and their directions stay in sync', async () => {
  // the bombed batch's decode throws (its messages are gone), inside the worker, beside a good one
  const { pool, dir } = wrappedPool(`if (task.type === 'multi') for (const p of task.parts) if (p.type === 'ws' && p.origin.conn === 'conn-bomb') p.messages = null;`);
  const compress = compressor();
  const good = pool.wsStream(origin('conn-good'), 'u', 'server', { contextTakeover: true, windowBits: 15 }, 'conn-good');
  const bad = pool.wsStream(origin('conn-bomb'), 'u', 'server', null, 'conn-bomb');
  const plains = Array.from({ length: 6 }, (_, i) => Buffer.from(`good ${i} `.repeat(20)));
  const compressed = [];
  for (const p of plains) compressed.push(await compress(p));
  for (let i = 0; i < 3; i++) good.push(message(i, compressed[i], true));
  bad.push(message(0, Buffer.from('boom'), false)); // same turn: one multi task
  await pool.drain();
  for (let i = 3; i < 6; i++) good.push(message(i, compressed[i], true));
  await pool.drain();
  const recs = records(dir, 'conn-good', 'server');
  assert.deepEqual(recs.map((r) => [r.seq, r.error ?? null]), plains.map((_, i) => [i, null]), 'each once, none worker_error or desynced');
  recs.forEach((r, i) => assert.deepEqual(text(r), plains[i]));
  assert.deepEqual(records(dir, 'conn-bomb', 'server').map((r) => r.error), ['worker_error']);
  await pool.close();
});

test('a worker crash on a batch of exchanges: each is recorded as worker_error without bodies; the connection goes on', async () => {
  const { pool, dir } = crashingPool("(t) => t.type === 'http' && t.reqBody && t.target === '/crash'");
  const before = await metricValue('greytap_capture_dropped_total', { reason: 'worker_error' });
  const conn = 'conn-http-crash';
  pool.http(exchange(conn, 0), conn);
  await pool.drain();
  const batch = [exchange(conn, 1), exchange(conn, 2, '/crash'), exchange(conn, 3)];
  for (const x of batch) pool.http(x, conn);
  await pool.drain();
  const later = exchange(conn, 4);
  pool.http(later, conn);
  await pool.drain();
  const store = openStore(dir, { readOnly: true });
  try {
    const items = store.listTransactions({ conn, limit: 100 }).items;
    assert.equal(items.length, 5);
    for (const x of batch) {
      const t = store.getTransaction(x.id!);
      assert.ok(t && t.kind === 'HTTP');
      assert.equal(t.error, 'worker_error');
      assert.ok(!t.reqBody, `the bodies went with the crashed task (${JSON.stringify(t.reqBody)})`);
      assert.equal(t.truncated, true);
      assert.equal(t.path, x.target, 'the metadata is kept');
    }
    const t4 = store.getTransaction(later.id!);
    assert.ok(t4 && t4.kind === 'HTTP' && !t4.error && JSON.parse(t4.reqBody!).i === 4, 'the connection goes on after the crash');
  } finally {
    await store.close();
  }
  assert.equal(await metricValue('greytap_capture_dropped_total', { reason: 'worker_error' }), before + 3);
  await pool.close();
});

test('close() while a worker is inside a write transaction after its tasks settled (a trailing assembly): it waits for the transaction, the worker exits, close() resolves', async () => {
  // The worker starts a 1.5 s conversation update (transactionSync) from a timer once the task that
  // armed it has returned, as the trailing WebSocket assembly does, and says so on a channel. close()
  // is called while that transaction is open. Terminated there, lmdb-js's exit hook waited forever
  // for the writer lock its own thread held (lmdb 3.5.6), so piscina.destroy() never resolved.
  const store = new URL('../../src/store/lmdb.js', import.meta.url).href;
  const { pool } = wrappedPool(`if (items(task).some((i) => i.type === 'conn' && i.record.id === 'conn-hold-txn')) setTimeout(async () => {
    const { workerData } = await import('node:worker_threads');
    const { openStore } = await import(${JSON.stringify(store)});
    const s = openStore(workerData.dataDir);
    await s.updateConversation('test:hold', () => {
      new BroadcastChannel('greytap-test-hold-txn').postMessage('in');
      const t = Date.now();
      while (Date.now() - t < 1500);
      return undefined;
    });
    await s.close();
  }, 10);`);
  const inTxn = new BroadcastChannel('greytap-test-hold-txn');
  const entered = new Promise((r) => (inTxn.onmessage = r));
  const now = Date.now();
  pool.connection({ id: 'conn-hold-txn', ts: now, listener: 'http', clientAddr: '127.0.0.1:1', host: 'api.test', port: 443, intercepted: true, mode: 'intercept', bytesUp: 0, bytesDown: 0, startTs: now });
  await pool.drain();
  await entered;
  inTxn.close();
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    pool.close().then(() => 'closed'),
    new Promise((r) => { timer = setTimeout(() => r('hung'), 10_000); }),
  ]);
  clearTimeout(timer);
  // (On failure this process cannot exit either: Node waits for the stuck worker thread.)
  assert.equal(outcome, 'closed', 'close() did not resolve: a worker never exited');
  assert.ok(performance.now() - t0 < 5_000);
});

test('decoded output past the worker\'s bound waits for earlier records to commit: a batch commits in parts, every record whole and in order', async () => {
  // Compression multiplies what the capture budget counts (wire bytes): here ~40 KiB of wire
  // decode to 12 MiB. The worker may hold 1 MiB of decoded bodies (64 MiB in serve) awaiting commit.
  const peakFile = join(mkdtempSync(join(tmpdir(), 'greytap-budget-')), 'peak');
  dirs.push(dirname(peakFile));
  const { pool, dir } = wrappedPool('', { budget: 1 << 20, after: `writeFileSync(${JSON.stringify(peakFile)}, JSON.stringify(budget.budgetState()));`, pool: { maxBody: 2 << 20 } });
  const compress = compressor();
  const ws = pool.wsStream(origin('conn-bomb-ws'), 'u', 'server', { contextTakeover: true, windowBits: 15 }, 'conn-bomb-ws');
  const plains = Array.from({ length: 24 }, (_, i) => Buffer.from(`{"i":${i},"pad":"${'z'.repeat(256 << 10)}"}`));
  const wire: Buffer[] = [];
  for (const p of plains) wire.push(await compress(p));
  const gz = zlib.gzipSync(Buffer.alloc(1 << 20, 'y'));
  const now = Date.now();
  // one turn: the WebSocket batch and six connections' gzip responses go as one multi task
  wire.forEach((w, i) => ws.push(message(i, w, true)));
  const conns = Array.from({ length: 6 }, (_, c) => `conn-bomb-http-${c}`);
  for (const conn of conns) {
    pool.http({ ...exchange(conn, 0), respHeaders: [['Content-Encoding', 'gzip']], respBody: new Uint8Array(gz), respBytes: gz.length + 60, respBodyBytes: gz.length, startTs: now }, conn);
  }
  await pool.drain();
  const state = JSON.parse(readFileSync(peakFile, 'utf8')) as { held: number; peak: number; waiting: number };
  assert.deepEqual([state.held, state.waiting], [0, 0], 'all given back');
  // the bound plus one record (a gzip response, 1 MiB decoded)
  assert.ok(state.peak > 0 && state.peak <= (2 << 20) + (64 << 10), `peak held ${state.peak}`);
  const recs = records(dir, 'conn-bomb-ws', 'server');
  assert.deepEqual(recs.map((r) => [r.seq, r.error ?? null]), plains.map((_, i) => [i, null]));
  recs.forEach((r, i) => assert.deepEqual(text(r), plains[i], `message ${i}`));
  const ids = recs.map((r) => r.id);
  assert.deepEqual([...ids].sort(), ids, 'ids in wire order across the parts');
  const store = openStore(dir, { readOnly: true });
  try {
    for (const conn of conns) {
      const [t] = store.listTransactions({ conn, limit: 10 }).items;
      const full = t && store.getTransaction(t.id);
      assert.ok(full && full.kind === 'HTTP' && full.respBodySize === 1 << 20 && full.respBody === 'y'.repeat(1 << 20), conn);
    }
  } finally {
    await store.close();
  }
  await pool.close();
});

test('a WebSocket batch that fails after committing its first parts: those stay as they are, only the rest is recorded as worker_error, each message once', async () => {
  // every message a part of its own (a 1-byte bound), and the fourth message of the batch unreadable
  const { pool, dir } = wrappedPool("for (const t of items(task)) if (t.type === 'ws' && t.messages.length === 6 && t.messages[3].payload) t.messages[3] = null;", { budget: 1 });
  const s = pool.wsStream(origin('conn-lost'), 'u', 'server', null, 'conn-lost');
  const plains = Array.from({ length: 6 }, (_, i) => Buffer.from(`message ${i} `.repeat(10)));
  plains.forEach((p, i) => s.push(message(i, p, false)));
  await pool.drain();
  const recs = records(dir, 'conn-lost', 'server');
  assert.deepEqual(recs.map((r) => [r.seq, r.error ?? null]), [[0, null], [1, null], [2, null], [3, 'worker_error'], [4, 'worker_error'], [5, 'worker_error']]);
  recs.slice(0, 3).forEach((r, i) => assert.deepEqual(text(r), plains[i]));
  await pool.close();
});
