// Cost of a contender's process, from /proc (Linux): CPU seconds (utime + stime, all threads),
// peak resident set (VmHWM), which can be reset per workload by writing "5" to clear_refs
// (proc(5), Linux ≥ 4.0), and a sampled peak of its anonymous part (RssAnon). Missing /proc or a
// gone process reads as null, never throws. Also the machine's own cost of first-touching memory,
// which every contender that stores data pays. And the CPU this process spends in one call (the
// benches that measure greytap's code in-process).
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync } from 'node:child_process';

let clkTck = 100;
try { clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { /* default */ }

export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm)": state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / clkTck;
  } catch {
    return null;
  }
}

/** CPU the process used per second of wall time over the next `ms` (null: it is gone). */
export async function cpuRate(pid: number, ms: number): Promise<number | null> {
  const a = cpuSeconds(pid);
  await sleep(ms);
  const b = cpuSeconds(pid);
  return a === null || b === null ? null : (b - a) / (ms / 1000);
}

/** One `NAME: N kB` field of /proc/<pid>/status, in MiB. */
function statusMiB(pid: number, field: 'VmHWM' | 'RssAnon'): number | null {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Peak RSS in MiB since start or since the last resetPeakRss. */
export function peakRssMiB(pid: number): number | null {
  return statusMiB(pid, 'VmHWM');
}

/** Resident anonymous memory in MiB: what the process allocated, without the file pages it maps (RSS counts those too). */
export function rssAnonMiB(pid: number): number | null {
  return statusMiB(pid, 'RssAnon');
}

export function resetPeakRss(pid: number): boolean {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); return true; } catch { return false; }
}

/**
 * Peak RssAnon, sampled every `everyMs` until stop(). VmHWM alone misleads for a store that maps
 * its file: greytap's VmHWM also counts the LMDB file's pages that reads mapped in, which are
 * clean page cache (the kernel can take them back at any time), and which grow with the store —
 * to several GiB over a `--full` run while the anonymous part stayed at a few hundred MiB. The
 * kernel keeps no high-water mark of RssAnon alone, so it is sampled.
 */
export function sampleAnonPeak(pid: number, everyMs = 200): { stop(): number | null } {
  let peak: number | null = null;
  const read = () => {
    const v = rssAnonMiB(pid);
    if (v !== null && (peak === null || v > peak)) peak = v;
  };
  read();
  const timer = setInterval(read, everyMs);
  return { stop: () => { clearInterval(timer); read(); return peak; } };
}

/**
 * What the kernel charges for a page of memory touched for the first time (µs per 4 KiB page):
 * 64 MiB freshly allocated, one write per page. It bounds any contender that stores new data (its
 * page cache and buffers grow), so it is printed with the machine. On the VM this was developed on
 * it read 2.2–16.6 µs within one session: the host takes freed guest memory back (within 20 s),
 * so the cost depends on what the machine did just before, not on the contender.
 */
export function firstTouchMicrosPerPage(): number {
  const bytes = 64 << 20;
  const b = Buffer.allocUnsafeSlow(bytes); // malloc → mmap: pages not yet backed
  const t0 = performance.now();
  for (let i = 0; i < bytes; i += 4096) b[i] = 1;
  return ((performance.now() - t0) * 1000) / (bytes / 4096);
}

/** CPU milliseconds (user + system, all of this process's threads) spent while `fn` runs, or until its promise settles. */
export function cpuMs(fn: () => Promise<unknown>): Promise<number>;
export function cpuMs(fn: () => unknown): number;
export function cpuMs(fn: () => unknown): number | Promise<number> {
  const t0 = process.cpuUsage();
  const took = () => { const c = process.cpuUsage(t0); return (c.user + c.system) / 1000; };
  const r = fn();
  return r instanceof Promise ? r.then(took) : took();
}
