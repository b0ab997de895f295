// Closing the capture workers before Piscina destroys them. destroy() terminates a worker wherever
// its JavaScript is, and one terminated inside an LMDB write transaction never exits (worker.ts
// says why), so destroy() would never resolve. Work can run in a worker after its tasks settled
// (the trailing WebSocket assemblies), so the pool asks each worker to finish it and close its
// store, and waits for the answers, before destroying.
import { randomUUID } from 'node:crypto';
import { BroadcastChannel } from 'node:worker_threads';
import type { Piscina } from 'piscina';

/** How long a close waits for the workers to finish their own work and close the store. */
const WORKER_CLOSE_TIMEOUT_MS = 10_000;

/** Goes to the workers in workerData (WorkerData.close): the channel's name, and a flag set before it is used. */
export interface CloseHandshake { channel: string; flag: SharedArrayBuffer }

export function closeHandshake(): CloseHandshake {
  return { channel: `greytap-pool-close-${randomUUID()}`, flag: new SharedArrayBuffer(4) };
}

/**
 * Asks every worker of `piscina` to finish and close its store, and resolves when each has said so.
 * A worker that does not answer in time (crashed, stuck) is left to destroy(), and said so.
 */
export async function closeWorkers(piscina: Piscina, h: CloseHandshake): Promise<void> {
  const waiting = new Set(piscina.threads.map((w) => w.threadId));
  if (waiting.size === 0) return;
  const ch = new BroadcastChannel(h.channel);
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve) => {
      ch.onmessage = (e) => {
        waiting.delete(e.data?.closed);
        if (waiting.size === 0) resolve();
      };
      timer = setTimeout(() => {
        console.error(`greytap: ${waiting.size} capture worker(s) did not close their store within ${WORKER_CLOSE_TIMEOUT_MS / 1000} s; terminating them`);
        resolve();
      }, WORKER_CLOSE_TIMEOUT_MS);
      // the flag first: a worker starting after the message closes at once
      Atomics.store(new Int32Array(h.flag), 0, 1);
      ch.postMessage('close');
    });
  } finally {
    clearTimeout(timer);
    ch.close();
  }
}
