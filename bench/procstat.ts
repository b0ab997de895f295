// Cost of a contender's process, from /proc (Linux): CPU seconds (utime + stime, all threads) and
// peak resident set (VmHWM), which can be reset per workload by writing "5" to clear_refs
// (proc(5), Linux ≥ 4.0). Missing /proc or a gone process reads as null, never throws.
import { readFileSync, writeFileSync } from 'node:fs';
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

/** Peak RSS in MiB since start or since the last resetPeakRss. */
export function peakRssMiB(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

export function resetPeakRss(pid: number): boolean {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); return true; } catch { return false; }
}
