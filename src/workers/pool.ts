// Main-thread side of the Piscina capture pool. Items are committed in submission order per lane
// (a WebSocket direction, or one connection's HTTP exchanges and connection records) with at most
// ONE task in flight per lane: items arriving meanwhile wait and go as one batch. Workers stay
// stateless — a WebSocket direction's DEFLATE window is the lane's shared buffer, which the task
// names and the decoder advances in place (one task in flight: no one else touches it meanwhile).
// Nothing here is awaited by the forwarding path: push/http/connection return at once.
//
// Memory bound: one budget (global and per connection) covers the taps' capture buffers being
// filled AND the payloads the pool holds (queued or in flight) until their task settles. The taps
// ask `reserve` before copying; handing an item over moves its bytes into the pool's hold, which
// always succeeds (the bytes exist already) and makes later `reserve` calls fail sooner. Every
// queued item also counts a fixed overhead for its metadata; a payload-less item (the capture was
// dropped) is still queued so its record and the gap are written, up to a slack of 1/8 over the
// bound — past that it is dropped whole (counted as queue_full), so a flood of tiny messages
// against a stalled pool cannot grow memory either. Total ≤ 1.125 × maxCaptureMemory plus one
// message per connection.
import { Piscina } from 'piscina';
import type { Worker } from 'node:worker_threads';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { closeHandshake, closeWorkers } from './worker-close.js';
import { idSharedBuffer } from '../store/ids.js';
import { allocateWindow } from './deflate-window.js';
import { captureBuffers, type Slab } from '../io/capture-buffer.js';
import type { ConnectionRecord } from '../records.js';
import type { CaptureTask, ConnectionTask, DeflateParams, HttpCaptureTask, LaneBatchTask, MultiTask, StreamOrigin, WsBatchTask, WsCapturedMessage } from './tasks.js';
import type { TaskOutput, WorkerData } from './worker.js';
import type { DissectRule } from './dissect/index.js';
import { applyDeltas, captureDropped, poolUtilization, reportCaptureMemory, reportQueueDepth, workerTaskSeconds } from '../metrics.js';

export interface CapturePoolOptions {
  workers: number;
  dataDir: string;
  maxBody: number;
  maxCaptureMemory: number;
  maxConnCaptureMemory: number;
  redactHeaders: string[];
  /** CPU niceness of the worker threads (default 15: forwarding and the agent win contention) */
  nice?: number;
  /** endpoint rules for conversation assembly (--dissect-rules) */
  dissectRules?: DissectRule[];
  /** ids just committed, and their SSE events where the workers made them (api/events.ts) */
  onCommitted?: (ids: string[], frames?: string[]) => void;
  /** SSE clients listening (RecordEvents.listening): while any do, workers make the events */
  eventsListening?: Int32Array;
  /** Worker module (tests wrap the real one); default ./worker.js next to this file. */
  workerFile?: string | URL;
}

/** One WebSocket direction's ordered stream, as the tap sees it. */
export interface WsStream {
  /** Hands a finished message over (its payload is transferred to a worker later, or, in a slab, released once it settled). Never throws. */
  push(m: WsCapturedMessage, slab?: Slab | null): void;
  /** Memory for a capture buffer being filled; false → drop this capture (queue_full). */
  reserve(bytes: number): boolean;
  release(bytes: number): void;
}

/** Lane tasks coalesced into one Piscina task at most. */
const MAX_PARTS = 256;
/**
 * While the pool is busy, ready lane tasks are posted at most this often (an idle pool posts at
 * once). Each post is a message to a worker, a task's worth of bookkeeping on both threads and an
 * LMDB commit; under load, waiting turns many small batches into a few larger ones. Measured under
 * the bench's WebSocket echo (8 sockets, greytap CPU per echoed message, all threads, fresh
 * process): ~550–600 µs posting at once, ~430 µs at 15 ms, ~290 µs at 50 ms; 100 ms gained nothing
 * more. The price is capture lag (and live-view delay) of the same order, which nobody watching a
 * UI notices.
 */
const FLUSH_INTERVAL_MS = 50;
/** Records per coalesced task at most (one lane's batch may exceed it alone). */
const MAX_TASK_RECORDS = 1024;

interface ReadyPart { task: CaptureTask; transferList: ArrayBuffer[]; resolve: (o: TaskOutput) => void; reject: (e: unknown) => void }

function recordsOf(t: CaptureTask): number {
  return t.type === 'ws' ? t.messages.length : t.type === 'lane' ? t.items.length : 1;
}

/** Messages per WebSocket batch task (one LMDB transaction); the rest wait for the next round. */
const MAX_BATCH = MAX_TASK_RECORDS;
/** Bytes counted per queued item for its metadata (an estimate of a captured message object). */
export const ITEM_OVERHEAD = 256;
/**
 * Bytes a message's `masks` list of `numbers` entries holds past ITEM_OVERHEAD, which covers one
 * frame's [offset, length, key]: a fragmented message of tiny client frames grows it by 3 numbers a
 * frame, 8 bytes each (mask keys past 2^30 make V8 store the list as doubles).
 */
export function masksBytes(numbers: number): number {
  return Math.max(0, numbers - 3) * 8;
}

export class CapturePool {
  private readonly piscina: Piscina<CaptureTask | MultiTask, any>;
  private readonly lanes = new Map<string, TaskLane>();
  private memTotal = 0;
  private readonly memByConn = new Map<string, number>();
  /** items handed to the pool and not yet settled (committed, recorded as failed, or given up) */
  private outstanding = 0;
  private idleWaiters: (() => void)[] = [];
  private closed = false;
  private readonly gaugeTimer: NodeJS.Timeout;
  /** each worker's event-loop counters at the last utilization sample */
  private eluSeen = new Map<Worker, EventLoopUtilization>();
  private readonly unreportGauges: () => void;
  /** lane tasks ready this turn, posted together by flush() */
  private ready: ReadyPart[] = [];
  private flushScheduled = false;
  private flushedAt = -Infinity;
  private storeErrors = 0;
  private storeErrorLoggedAt = 0;
  private readonly closeHandshake = closeHandshake();

  constructor(readonly opts: CapturePoolOptions) {
    const workers = Math.max(1, opts.workers);
    this.piscina = new Piscina({
      filename: String(opts.workerFile ?? new URL('./worker.js', import.meta.url)),
      minThreads: workers,
      maxThreads: workers,
      // Each lane has ≤ 1 task in flight, so several tasks per worker never reorder a lane; tasks
      // of different lanes that wait for a commit together share one LMDB transaction.
      concurrentTasksPerWorker: 32,
      // Idle workers must keep their event loop turning: the assembler's trailing timers run there.
      atomics: 'async',
      idleTimeout: Infinity,
      workerData: { dataDir: opts.dataDir, idBuffer: idSharedBuffer(), redactHeaders: opts.redactHeaders, maxBody: opts.maxBody, nice: opts.nice ?? 15, dissectRules: opts.dissectRules, close: this.closeHandshake, eventsListening: opts.eventsListening } satisfies WorkerData,
    });
    // A crashed worker is replaced by Piscina; its tasks reject and are handled per lane.
    this.piscina.on('error', () => {});
    const unreport = [reportCaptureMemory(() => this.memTotal), reportQueueDepth(() => this.queueDepth)];
    this.unreportGauges = () => unreport.forEach((f) => f());
    // Sampled each second, not per task. Not Piscina's `utilization` getter: that one is an average
    // over the pool's whole life, and (piscina 5.3) 1000 times too small — a pool busy without pause
    // read 0.0009 — so the gauge never moved.
    this.gaugeTimer = setInterval(() => poolUtilization.set(this.busyShare()), 1000);
    this.gaugeTimer.unref();
  }

  /** The workers' mean event-loop utilization since the last call: the share of that time they were decoding or assembling. */
  private busyShare(): number {
    const threads = this.piscina.threads;
    const seen = new Map<Worker, EventLoopUtilization>();
    let busy = 0;
    for (const w of threads) {
      const now = w.performance.eventLoopUtilization();
      const before = this.eluSeen.get(w);
      busy += before ? w.performance.eventLoopUtilization(now, before).utilization : now.utilization;
      seen.set(w, now);
    }
    this.eluSeen = seen; // (a replaced worker drops out)
    return threads.length ? busy / threads.length : 0;
  }

  wsStream(origin: StreamOrigin, upgrade: string, direction: 'client' | 'server', deflate: DeflateParams | null, connKey: string): WsStream {
    const lane = new WsLane(this, origin, upgrade, direction, deflate, connKey);
    return {
      push: (m, slab) => lane.push(m, slab),
      reserve: (n) => this.reserve(connKey, n),
      release: (n) => this.release(connKey, n),
    };
  }

  /** One HTTP exchange; exchanges of one connection are committed in order. Body bytes count against the budget until committed. */
  http(task: HttpCaptureTask, connKey: string): void {
    const bytes = (task.reqBody?.buffer.byteLength ?? 0) + (task.respBody?.buffer.byteLength ?? 0);
    this.lane(connKey).push({ task, bytes });
  }

  /** A connection record (written on open and again on close), in order with the connection's other items. */
  connection(record: ConnectionRecord): void {
    const task: ConnectionTask = { type: 'conn', record };
    this.lane(record.id).push({ task, bytes: 0 });
  }

  /** Memory for a capture buffer: false when over the global or per-connection bound (caller drops: queue_full). */
  reserve(connKey: string, bytes: number): boolean {
    if (bytes <= 0) return true;
    const conn = this.memByConn.get(connKey) ?? 0;
    if (this.memTotal + bytes > this.opts.maxCaptureMemory || conn + bytes > this.opts.maxConnCaptureMemory) return false;
    this.hold(connKey, bytes);
    return true;
  }

  release(connKey: string, bytes: number): void {
    if (bytes <= 0) return;
    const conn = this.memByConn.get(connKey) ?? 0;
    const n = Math.min(bytes, conn);
    if (conn - n === 0) this.memByConn.delete(connKey);
    else this.memByConn.set(connKey, conn - n);
    this.memTotal = Math.max(0, this.memTotal - n);
  }

  /** Whether a payload-less item may still be queued (within the slack over the bound). */
  admitMetadata(connKey: string): boolean {
    const slack = (n: number) => n + (n >> 3);
    return this.memTotal + ITEM_OVERHEAD <= slack(this.opts.maxCaptureMemory) && (this.memByConn.get(connKey) ?? 0) + ITEM_OVERHEAD <= slack(this.opts.maxConnCaptureMemory);
  }

  /** Bytes already allocated that the pool now holds: counted unconditionally. */
  hold(connKey: string, bytes: number): void {
    if (bytes <= 0) return;
    this.memByConn.set(connKey, (this.memByConn.get(connKey) ?? 0) + bytes);
    this.memTotal += bytes;
  }

  /** Bytes held by capture buffers and queued payloads. */
  get memoryBytes(): number {
    return this.memTotal;
  }

  /** Items handed over and not yet settled, wherever they wait (greytap_pool_queue_depth). */
  get queueDepth(): number {
    return this.outstanding;
  }

  /** Resolves when every item handed over so far has settled (committed or recorded as failed). */
  drain(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.gaugeTimer);
    this.unreportGauges();
    await this.drain();
    await closeWorkers(this.piscina, this.closeHandshake); // (worker-close.ts: why, before destroy)
    await this.piscina.destroy();
  }

  // ── internals shared with the lanes ──────────────────────────────────────────────────────

  /** Runs a task (coalesced with the other lanes' ready tasks, see FLUSH_INTERVAL_MS); settles with its output. */
  run(task: CaptureTask, transferList: ArrayBuffer[]): Promise<TaskOutput> {
    return new Promise<TaskOutput>((resolve, reject) => {
      this.ready.push({ task, transferList, resolve, reject });
      if (this.ready.length >= MAX_PARTS) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        const wait = this.flushedAt + FLUSH_INTERVAL_MS - performance.now();
        if (wait <= 0) setImmediate(() => this.flush());
        else setTimeout(() => this.flush(), wait);
      }
    }).then((out) => {
      for (const b of out.recycle ?? []) captureBuffers.give(b);
      applyDeltas(out.metrics);
      if (out.metrics.dropped?.store_error) this.storeErrorLog(out.metrics.dropped.store_error);
      workerTaskSeconds.observe({ type: task.type === 'lane' ? task.items[0].type : task.type }, out.seconds);
      if (out.ids.length) this.opts.onCommitted?.(out.ids, out.frames);
      return out;
    });
  }

  /**
   * Posts the ready parts, grouped into tasks of at most MAX_TASK_RECORDS records: one task per
   * turn when idle, several when a backlog has built up — a huge task would commit (and show
   * progress, and free memory) only when all of it is done.
   */
  private flush(): void {
    this.flushScheduled = false;
    this.flushedAt = performance.now();
    const ready = this.ready.splice(0);
    for (let i = 0; i < ready.length; ) {
      let records = 0;
      let j = i;
      while (j < ready.length && (j === i || records + recordsOf(ready[j].task) <= MAX_TASK_RECORDS)) records += recordsOf(ready[j++].task);
      this.post(ready.slice(i, j));
      i = j;
    }
  }

  private post(parts: ReadyPart[]): void {
    if (parts.length === 1) {
      const [p] = parts;
      this.piscina.run(p.task, { transferList: p.transferList as never }).then(p.resolve, p.reject);
      return;
    }
    const multi: MultiTask = { type: 'multi', parts: parts.map((p) => p.task) };
    this.piscina.run(multi, { transferList: parts.flatMap((p) => p.transferList) as never }).then(
      (outs: TaskOutput[]) => parts.forEach((p, i) => (outs[i].failed === undefined ? p.resolve(outs[i]) : p.reject(new Error(outs[i].failed)))),
      (e) => parts.forEach((p) => p.reject(e)),
    );
  }

  itemsIn(n: number): void {
    this.outstanding += n;
  }

  itemsSettled(n: number): void {
    this.outstanding -= n;
    if (this.outstanding <= 0) {
      this.outstanding = 0;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  dropLane(key: string, lane: TaskLane): void {
    if (this.lanes.get(key) === lane) this.lanes.delete(key);
  }

  private lane(connKey: string): TaskLane {
    let l = this.lanes.get(connKey);
    if (!l) this.lanes.set(connKey, (l = new TaskLane(this, connKey)));
    return l;
  }

  /** A refused write (disk or map full, read-only store) stops capture, not forwarding: say so, at most every 10 s. */
  private storeErrorLog(n: number): void {
    this.storeErrors += n;
    const now = Date.now();
    if (now - this.storeErrorLoggedAt < 10_000) return;
    this.storeErrorLoggedAt = now;
    console.error(`greytap: the store refused ${this.storeErrors} record(s) (disk or map full?); capture is dropped (greytap_capture_dropped_total{reason="store_error"}), forwarding continues`);
    this.storeErrors = 0;
  }
}

/** Defers a lane's submit to the end of the current tick, so messages parsed from one read batch together. */
abstract class Lane {
  protected busy = false;
  private scheduled = false;

  protected schedule(): void {
    if (this.busy || this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (!this.busy) this.kick();
    });
  }

  protected abstract kick(): void;
}

/** A WebSocket direction: batches of messages, the DEFLATE window shared from task to task. */
class WsLane extends Lane {
  private pending: { m: WsCapturedMessage; bytes: number; slab: Slab | null }[] = [];
  /** context takeover only, from the first batch on */
  private window: SharedArrayBuffer | null = null;
  private desynced = false;
  /** a compressed message of this context-takeover direction was dropped without a record: desynced from here on */
  private gap = false;
  /** how many of `pending` were queued before that gap: they decode as if it had not happened */
  private beforeGap = 0;

  constructor(
    private readonly pool: CapturePool,
    private readonly origin: StreamOrigin,
    private readonly upgrade: string,
    private readonly direction: 'client' | 'server',
    private readonly deflate: DeflateParams | null,
    private readonly connKey: string,
  ) {
    super();
  }

  push(m: WsCapturedMessage, slab: Slab | null = null): void {
    if (!m.payload && !this.pool.admitMetadata(this.connKey)) {
      // Far over the bound: not even the record is kept. The tap counted a dropped payload already
      // (a message with payload bytes and none here).
      if (m.payloadBytes === 0) captureDropped.inc({ reason: 'queue_full' });
      if (this.deflate?.contextTakeover && m.rsv1 && m.opcode < 8 && !this.gap) {
        this.gap = true;
        this.beforeGap = this.pending.length;
      }
      return;
    }
    const bytes = m.copiedBytes + masksBytes(m.masks?.length ?? 0) + ITEM_OVERHEAD;
    this.pool.hold(this.connKey, bytes);
    this.pending.push({ m, bytes, slab });
    this.pool.itemsIn(1);
    this.schedule();
  }

  protected kick(): void {
    if (this.pending.length === 0) return;
    // Messages queued before the gap go in batches of their own, not desynced by it.
    const ahead = this.beforeGap > 0;
    const batch = this.pending.splice(0, ahead ? Math.min(this.beforeGap, MAX_BATCH) : MAX_BATCH);
    if (ahead) this.beforeGap -= batch.length;
    this.busy = true;
    const messages = batch.map((b) => b.m);
    const bytes = batch.reduce((s, b) => s + b.bytes, 0);
    // Own buffers move to the worker; slabs are shared, not moved (one slab may hold many messages).
    const transfer = messages.flatMap((m) => (m.payload instanceof ArrayBuffer ? [m.payload] : []));
    this.submit(messages, transfer, ahead).finally(() => {
      for (const b of batch) b.slab?.release();
      this.pool.release(this.connKey, bytes);
      this.pool.itemsSettled(batch.length);
      this.busy = false;
      this.schedule();
    });
  }

  /** `aheadOfGap`: the messages were queued before the gap (if any) */
  private task(messages: WsCapturedMessage[], aheadOfGap: boolean): WsBatchTask {
    if (this.deflate?.contextTakeover) this.window ??= allocateWindow(this.deflate.windowBits);
    return {
      type: 'ws', origin: this.origin, upgrade: this.upgrade, direction: this.direction, deflate: this.deflate,
      window: this.window, desynced: this.desynced || (this.gap && !aheadOfGap), maxBody: this.pool.opts.maxBody, messages,
    };
  }

  private async submit(messages: WsCapturedMessage[], transfer: ArrayBuffer[], aheadOfGap: boolean): Promise<void> {
    let failure: unknown;
    try {
      const out = await this.pool.run(this.task(messages, aheadOfGap), transfer);
      this.desynced = out.desynced ?? false;
      if (!out.lostFrom) return;
      // its first parts are stored: only the rest is recorded again
      messages = messages.slice(out.lostFrom.index);
      failure = new Error(out.lostFrom.detail);
    } catch (e) {
      failure = e;
    }
    // The worker threw or died: record the items without payload as worker_error, from a fresh
    // task, before anything later in this lane (order survives the crash). A lost compressed
    // message on a context-takeover direction desyncs it; the decoder knows that from rsv1. (So a
    // window the dead task half advanced is never used again: it only advances on compressed
    // messages, and those are now lost.) The message objects are intact: posting cloned them and
    // only detached their payloads.
    const detail = `worker: ${(failure as Error)?.message ?? String(failure)}`;
    let n = 0;
    const meta = messages.map((m) => {
      const c: WsCapturedMessage = { ...m, payload: undefined, masks: undefined, copiedBytes: 0 };
      if (!c.error) {
        c.error = 'worker_error';
        c.errorDetail = detail;
        n++;
      }
      return c;
    });
    captureDropped.inc({ reason: 'worker_error' }, n);
    try {
      const out = await this.pool.run(this.task(meta, aheadOfGap), []);
      this.desynced = out.desynced ?? false;
    } catch {
      // Even the metadata could not be written: give up on these items (already counted).
      if (this.deflate?.contextTakeover && messages.some((m) => m.rsv1 && m.opcode < 8)) this.desynced = true;
    }
  }
}

interface LaneItem {
  task: HttpCaptureTask | ConnectionTask;
  bytes: number;
}

/**
 * One connection's HTTP exchanges and connection records, in order: everything queued while the
 * previous task was in flight goes as one task (one LMDB commit), so a keep-alive connection's
 * capture keeps up however many exchanges arrive per flush interval.
 */
class TaskLane extends Lane {
  private pending: LaneItem[] = [];

  constructor(private readonly pool: CapturePool, private readonly key: string) {
    super();
  }

  push(item: LaneItem): void {
    item.bytes += ITEM_OVERHEAD;
    this.pool.hold(this.key, item.bytes);
    this.pending.push(item);
    this.pool.itemsIn(1);
    this.schedule();
  }

  protected kick(): void {
    if (this.pending.length === 0) {
      this.pool.dropLane(this.key, this);
      return;
    }
    const items = this.pending.splice(0, MAX_BATCH);
    this.busy = true;
    this.submit(items.map((i) => i.task)).finally(() => {
      this.pool.release(this.key, items.reduce((n, i) => n + i.bytes, 0));
      this.pool.itemsSettled(items.length);
      this.busy = false;
      if (this.pending.length) this.schedule();
      else this.pool.dropLane(this.key, this);
    });
  }

  private async submit(tasks: (HttpCaptureTask | ConnectionTask)[]): Promise<void> {
    const batch = (items: (HttpCaptureTask | ConnectionTask)[]): CaptureTask => (items.length === 1 ? items[0] : ({ type: 'lane', items } satisfies LaneBatchTask));
    const transfer = tasks.flatMap((t) => (t.type === 'http' ? [t.reqBody, t.respBody].flatMap((b) => (b ? [b.buffer as ArrayBuffer] : [])) : []));
    let metas: (HttpCaptureTask | ConnectionTask)[];
    try {
      await this.pool.run(batch(tasks), transfer);
      return;
    } catch (e) {
      // Posting moved the bodies away (the task objects are intact): what is left to record is the
      // metadata, copied only now, as WsLane does.
      metas = tasks.map((t) => (t.type === 'http' ? { ...t, reqBody: undefined, respBody: undefined } : t));
      for (const meta of metas) {
        captureDropped.inc({ reason: 'worker_error' });
        if (meta.type !== 'http') continue;
        meta.error ??= 'worker_error';
        meta.errorDetail ??= `worker: ${(e as Error)?.message ?? String(e)}`;
        meta.truncated = true;
      }
    }
    try {
      await this.pool.run(batch(metas), []);
    } catch {
      // given up: already counted
    }
  }
}
