// Every process the bench starts is registered here and killed when the runner exits — normally,
// on an uncaught error, or on SIGINT/SIGTERM. Forked helpers also exit on IPC disconnect, which
// covers a runner killed with SIGKILL.
import { fork, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ClientJob, ClientProgress, ClientResult, ReadyMessage } from './protocol.js';

const live = new Set<ChildProcess>();

export interface Child {
  proc: ChildProcess;
  /** last few KiB of stderr+stdout, for "failed to start" reasons */
  tail(): string;
  exited(): boolean;
}

function track(proc: ChildProcess): Child {
  live.add(proc);
  let tail = '';
  const keep = (b: Buffer) => { tail = (tail + b.toString()).slice(-4096); };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  if (process.env.BENCH_CHILD_LOG) proc.stdout?.pipe(createWriteStream(`${process.env.BENCH_CHILD_LOG}.${proc.pid}`));
  let gone = false;
  proc.once('exit', () => { gone = true; live.delete(proc); });
  proc.on('error', (e) => { keep(Buffer.from(`\n${e.message}\n`)); });
  return { proc, tail: () => tail.trim(), exited: () => gone || proc.exitCode !== null || proc.signalCode !== null };
}

/** The last meaningful lines of a child's output: stack frames dropped, joined on one line. */
export function lastLines(text: string, n = 2): string {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at ') && !/^\^+$/.test(l)).slice(-n).join(' | ');
}

export function forkChild(modulePath: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  return track(fork(modulePath, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: env ?? process.env, execArgv: [] }));
}

export function spawnChild(cmd: string, args: string[], opts: SpawnOptions = {}): Child {
  return track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
}

/** Resolves with the child's ReadyMessage; rejects when it exits first or after timeoutMs. */
export function waitReady(c: Child, timeoutMs: number): Promise<ReadyMessage> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => done(new Error(`not ready after ${timeoutMs} ms`)), timeoutMs);
    const onMsg = (m: unknown) => { if ((m as ReadyMessage)?.ready) done(null, m as ReadyMessage); };
    const onExit = (code: number | null, sig: string | null) => done(new Error(`exited (${sig ?? code}) before ready`));
    const done = (e: Error | null, m?: ReadyMessage) => {
      clearTimeout(t);
      c.proc.removeListener('message', onMsg);
      c.proc.removeListener('exit', onExit);
      if (e) reject(e); else resolve(m!);
    };
    c.proc.on('message', onMsg);
    c.proc.once('exit', onExit);
  });
}

/** Stops a child: `signal`, then SIGKILL after graceMs. */
export async function stopChild(c: Child, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (c.exited()) return;
  const exited = once(c.proc, 'exit');
  c.proc.kill(signal);
  const t = setTimeout(() => c.proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/**
 * Runs one client job in a fresh load-client process (client.ts); bounded by the job's own
 * durations plus slack. With `job.progressMs`, its running totals go to `onProgress` meanwhile.
 */
export function runClient(job: ClientJob, onProgress?: (p: ClientProgress) => void): Promise<ClientResult> {
  const c: Child = forkChild(fileURLToPath(new URL('./client.js', import.meta.url)), []);
  return new Promise((resolve, reject) => {
    const limit = job.warmupMs + job.durationMs + job.drainMs + (job.workload.kind === 'bulk' ? job.bulkTimeoutMs : 0) + 45_000;
    const t = setTimeout(() => { void stopChild(c, 'SIGKILL'); reject(new Error(`client did not finish within ${limit / 1000} s`)); }, limit);
    const onMessage = (m: ClientResult | ClientProgress) => {
      if ('progress' in m) { onProgress?.(m); return; }
      clearTimeout(t);
      c.proc.removeListener('message', onMessage);
      resolve(m);
    };
    c.proc.on('message', onMessage);
    c.proc.once('exit', (code, sig) => { clearTimeout(t); reject(new Error(`client exited (${sig ?? code}): ${lastLines(c.tail(), 2)}`)); });
    c.proc.send(job);
  });
}

function killAll(): void {
  for (const p of live) { try { p.kill('SIGKILL'); } catch { /* already gone */ } }
  live.clear();
}

let installed = false;
/** Kill every child on exit and on SIGINT/SIGTERM (then exit 130/143). */
export function installExitHandlers(onSignal?: () => void): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAll);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(sig, () => {
      onSignal?.();
      killAll();
      process.exit(code);
    });
  }
}
