// The capture worker on its own: CPU per WebSocket message of the (a) workload — 1 KiB JSON,
// permessage-deflate with context takeover, client frames masked; `--size` and `--plain` give (b)'s
// and (c)'s shapes — decoded, committed to a fresh LMDB store and assembled by the real worker (a
// one-thread Piscina pool running dist/src/workers/worker.js), with the main thread only posting
// batches the way the pool does.
// It measures what the full bench cannot separate from its noisy load: capture's own price per
// message, all threads of this process (the worker, lmdb-js's sync thread, V8's helpers), against
// a baseline in the same run — the same batches posted to a worker that only receives them.
//
//   node dist/bench/capture.js [options]     (--help lists them with their defaults)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { Piscina } from 'piscina';
import { closeHandshake, closeWorkers } from '../src/workers/worker-close.js';
import { messagePool } from './payload.js';
import { median } from './latency.js';
import { benchArgs } from './args.js';
import { idSharedBuffer } from '../src/store/ids.js';
import { openStore } from '../src/store/lmdb.js';
import { SLAB_MAX_PAYLOAD } from '../src/io/capture-buffer.js';
import { allocateWindow } from '../src/workers/deflate-window.js';
import { SyncZlib } from '../src/workers/zlib-sync.js';
import type { MultiTask, WsBatchTask, WsCapturedMessage } from '../src/workers/tasks.js';
import type { WorkerData } from '../src/workers/worker.js';

const o = benchArgs('node dist/bench/capture.js [options]: the capture worker alone, CPU per message against a receive-only worker', {
  messages: { default: 40000, min: 1, help: 'messages per round' },
  batch: { default: 15, min: 1, help: 'messages per direction per post' },
  conns: { default: 8, min: 1, help: 'connections, each two directions' },
  rounds: { default: 3, min: 1, help: 'rounds of each kind, alternating' },
  size: { default: 1024, min: 64, help: 'bytes per message (a JSON message of that size)' },
}, { plain: 'deflate off (default: permessage-deflate with context takeover)' }, { json: 'also write the result as JSON' });
const MESSAGES = o.messages, BATCH = o.batch, CONNS = o.conns, ROUNDS = o.rounds, SIZE = o.size;
/** permessage-deflate with context takeover, unless --plain */
const DEFLATE = !o.plain;

/** One direction of one connection: its sender's compressor (context carried), and the lane's window. */
interface Lane { conn: string; direction: 'client' | 'server'; deflater: SyncZlib; window: SharedArrayBuffer; seq: number; sent: Buffer[] }

/** RFC 7692 §7.2.1: compress with a sync flush and drop the trailing 00 00 ff ff. */
function compress(lane: Lane, plain: Buffer): Buffer {
  const { bytes } = lane.deflater.write(plain, zlib.constants.Z_SYNC_FLUSH, 1 << 20);
  return bytes.subarray(0, bytes.length - 4);
}

/** RFC 6455 §5.2: 2 bytes, a 16- or 64-bit extended length, and the client's masking key. */
function headerBytes(payload: number, masked: boolean): number {
  return 2 + (payload > 65535 ? 8 : payload > 125 ? 2 : 0) + (masked ? 4 : 0);
}

function mask(payload: Buffer, key: number): void {
  for (let i = 0; i < payload.length; i++) payload[i] ^= (key >>> (8 * (3 - (i & 3)))) & 0xff;
}

const pool = messagePool(SIZE);
let nth = 0;

/**
 * The next BATCH messages of a lane, as the forwarding thread hands them over (capture-buffer.ts):
 * payloads up to SLAB_MAX_PAYLOAD in one shared slab, bigger ones each in an ArrayBuffer of its own,
 * moved to the worker (`transfer`). Payloads stay masked (client) and compressed (unless --plain).
 */
function batchFor(lane: Lane, transfer: ArrayBuffer[]): WsBatchTask {
  const payloads: Buffer[] = [];
  const masks: (number[] | undefined)[] = [];
  for (let i = 0; i < BATCH; i++) {
    const plain = pool[nth++ % pool.length];
    lane.sent.push(plain);
    const p = DEFLATE ? compress(lane, plain) : Buffer.from(plain); // a buffer of its own either way
    if (lane.direction === 'client') {
      const key = randomBytes(4).readUInt32BE(0) || 1;
      mask(p, key);
      masks.push([0, p.length, key]);
    } else masks.push(undefined);
    payloads.push(p);
  }
  const small = payloads.filter((p) => p.length <= SLAB_MAX_PAYLOAD);
  const slab = new SharedArrayBuffer(small.reduce((n, p) => n + p.length, 0));
  let at = 0;
  const now = Date.now();
  const messages: WsCapturedMessage[] = payloads.map((p, i) => {
    let payload: ArrayBuffer | SharedArrayBuffer = slab, offset = 0;
    if (p.length <= SLAB_MAX_PAYLOAD) {
      new Uint8Array(slab, at, p.length).set(p);
      offset = at;
      at += p.length;
    } else {
      payload = new Uint8Array(p).buffer;
      transfer.push(payload);
    }
    return {
      seq: lane.seq++, opcode: 1, rsv1: DEFLATE, frames: 1, wireBytes: p.length + headerBytes(p.length, lane.direction === 'client'),
      payloadBytes: p.length, payload, payloadOffset: offset, masks: masks[i], copiedBytes: p.length,
      ts: now, lastByteAt: performance.timeOrigin + performance.now(),
    };
  });
  return {
    type: 'ws', origin: { conn: lane.conn, host: 'bench.test', port: 443, scheme: 'wss', path: '/v1/responses' },
    upgrade: lane.conn, direction: lane.direction, deflate: DEFLATE ? { contextTakeover: true, windowBits: 15 } : null, window: DEFLATE ? lane.window : null,
    desynced: false, maxBody: 16 << 20, messages,
  };
}

function lanes(): Lane[] {
  return Array.from({ length: CONNS }, (_, c) => (['client', 'server'] as const).map((direction) => ({
    conn: `c${c}-${Date.now().toString(36)}`, direction, deflater: SyncZlib.open(zlib.createDeflateRaw({ windowBits: 15 }) as never)!, window: allocateWindow(15), seq: 0, sent: [],
  }))).flat();
}

interface Post { task: MultiTask; transfer: ArrayBuffer[] }

/** Every batch of a run, built before it starts (compressing and masking are the sender's work, not capture's). */
function tasks(): { work: Post[]; lanes: Lane[] } {
  const ls = lanes();
  const work: Post[] = [];
  // one post to warm the worker up, then the measured ones
  const posts = 1 + Math.ceil(MESSAGES / (BATCH * ls.length));
  for (let i = 0; i < posts; i++) {
    const transfer: ArrayBuffer[] = [];
    work.push({ task: { type: 'multi', parts: ls.map((l) => batchFor(l, transfer)) }, transfer });
  }
  for (const l of ls) l.deflater.close();
  return { work, lanes: ls };
}

/** A fast capture that stored garbage would be no result: every message must be in the store, decoded, in order. */
function verify(dataDir: string, ls: Lane[]): number {
  const store = openStore(dataDir, { readOnly: true });
  try {
    let n = 0;
    for (const l of ls) {
      const got = store.wsMessages(l.conn).filter((r) => r.direction === l.direction);
      if (got.length !== l.sent.length) throw new Error(`${l.conn} ${l.direction}: ${got.length} records stored, ${l.sent.length} sent`);
      got.forEach((r, i) => {
        if (r.error || r.body !== l.sent[i].toString()) throw new Error(`${l.conn} ${l.direction} #${i}: stored ${r.error ?? 'a different body'}`);
      });
      n += got.length;
    }
    return n;
  } finally {
    void store.close();
  }
}

interface Sample { cpuUs: number; wallMs: number }

const worker = new URL('../src/workers/worker.js', import.meta.url).pathname;
const sink = new URL('./capture-sink.js', import.meta.url).pathname;

async function runOnce(filename: string, work: Post[], dataDir: string): Promise<Sample> {
  const close = closeHandshake();
  const p = new Piscina({
    filename, minThreads: 1, maxThreads: 1,
    atomics: 'async', // as the pool: an idle worker's event loop turns (its timers, the close handshake)
    workerData: { dataDir, idBuffer: idSharedBuffer(), redactHeaders: [], maxBody: 16 << 20, close } satisfies WorkerData,
  });
  // warm: the worker's first batches compile and open the store
  const post = ({ task, transfer }: Post) => p.run(task, { transferList: transfer as never });
  await post(work[0]);
  const messages = work.slice(1).reduce((n, t) => n + t.task.parts.reduce((k, w) => k + (w as WsBatchTask).messages.length, 0), 0);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const t of work.slice(1)) await post(t);
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  if (filename === worker) await closeWorkers(p, close); // (the sink has no store to close, and no answer)
  await p.destroy();
  return { cpuUs: (c.user + c.system) / messages, wallMs };
}

const result: { capture: Sample[]; receiveOnly: Sample[]; verifiedRecords: number } = { capture: [], receiveOnly: [], verifiedRecords: 0 };
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, file] of [['receiveOnly', sink], ['capture', worker]] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'greytap-capture-bench-'));
    try {
      const { work, lanes: ls } = tasks();
      const s = await runOnce(file, work, dir);
      if (name === 'capture') result.verifiedRecords += verify(dir, ls);
      result[name].push(s);
      process.stderr.write(`[capture] round ${r + 1} ${name}: ${s.cpuUs.toFixed(1)} µs CPU per message (${(s.wallMs / 1000).toFixed(2)} s)\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
const cap = median(result.capture.map((s) => s.cpuUs)), base = median(result.receiveOnly.map((s) => s.cpuUs));
process.stdout.write(`capture worker, ${SIZE} B messages, ${DEFLATE ? 'deflate on (context takeover)' : 'deflate off'}: ${cap.toFixed(1)} µs CPU per message (median of ${ROUNDS}); receiving only: ${base.toFixed(1)} µs; capture's own ${(cap - base).toFixed(1)} µs = ${(cap / base).toFixed(1)}× the baseline\n`);
if (o.json) writeFileSync(o.json, JSON.stringify({ messages: MESSAGES, batch: BATCH, conns: CONNS, size: SIZE, deflate: DEFLATE, ...result }, null, 2) + '\n');
