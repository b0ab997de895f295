// Background retention (`--retention 7d` and/or `--retention 2GiB`): deletes the oldest records in
// small batches, each its own LMDB write transaction, yielding to the event loop between batches;
// serve runs it on a thread of its own (retention-thread.ts). Freed pages are reused by LMDB; the
// file itself does not shrink, so the size limit applies to live data (dataBytes), not the file size.
import type { LmdbStore } from './lmdb.js';
import { idAt, idTime } from './ids.js';

export interface RetentionOptions {
  maxAgeMs: number | null;
  maxBytes: number | null;
  /** How often to sweep (default 60 s). */
  intervalMs?: number;
  /** Records per delete transaction (default 500). */
  batch?: number;
  /** Called with a failed sweep's error (default: ignored; the next sweep retries). */
  onError?: (e: unknown) => void;
}

export interface Retention {
  /** No sweep starts after this; resolves when the one in progress (if any) has stopped. */
  stop(): Promise<void>;
  /** Runs one sweep now (also what the timer runs); resolves with the number of transactions removed. */
  sweep(): Promise<number>;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

export function startRetention(store: LmdbStore, opts: RetentionOptions): Retention {
  const batch = opts.batch ?? 500;
  let running: Promise<number> | null = null;
  let stopped = false;

  async function sweepOnce(): Promise<number> {
    let removed = 0;
    if (opts.maxAgeMs !== null && opts.maxAgeMs !== undefined) {
      const cutoffTs = Date.now() - opts.maxAgeMs;
      const cutoff = idAt(cutoffTs);
      for (let n; !stopped && (n = await store.purgeTransactions(cutoff, batch)) > 0; await tick()) removed += n;
      while (!stopped && (await store.purgeConnections(cutoff, cutoffTs, batch)) === batch) await tick();
      while (!stopped && (await store.purgeConversations(cutoffTs, batch)) === batch) await tick();
    }
    if (opts.maxBytes !== null && opts.maxBytes !== undefined) {
      // Oldest first until live data fits, each batch only as large as the excess over what the
      // records before it freed each, and at most twice the one before (a fixed batch of 500 took a
      // store of 19 records of 1 MiB past an 8 MiB bound down to none, and a store-wide average
      // overshot on old records bigger than the rest); then drop connections/conversations older
      // than what is left.
      let size = store.dataBytes();
      let want = 1;
      while (!stopped && size > opts.maxBytes) {
        const n = await store.purgeTransactions('ffffffffffffffff', want);
        if (n === 0) break;
        removed += n;
        const after = store.dataBytes();
        // (small records free no page of their own at times: then only the doubling goes on)
        const fits = after < size ? Math.floor((after - opts.maxBytes) / ((size - after) / n)) : Infinity;
        want = Math.min(batch, 2 * want, Math.max(1, fits));
        size = after;
        await tick();
      }
      // (a 101 kept for a live socket is no measure of what is left: its time may be long past)
      const oldest = store.oldestRemovableId();
      if (removed > 0 && !stopped) {
        const cutoff = oldest ?? 'ffffffffffffffff';
        const cutoffTs = oldest ? idTime(oldest) : Date.now();
        while (!stopped && (await store.purgeConnections(cutoff, cutoffTs, batch)) === batch) await tick();
        while (!stopped && (await store.purgeConversations(cutoffTs, batch)) === batch) await tick();
      }
    }
    return removed;
  }

  function sweep(): Promise<number> {
    // One sweep at a time: a timer tick during a long sweep joins it instead of racing it.
    running ??= sweepOnce().finally(() => { running = null; });
    return running;
  }

  const timer = setInterval(() => {
    sweep().catch((e) => opts.onError?.(e));
  }, opts.intervalMs ?? 60_000);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => {});
    },
    sweep,
  };
}
