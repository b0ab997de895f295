// The WebSocket capture fuzzer (bench/ws-fuzz.ts) for as long as you like: random cases through
// the real tap, pool, worker and LMDB store; every failure printed with the case seed that
// replays it. Exits 1 when any case failed.
//
//   node dist/bench/fuzz-ws.js [--seed N] [--iterations N] [--seconds N]   (--help lists all)
//   node dist/bench/fuzz-ws.js --replay CASE_SEED                          (one case, described)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { Rng, caseSeed, generateCase, runCases, type Failure, type RunStats } from './ws-fuzz.js';
import { CapturePool } from '../src/workers/pool.js';

const o = benchArgs('node dist/bench/fuzz-ws.js [options]: differential fuzzing of WebSocket capture', {
  seed: { default: -1, min: -1, help: 'run seed (-1: a random one, printed)' },
  replay: { default: -1, min: -1, help: 'run only the case with this case seed (as printed with a failure)' },
  iterations: { default: 100000, min: 1, help: 'cases at most' },
  seconds: { default: 120, min: 1, help: 'stop starting cases after this long' },
  group: { default: 12, min: 1, help: 'cases run concurrently (one connection each)' },
  'max-size': { default: 256 << 10, min: 0, help: 'largest message payload in bytes' },
  'max-messages': { default: 40, min: 0, help: 'messages per direction at most' },
  corrupt: { default: 40, min: 0, help: 'percent of cases with a corruption' },
  workers: { default: 2, min: 1, help: 'capture pool workers' },
  'max-failures': { default: 20, min: 1, help: 'stop after this many failures' },
  'max-body': { default: 1 << 20, min: 256, help: 'with --replay: the pool\'s --max-body the case ran with' },
  memory: { default: -1, min: -1, help: 'with --replay: the pool\'s --max-capture-memory the case ran with (-1: unbounded)' },
});
const seed = o.seed >= 0 ? o.seed >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const caseOpts = { maxSize: o['max-size'], maxMessages: o['max-messages'], corruptRate: o.corrupt / 100 };
/** a fresh store (and pools) after this many cases, so a long run does not fill the disk */
const CASES_PER_STORE = 300;

interface Env { pool: CapturePool; dir: string; pressure: boolean }

/** `memory`: --max-capture-memory (also per connection); without it, far above what a group reads, so nothing is dropped. */
function newEnv(maxBody: number, memory?: number): Env {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-fuzz-ws-'));
  const pool = new CapturePool({ workers: o.workers, dataDir: dir, maxBody, maxCaptureMemory: memory ?? 1 << 30, maxConnCaptureMemory: memory ?? 256 << 20, redactHeaders: [] });
  return { pool, dir, pressure: memory !== undefined };
}

async function closeEnv(e: Env): Promise<void> {
  await e.pool.close();
  rmSync(e.dir, { recursive: true, force: true });
}

/**
 * Three pools, drawn from the run seed for each store, groups taking turns: --max-body 1 MiB (every
 * message whole); a small --max-body (truncated messages, compressed ones lost to it); a small
 * --max-capture-memory (messages dropped as queue_full, memory bounded; no corruption there).
 */
function envs(round: number): Env[] {
  const rng = new Rng(seed + round);
  return [newEnv(1 << 20), newEnv(rng.range(256, 70_000)), newEnv(1 << 20, rng.range(256 << 10, 4 << 20))];
}

function report(f: Failure, maxBody: number, memory?: number): void {
  process.stdout.write(`FAIL case seed ${f.seed} (replay: node dist/bench/fuzz-ws.js --replay ${f.seed} --max-body ${maxBody}${memory ? ` --corrupt 0 --memory ${memory}` : ''})\n  ${f.describe}\n  ${f.problem}\n`);
}

const stats: RunStats = { cases: 0, messages: 0, bytes: 0, errors: {} };
// A hang anywhere (the pool, a worker, the store, closing them) must not look like a quiet run.
let phase = 'starting';
let progressAt = performance.now();
const step = (p: string) => { phase = p; progressAt = performance.now(); };
const watchdog = setInterval(() => {
  if (performance.now() - progressAt < 120_000) return;
  process.stdout.write(`HANG: no progress for 120 s in ${phase}; pools: ${pools.map((e) => `queueDepth ${e.pool.queueDepth}, memory ${e.pool.memoryBytes}`).join('; ')}\n`);
  if (!process.env.FUZZ_HANG_WAIT) process.exit(3); // (set: stays, for a debugger to attach)
}, 5000);
watchdog.unref();
const failures: Failure[] = [];
const started = performance.now();
let pools: Env[] = o.replay >= 0 ? [newEnv(o['max-body'], o.memory >= 0 ? o.memory : undefined)] : envs(0);
try {
  if (o.replay >= 0) {
    const c = generateCase(o.replay >>> 0, { ...caseOpts, maxBody: o['max-body'] });
    process.stdout.write(`case ${c.seed}: ${c.describe}\n`);
    const found = await runCases(pools[0].pool, pools[0].dir, [c], stats, pools[0].pressure);
    found.forEach((f) => report(f, o['max-body']));
    failures.push(...found);
  } else {
    process.stdout.write(`seed ${seed} (replay this run: --seed ${seed})\n`);
    let i = 0;
    let group = 0;
    let sinceStore = 0;
    while (i < o.iterations && performance.now() - started < o.seconds * 1000 && failures.length < o['max-failures']) {
      const env = pools[group++ % pools.length];
      const maxBody = env.pool.opts.maxBody;
      const n = Math.min(o.group, o.iterations - i);
      const cases = Array.from({ length: n }, (_, k) => generateCase(caseSeed(seed, i + k), { ...caseOpts, maxBody, corruptRate: env.pressure ? 0 : caseOpts.corruptRate }));
      i += n;
      step(`cases ${i - n}..${i - 1} (${env.pressure ? 'memory' : 'max-body'} ${env.pressure ? env.pool.opts.maxCaptureMemory : maxBody})`);
      const found = await runCases(env.pool, env.dir, cases, stats, env.pressure);
      found.forEach((f) => report(f, maxBody, env.pressure ? env.pool.opts.maxCaptureMemory : undefined));
      failures.push(...found);
      if ((sinceStore += n) >= CASES_PER_STORE) {
        step('closing pools');
        await Promise.all(pools.map(closeEnv));
        step('opening pools');
        pools = envs(group);
        sinceStore = 0;
      }
      if (process.env.FUZZ_VERBOSE || group % 10 === 0) process.stderr.write(`[fuzz-ws] ${stats.cases} cases, ${stats.messages} records, ${(stats.bytes / 2 ** 20).toFixed(0)} MiB, ${failures.length} failures, ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
    }
  }
} finally {
  await Promise.all(pools.map(closeEnv));
}
const rss = (process.memoryUsage().rss / 2 ** 20).toFixed(0);
process.stdout.write(`${stats.cases} cases, ${stats.messages} records, ${(stats.bytes / 2 ** 20).toFixed(1)} MiB of frames in ${((performance.now() - started) / 1000).toFixed(1)} s (rss ${rss} MiB): ${failures.length} failure(s)\nerror codes recorded: ${JSON.stringify(stats.errors)}\n`);
process.exitCode = failures.length ? 1 : 0;
