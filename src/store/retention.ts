// Background retention (`--retention 7d` and/or `--retention 2GiB`): deletes the oldest records in
// small batches, each its own LMDB write transaction, yielding to the event loop between batches;
// serve runs it on a thread of its own (retention-thread.ts). Freed pages are reused by LMDB; the
// file itself does not shrink, so the size limit applies to live data (dataBytes), not the file size.
// The size bound is checked every few seconds, not once a sweep interval: between checks nothing is
// removed, so a store held at its bound peaks at the bound plus what capture wrote since the last
// check, and the file stays at that peak. Checked once a minute, a 64 MiB bound under (a)'s ~6 MiB/s
// of capture peaked at 450–560 MiB, and each sweep's minute of removals in one burst cut the load's
// rate by a quarter while it ran (bench/soak.ts).
import type { LmdbStore, PurgeResult } from './lmdb.js';
import { idAt, idTime } from './ids.js';

export interface RetentionOptions {
  maxAgeMs: number | null;
  maxBytes: number | null;
  /** How often to sweep by age (default 60 s). */
  intervalMs?: number;
  /** How often to check the size bound, and sweep when over it (default SIZE_CHECK_MS). */
  sizeCheckMs?: number;
  /** Records per delete transaction (default PURGE_BATCH). */
  batch?: number;
  /** Called with a failed sweep's error (default: ignored; the next sweep retries). */
  onError?: (e: unknown) => void;
  /** Called after each pass over one bound, failed or not (the retention metrics). */
  onPass?: (p: RetentionPass) => void;
}

/** One sweep over one bound: what it removed, how long it took, and why it failed if it did (plain data: it crosses threads). */
export interface RetentionPass {
  bound: 'age' | 'size';
  removed: PurgeResult;
  seconds: number;
  error?: string;
}

export interface Retention {
  /** No sweep starts after this; resolves when the one in progress (if any) has stopped. */
  stop(): Promise<void>;
  /** Runs one sweep now (also what the timer runs); resolves with the number of transactions removed. */
  sweep(): Promise<number>;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

/** Reading the live size is a stat of each table (microseconds), so it can be checked often. */
export const SIZE_CHECK_MS = 5_000;
/** Records per delete transaction unless told otherwise (`batch`). */
export const PURGE_BATCH = 500;

export function startRetention(store: LmdbStore, opts: RetentionOptions): Retention {
  const batch = opts.batch ?? PURGE_BATCH;
  let running: Promise<number> | null = null;
  let stopped = false;

  /** Removes what is older than the age bound; adds what it removed to `removed`. */
  async function byAge(maxAgeMs: number, removed: PurgeResult): Promise<void> {
    const cutoffTs = Date.now() - maxAgeMs;
    const cutoff = idAt(cutoffTs);
    for (let n; !stopped && (n = await store.purgeTransactions(cutoff, batch)) > 0; await tick()) removed.transactions += n;
    await olderThan(cutoff, cutoffTs, removed);
  }

  /** Removes the oldest records until live data fits the size bound; adds what it removed to `removed`. */
  async function bySize(maxBytes: number, removed: PurgeResult): Promise<void> {
    // Oldest first until live data fits, each batch only as large as the excess over what the
    // records before it freed each, and at most twice the one before (a fixed batch of 500 took a
    // store of 19 records of 1 MiB past an 8 MiB bound down to none, and a store-wide average
    // overshot on old records bigger than the rest); then drop connections/conversations older
    // than what is left.
    let size = store.dataBytes();
    let want = 1;
    while (!stopped && size > maxBytes) {
      const n = await store.purgeTransactions('ffffffffffffffff', want);
      if (n === 0) break;
      removed.transactions += n;
      const after = store.dataBytes();
      // (small records free no page of their own at times: then only the doubling goes on)
      const fits = after < size ? Math.floor((after - maxBytes) / ((size - after) / n)) : Infinity;
      want = Math.min(batch, 2 * want, Math.max(1, fits));
      size = after;
      await tick();
    }
    // (a 101 kept for a live socket is no measure of what is left: its time may be long past)
    const oldest = store.oldestRemovableId();
    if (removed.transactions > 0) await olderThan(oldest ?? 'ffffffffffffffff', oldest ? idTime(oldest) : Date.now(), removed);
  }

  /** Connections and conversations older than the oldest transaction kept. */
  async function olderThan(cutoff: string, cutoffTs: number, removed: PurgeResult): Promise<void> {
    for (let n = batch; !stopped && n === batch; await tick()) removed.connections += n = await store.purgeConnections(cutoff, cutoffTs, batch);
    for (let n = batch; !stopped && n === batch; await tick()) removed.conversations += n = await store.purgeConversations(cutoffTs, batch);
  }

  /** One pass over one bound, reported whether it removed anything or failed (then it throws on). */
  async function pass(bound: RetentionPass['bound'], run: (removed: PurgeResult) => Promise<void>): Promise<number> {
    const removed: PurgeResult = { transactions: 0, connections: 0, conversations: 0 };
    const t0 = performance.now();
    let error: string | undefined;
    try {
      await run(removed);
    } catch (e) {
      error = String((e as Error)?.message ?? e);
      throw e;
    } finally {
      opts.onPass?.({ bound, removed, seconds: (performance.now() - t0) / 1000, ...(error !== undefined && { error }) });
    }
    return removed.transactions;
  }

  async function sweepOnce(age: boolean, size: boolean): Promise<number> {
    const { maxAgeMs, maxBytes } = opts;
    let removed = 0;
    if (age && maxAgeMs != null) removed += await pass('age', (r) => byAge(maxAgeMs, r));
    if (size && maxBytes != null && !stopped) removed += await pass('size', (r) => bySize(maxBytes, r));
    return removed;
  }

  function sweep(byAge = true, bySize = true): Promise<number> {
    // One sweep at a time: a timer tick during a long sweep joins it instead of racing it.
    running ??= sweepOnce(byAge, bySize).finally(() => { running = null; });
    return running;
  }

  const every = (ms: number, byAge: boolean, bySize: boolean) => {
    const t = setInterval(() => { sweep(byAge, bySize).catch((e) => opts.onError?.(e)); }, ms);
    t.unref();
    return t;
  };
  const timers = [
    ...(opts.maxAgeMs != null ? [every(opts.intervalMs ?? 60_000, true, false)] : []),
    ...(opts.maxBytes != null ? [every(opts.sizeCheckMs ?? SIZE_CHECK_MS, false, true)] : []),
  ];
  return {
    async stop() {
      stopped = true;
      for (const t of timers) clearInterval(t);
      await running?.catch(() => {});
    },
    sweep: () => sweep(),
  };
}
