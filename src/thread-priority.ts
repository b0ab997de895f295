// Capture's background threads (the pool's workers, retention's sweeper) must never slow the
// agent: on a busy host the forwarding thread and the agent's own processes win the CPU, and
// capture lags (then drops, counted) instead — `--capture-nice`, default 15.
import { setPriority } from 'node:os';

/**
 * Lowers the calling thread's CPU priority to `nice`. Linux nice is per thread: setPriority(0, …)
 * applies to the calling thread only (threads it starts later inherit it; libuv's pool does not).
 */
export function niceThisThread(nice: number | undefined): void {
  if (!nice) return;
  try { setPriority(0, nice); } catch { /* not permitted here: run at normal priority */ }
}
