// Retention on a thread of its own. Its removals that must re-check under LMDB's writer lock run
// as synchronous transactions, which wait for a capture worker's commit and then sync: on serve's
// main thread that would stall forwarding for as long, once a sweep. Here only this thread waits.
// It runs at capture's priority (--capture-nice): a store held at its bound removes a record for
// every record captured, at about the cost of writing it (bench/store.ts). Choosing them is this
// thread's; the removals themselves are lmdb-js's async writes, on libuv's threads at normal
// priority, where LMDB's writer lock (which capture's commits wait for) is held shortest — a
// holder at nice 15 is preempted with the lock held (lmdb.ts, purgeTransactions).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openStore } from './lmdb.js';
import { startRetention, type RetentionOptions, type RetentionPass } from './retention.js';
import { niceThisThread } from '../thread-priority.js';

interface ThreadData { dataDir: string; opts: Pick<RetentionOptions, 'maxAgeMs' | 'maxBytes' | 'intervalMs' | 'sizeCheckMs'>; nice?: number }

export interface RetentionThread {
  /** Lets a sweep in progress finish its batch, closes the thread's store handle, ends the thread. */
  stop(): Promise<void>;
}

/** A thread that died waits this long before it is started again, doubling up to RESTART_MAX_MS while it keeps dying. */
export const RESTART_MS = 10_000;
const RESTART_MAX_MS = 300_000;

/**
 * Null when no retention is asked for (no thread is started). `nice`: the thread's CPU niceness
 * (serve's --capture-nice). `onSweep` hears each sweep over one bound (serve counts them in
 * /metrics). A thread that dies is logged, counted as a failed sweep of each bound it keeps (so an
 * alert on failed sweeps sees it: a store with no sweeper grows past its bound), and started again.
 */
export function startRetentionThread(dataDir: string, opts: ThreadData['opts'], nice?: number, onSweep?: (s: RetentionPass) => void, restartMs = RESTART_MS): RetentionThread | null {
  if (opts.maxAgeMs == null && opts.maxBytes == null) return null;
  const bounds: RetentionPass['bound'][] = [...(opts.maxAgeMs != null ? ['age' as const] : []), ...(opts.maxBytes != null ? ['size' as const] : [])];
  let w: Worker;
  let exited: Promise<void>;
  let stopping = false;
  let wait = restartMs;
  let restart: NodeJS.Timeout | undefined;
  const start = () => {
    w = new Worker(new URL(import.meta.url), { workerData: { dataDir, opts, nice } satisfies ThreadData });
    w.unref();
    let died: string | undefined;
    w.on('error', (e) => { died = e.message; });
    w.on('message', (s: RetentionPass) => {
      if (s.error === undefined) wait = restartMs; // sweeping again: a later death restarts soon
      onSweep?.(s);
    });
    exited = new Promise<void>((r) => w.once('exit', (code) => {
      r();
      if (stopping) return;
      const why = died ?? `exited with code ${code}`;
      console.error(`greytap: retention stopped: ${why}; starting it again in ${wait / 1000} s`);
      for (const bound of bounds) onSweep?.({ bound, removed: { transactions: 0, connections: 0, conversations: 0 }, seconds: 0, error: `retention thread: ${why}` });
      restart = setTimeout(start, wait);
      restart.unref();
      wait = Math.min(2 * wait, RESTART_MAX_MS);
    }));
  };
  start();
  return {
    async stop() {
      stopping = true;
      clearTimeout(restart);
      w.postMessage('stop');
      // a sweep's batch is short; a thread that does not answer is ended
      const t = setTimeout(() => void w.terminate(), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

if (!isMainThread && parentPort && (workerData as ThreadData | undefined)?.dataDir) {
  const { dataDir, opts, nice } = workerData as ThreadData;
  niceThisThread(nice);
  const port = parentPort;
  const store = openStore(dataDir);
  const retention = startRetention(store, {
    ...opts,
    onError: (e) => console.error(`greytap: retention sweep failed: ${(e as Error)?.message ?? e}`),
    onPass: (s) => port.postMessage(s),
  });
  port.once('message', async () => {
    await retention.stop();
    await store.close();
    port.close();
  });
}
