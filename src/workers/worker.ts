// The Piscina entry: decode one capture task, commit its records, assemble conversations. The
// store is opened once per worker thread; nothing else survives between tasks but caches (a
// direction's DEFLATE window is the lane's shared buffer, named by the task).
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { openStore } from '../store/lmdb.js';
import { redactPath } from '../store/redact.js';
import { adoptIdBuffer, nextId } from '../store/ids.js';
import { niceThisThread } from '../thread-priority.js';
import { someoneListens, storedEvent } from '../api/events.js';
import { decodeWsParts, type WsBatchPart } from './decode-ws.js';
import { decodeTurn, decodedFull, heldBytes, hold, release } from './decoded-budget.js';
import { RECYCLE_MIN } from '../io/capture-buffer.js';
import { httpRecord } from './decode-http.js';
import { assembleRecords, connectionEnded, finishTrailingAssemblies, setDissectRules } from './assemble.js';
import type { CaptureTask, MultiTask, WsBatchResult } from './tasks.js';
import type { MetricDeltas } from '../metrics.js';
import type { Store } from '../store/store.js';
import { StoreError } from '../store/lmdb.js';
import type { TransactionRecord } from '../records.js';
import type { DissectRule } from './dissect/index.js';
import type { CloseHandshake } from './worker-close.js';

/** What the pool hands each capture worker at start-up (Piscina's workerData). */
export interface WorkerData {
  dataDir: string;
  idBuffer: SharedArrayBuffer;
  redactHeaders: string[];
  maxBody: number;
  nice?: number;
  /** --dissect-rules, loaded and checked by serve */
  dissectRules?: DissectRule[];
  /** the close handshake (worker-close.ts): the channel, and a flag set before it is used */
  close?: CloseHandshake;
  /** SSE clients listening on the main thread (api/events.ts): while any do, commits come with their events */
  eventsListening?: Int32Array;
}

/** What every task returns to the pool (WsBatchResult fields are present for 'ws' tasks). */
export interface TaskOutput extends Partial<Pick<WsBatchResult, 'desynced'>> {
  /** a part of a multi task that threw: only that part fails (the pool records its items as worker_error) */
  failed?: string;
  /**
   * A WebSocket batch that threw after committing its first parts: the index of its first message
   * not committed, and why (the pool records those from there on as worker_error, not the whole
   * batch again).
   */
  lostFrom?: { index: number; detail: string };
  ids: string[];
  /** the SSE event of each id ('' for none), when an SSE client listened as they were committed (api/events.ts) */
  frames?: string[];
  metrics: MetricDeltas;
  /** HTTP tasks: the body buffers, committed and no longer referenced, handed back for reuse (capture-buffer.ts) */
  recycle?: ArrayBuffer[];
  /** time this worker spent on the task (decode + commit + assembly) */
  seconds: number;
}

const wd = Piscina.workerData as WorkerData;

niceThisThread(wd?.nice);
if (wd?.idBuffer) adoptIdBuffer(wd.idBuffer);
if (wd?.dissectRules) setDissectRules(wd.dissectRules);
let store: Store | undefined;
let closing: Promise<void> | undefined;

function theStore(): Store {
  if (closing) throw new StoreError('the capture pool is closing');
  return (store ??= openStore(wd.dataDir));
}

// Piscina ends its workers with terminate(), which stops JavaScript wherever it is. Stopped inside a
// transactionSync callback, lmdb-js's exit hook (EnvWrap::cleanupStrayTxns, lmdb 3.5.6) waits for
// the writer lock its own thread holds: the thread never exits and piscina.destroy() never resolves.
// This is the worker's side of the close handshake (the pool's: worker-close.ts): finish the
// trailing assemblies, close the store, answer.
if (wd?.close) {
  const ch = new BroadcastChannel(wd.close.channel);
  ch.unref();
  const close = () => {
    closing ??= (async () => {
      await finishTrailingAssemblies();
      const s = store;
      store = undefined;
      await s?.close();
    })().catch(() => { /* closed as far as it goes: nothing is left to write */ }).then(() => ch.postMessage({ closed: threadId }));
  };
  ch.onmessage = (e) => { if (e.data === 'close') close(); };
  // started after the request was sent: close at once (the flag is set before sending)
  if (Atomics.load(new Int32Array(wd.close.flag), 0)) close();
}

function add(into: MetricDeltas, from: MetricDeltas | undefined): void {
  if (!from) return;
  for (const k of ['decodeErrors', 'dropped', 'storeRecords'] as const) {
    const src = from[k];
    if (!src) continue;
    const dst = (into[k] ??= {});
    for (const [n, v] of Object.entries(src)) dst[n] = (dst[n] ?? 0) + v;
  }
  if (from.lags?.length) (into.lags ??= []).push(...from.lags);
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Committed ids, and their SSE events when a client listens (api/events.ts). */
type Committed = Pick<TaskOutput, 'ids' | 'frames'>;

/** Joins committed parts in order; events only if every part has them (the main thread reads the rest). */
function joined(parts: Committed[]): Committed {
  const ids = parts.flatMap((p) => p.ids);
  return parts.every((p) => p.frames || p.ids.length === 0) && parts.some((p) => p.frames) ? { ids, frames: parts.flatMap((p) => p.frames ?? []) } : { ids };
}

/** Commits records; a refused write is counted (store_error), never thrown: the lane must go on. */
async function commit(records: TransactionRecord[], lastByteAt: number[], metrics: MetricDeltas): Promise<Committed> {
  if (records.length === 0) return { ids: [] };
  let s: Store;
  try {
    s = theStore();
    await s.putTransactions(records);
  } catch {
    add(metrics, { dropped: { store_error: records.length } });
    return { ids: [] };
  }
  // read back as stored (redacted, bodies apart), here at capture's priority, not on the forwarding thread
  let frames: string[] | undefined;
  if (someoneListens(wd?.eventsListening)) {
    try {
      frames = records.map((r) => storedEvent(s, r.id));
    } catch { /* the main thread reads them */ }
  }
  const t = now();
  const counts: Record<string, number> = {};
  for (const r of records) counts[r.kind] = (counts[r.kind] ?? 0) + 1;
  add(metrics, { storeRecords: counts, lags: lastByteAt.map((b) => Math.max(0, (t - b) / 1000)) });
  try {
    // Conversation assembly is a bonus on top of capture: its failure must not fail the task.
    add(metrics, await assembleRecords(s, records, { throttle: true }));
  } catch {
    /* the records are stored; the conversation view misses them */
  }
  return { ids: records.map((r) => r.id), frames };
}

/**
 * Decodes at this caller's turn (decoded-budget.ts) and holds what came out, returning it and the
 * bytes held (to release after the commit); the turn passes on also when decoding throws.
 */
function decodeHeld<T>(decode: () => T, bytesOf: (out: T) => number): [T, number] {
  let bytes = 0;
  try {
    const out = decode();
    bytes = bytesOf(out);
    return [out, bytes];
  } finally {
    hold(bytes);
  }
}

async function runOne(task: CaptureTask): Promise<TaskOutput> {
  const t0 = performance.now();
  const metrics: MetricDeltas = {};
  if (task.type === 'lane') {
    const outs = await Promise.all(task.items.map(runOne));
    for (const o of outs) add(metrics, o.metrics);
    return { ...joined(outs), metrics, recycle: outs.flatMap((o) => o.recycle ?? []), seconds: (performance.now() - t0) / 1000 };
  }
  // Decoding waits while this worker holds too much decoded output awaiting commit (decoded-budget.ts);
  // a connection record waits its turn too, so a lane's items stay in order.
  // (before the turn: nothing may throw between being let in and hold(), or no one else would be)
  if (task.type === 'ws') task.origin.path = redactPath(task.origin.path, wd.redactHeaders); // every record of the batch carries it
  const turn = decodeTurn();
  if (turn) await turn;
  if (task.type === 'ws') {
    const parts = decodeWsParts(task, nextId, decodedFull);
    const done: Committed[] = [];
    let committed = 0; // messages
    try {
      for (;;) {
        let r: IteratorResult<WsBatchPart, WsBatchPart & { desynced: boolean; metrics: MetricDeltas }>;
        try {
          [r] = decodeHeld(() => parts.next(), (p) => p.value.bytes);
        } catch (e) {
          if (committed === 0) throw e; // nothing of it is stored: the pool records it all
          return { ...joined(done), desynced: true, metrics, lostFrom: { index: committed, detail: (e as Error)?.message ?? String(e) }, seconds: (performance.now() - t0) / 1000 };
        }
        const { records, first, bytes } = r.value;
        try {
          done.push(await commit(records, task.messages.slice(first, first + records.length).map((m) => m.lastByteAt), metrics));
        } finally {
          release(bytes);
        }
        committed = first + records.length;
        if (r.done) {
          add(metrics, r.value.metrics);
          return { ...joined(done), desynced: r.value.desynced, metrics, seconds: (performance.now() - t0) / 1000 };
        }
        const next = decodeTurn();
        if (next) await next;
      }
    } finally {
      parts.return(undefined as never);
    }
  }
  if (task.type === 'http') {
    const [{ record, metrics: m }, bytes] = decodeHeld(() => httpRecord(task, task.id ?? nextId(), wd.redactHeaders), (o) => heldBytes(o.record));
    add(metrics, m);
    let done: Committed;
    try {
      done = await commit([record], [task.lastByteAt], metrics);
    } finally {
      release(bytes);
    }
    // Committed and assembled: nothing refers to the captured bytes any more (the record's body
    // fields are views of them, and the record is dropped here).
    const recycle = [task.reqBody, task.respBody].flatMap((b) => (b && b.buffer.byteLength >= RECYCLE_MIN ? [b.buffer as ArrayBuffer] : []));
    return { ...done, metrics, recycle, seconds: (performance.now() - t0) / 1000 } satisfies TaskOutput;
  }
  hold(0); // (its turn passes on: a connection record holds nothing decoded)
  try {
    await theStore().putConnection(task.record);
    // written on open and again on close: count the record once
    if (task.record.endTs === undefined) add(metrics, { storeRecords: { CONN: 1 } });
  } catch {
    add(metrics, { dropped: { store_error: 1 } });
  }
  if (task.record.endTs !== undefined) {
    try { add(metrics, await connectionEnded(theStore(), task.record.id, task.record.endTs)); } catch { /* a conversation view detail */ }
  }
  return { ids: [], metrics, seconds: (performance.now() - t0) / 1000 } satisfies TaskOutput;
}

/**
 * The Piscina entry. A multi task's parts run concurrently: their synchronous parts (decode, puts)
 * fall in one event turn, so lmdb-js commits all their records in one transaction. A part that
 * throws fails alone: the others' records are committed, and failing them too would have their
 * lanes record them again as worker_error (and desync their context-takeover directions).
 */
export default async function run(task: CaptureTask | MultiTask): Promise<unknown> {
  const outs: TaskOutput[] = task.type === 'multi'
    ? (await Promise.allSettled(task.parts.map(runOne))).map((s) => (s.status === 'fulfilled' ? s.value : failedPart(s.reason)))
    : [await runOne(task)];
  const result = task.type === 'multi' ? outs : outs[0];
  const buffers = outs.flatMap((o) => o.recycle ?? []);
  if (buffers.length === 0) return result;
  // Moved back, not cloned (Piscina transfers a top-level movable).
  return Piscina.move({ [Piscina.transferableSymbol]: buffers, [Piscina.valueSymbol]: result } as never);
}

function failedPart(e: unknown): TaskOutput {
  return { ids: [], metrics: {}, seconds: 0, failed: (e as Error)?.message ?? String(e) };
}
