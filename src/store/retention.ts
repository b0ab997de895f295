// Background retention (`--retention 7d` and/or `--retention 2GiB`): deletes the oldest records in
// small batches, each its own LMDB write transaction, yielding to the event loop between batches;
// serve runs it on a thread of its own (retention-thread.ts). Freed pages are reused by LMDB; the
// file itself does not shrink, so the size limit applies to live data (dataBytes), not the file size.
// The size bound is checked every few seconds, not once a sweep interval: between checks nothing is
// removed, so a store held at its bound peaks at the bound plus what capture wrote since the last
// check, and the file stays at that peak. Checked once a minute, a 64 MiB bound under (a)'s ~6 MiB/s
// of capture peaked at 450–560 MiB, and each sweep's minute of removals in one burst cut the load's
// rate by a quarter while it ran (bench/soak.ts).
import type { LmdbStore } from './lmdb.js';
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

  async function sweepOnce(byAge: boolean, bySize: boolean): Promise<number> {
    let removed = 0;
    if (byAge && opts.maxAgeMs !== null && opts.maxAgeMs !== undefined) {
      const cutoffTs = Date.now() - opts.maxAgeMs;
      const cutoff = idAt(cutoffTs);
      for (let n; !stopped && (n = await store.purgeTransactions(cutoff, batch)) > 0; await tick()) removed += n;
      while (!stopped && (await store.purgeConnections(cutoff, cutoffTs, batch)) === batch) await tick();
      while (!stopped && (await store.purgeConversations(cutoffTs, batch)) === batch) await tick();
    }
    if (bySize && opts.maxBytes !== null && opts.maxBytes !== undefined) {
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
