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

/**
 * Null when no retention is asked for (no thread is started). `nice`: the thread's CPU niceness
 * (serve's --capture-nice). `onSweep` hears each sweep over one bound (serve counts them in /metrics).
 */
export function startRetentionThread(dataDir: string, opts: ThreadData['opts'], nice?: number, onSweep?: (s: RetentionPass) => void): RetentionThread | null {
  if (opts.maxAgeMs == null && opts.maxBytes == null) return null;
  const w = new Worker(new URL(import.meta.url), { workerData: { dataDir, opts, nice } satisfies ThreadData });
  w.unref();
  w.on('error', (e) => console.error(`greytap: retention stopped: ${e.message}`));
  w.on('message', (s: RetentionPass) => onSweep?.(s));
  const exited = new Promise<void>((r) => w.once('exit', () => r()));
  return {
    async stop() {
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
