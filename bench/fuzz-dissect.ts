// The dissector and assembly fuzzer (bench/dissect-fuzz.ts) for as long as you like: cases from
// --seed on until --iterations cases or --seconds have passed. The cases run in a child process
// watched by this one: a run of a case (it is run again to time it and to minimise it) that does
// not finish is a hang, reported with its case seed, and the child is replaced to go on with the
// next case. Each failure is printed with the case seed that
// replays it and its mutations minimised. Exits 1 when any case failed.
//
//   node dist/bench/fuzz-dissect.js [--seed N] [--iterations N] [--seconds N]   (--help lists all)
//   node dist/bench/fuzz-dissect.js --replay CASE_SEED                          (one case, described)
//   node dist/bench/fuzz-dissect.js --write-golden test/workers/dissect-fuzz.golden.json
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './args.js';
import { caseSeed, describeOps, fuzzCase, generateCase, goldenConversations, materialise, minimise, type FuzzOptions } from './dissect-fuzz.js';
import { openStore } from '../src/store/lmdb.js';
import type { Store } from '../src/store/store.js';

const o = benchArgs('node dist/bench/fuzz-dissect.js [options]: structure-aware fuzzing of the dissectors and conversation assembly', {
  seed: { default: -1, min: -1, help: 'run seed (-1: a random one, printed)' },
  replay: { default: -1, min: -1, help: 'run only the case with this case seed (as printed with a failure), described' },
  iterations: { default: 1e9, min: 1, help: 'cases at most' },
  seconds: { default: 60, min: 1, help: 'stop starting cases after this long' },
  'budget-ms': { default: 3000, min: 1, help: 'a case whose assembly takes longer fails as slow' },
  watchdog: { default: 60, min: 1, help: 'seconds one run of a case may take before it is reported as a hang and its process replaced' },
  'max-failures': { default: 20, min: 1, help: 'stop after this many failures' },
  'scaling-every': { default: 3, min: 1, help: 'time every Nth case with size mutations at doubling sizes (it costs a dozen runs)' },
  first: { default: 0, min: 0, help: '(child) index of the first case' },
}, { 'no-scaling': 'do not time cases with size mutations at doubling sizes', runner: '(internal) run cases and report them on stdout' }, { dir: '(child) store directory', 'write-golden': 'write what the unmutated seeds assemble to (test/workers/dissect-fuzz.golden.json) and exit' });

const seed = o.seed >= 0 ? o.seed >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const opts: FuzzOptions = { budgetMs: o['budget-ms'], scaling: !o['no-scaling'] };
/** a fresh store after this many cases, so a long run does not fill the disk */
const CASES_PER_STORE = 1000;

async function withStore<T>(dir: string, fn: (s: Store) => Promise<T>): Promise<T> {
  const store = openStore(dir);
  try { return await fn(store); } finally { await store.close(); }
}

if (o['write-golden']) {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-fuzz-dissect-'));
  try {
    const golden = await withStore(dir, goldenConversations);
    writeFileSync(o['write-golden'], JSON.stringify(golden, null, 1) + '\n');
    process.stdout.write(`${Object.keys(golden).length} seeds written to ${o['write-golden']}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else if (o.replay >= 0) {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-fuzz-dissect-'));
  try {
    await withStore(dir, async (store) => {
      const c = generateCase(o.replay >>> 0);
      process.stdout.write(`case ${c.seed}: seed ${c.seedName}, batches cut at ${JSON.stringify(c.batches)}\n  mutations:\n    ${describeOps(c.ops)}\n`);
      const r = await fuzzCase(store, c, opts);
      process.stdout.write(`${r.chars} characters, assembled in ${r.ms.toFixed(1)} ms: ${r.problems.length ? r.problems.join('\n  ') : 'no problem'}\n`);
      if (r.problems.length) {
        const m = await minimise(store, c, opts);
        process.stdout.write(`minimised to:\n    ${describeOps(m.ops)}\n  ${m.problem}\n`);
      } else if (c.items.length <= 12) {
        for (const r of materialise(c.items).records) process.stdout.write(`  ${r.kind} ${'body' in r && r.body !== undefined ? r.body.slice(0, 300) : r.kind === 'HTTP' ? r.reqBody?.slice(0, 300) : ''}\n`);
      }
      process.exitCode = r.problems.length ? 1 : 0;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else if (o.runner) {
  // The child: cases from --first on; a line per case start (S) and per failure (F), then the totals (T).
  const dir = o.dir!;
  const started = performance.now();
  let i = o.first, cases = 0;
  const say = (line: object) => process.stdout.write(JSON.stringify(line) + '\n');
  while (cases < o.iterations && performance.now() - started < o.seconds * 1000) {
    const storeDir = join(dir, `store-${i}`);
    await withStore(storeDir, async (store) => {
      for (let k = 0; k < CASES_PER_STORE && cases < o.iterations && performance.now() - started < o.seconds * 1000; k++, i++, cases++) {
        const cs = caseSeed(seed, i);
        say({ S: i, seed: cs });
        const c = generateCase(cs);
        const progress = () => say({ H: i });
        const r = await fuzzCase(store, c, { ...opts, scaling: opts.scaling && i % o['scaling-every'] === 0, progress });
        if (r.problems.length) {
          say({ F: i, seed: cs, seedName: c.seedName, problems: r.problems.slice(0, 5), ops: describeOps(c.ops) });
          const m = await minimise(store, c, { ...opts, progress });
          say({ M: i, minimal: describeOps(m.ops), problem: m.problem });
        }
        say({ D: i, chars: r.chars });
      }
    });
    rmSync(storeDir, { recursive: true, force: true });
  }
  say({ T: cases });
} else {
  process.stdout.write(`seed ${seed} (replay this run: --seed ${seed})\n`);
  const started = performance.now();
  let next = 0, cases = 0, chars = 0, failures = 0, hangs = 0;
  const self = fileURLToPath(import.meta.url);
  const report = (f: { seed: number; seedName?: string; problems: string[]; ops?: string }) => {
    failures++;
    process.stdout.write(`FAIL case seed ${f.seed} (replay: node dist/bench/fuzz-dissect.js --replay ${f.seed})${f.seedName ? ` on ${f.seedName}` : ''}\n  ${f.problems.join('\n  ')}\n`);
    if (f.ops) process.stdout.write(`  mutations:\n    ${f.ops}\n`);
  };
  let interrupted = false;
  process.once('SIGINT', () => { interrupted = true; });
  while (!interrupted && failures < o['max-failures'] && cases < o.iterations) {
    const left = o.seconds - (performance.now() - started) / 1000;
    if (left <= 0) break;
    const dir = mkdtempSync(join(tmpdir(), 'greytap-fuzz-dissect-'));
    const child = spawn(process.execPath, ['--expose-gc', self, '--runner', '--seed', String(seed), '--first', String(next), '--iterations', String(o.iterations - cases),
      '--seconds', String(Math.ceil(left)), '--budget-ms', String(o['budget-ms']), '--scaling-every', String(o['scaling-every']), '--dir', dir, ...(o['no-scaling'] ? ['--no-scaling'] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
    let current: { i: number; seed: number; since: number } | undefined;
    let finished = false;
    let lastProgress = performance.now();
    const lines = createInterface({ input: child.stdout! });
    const closed = new Promise((r) => lines.once('close', r));
    lines.on('line', (l) => {
      let m: any;
      try { m = JSON.parse(l); } catch { process.stdout.write(l + '\n'); return; }
      if (m.S !== undefined) current = { i: m.S, seed: m.seed, since: performance.now() };
      else if (m.H !== undefined) { if (current) current.since = performance.now(); }
      else if (m.F !== undefined) report(m);
      else if (m.M !== undefined) process.stdout.write(`  minimal (seed ${current?.seed}):\n    ${m.minimal}\n  → ${m.problem}\n`);
      else if (m.D !== undefined) {
        cases++;
        chars += m.chars;
        next = m.D + 1;
        current = undefined;
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now();
          process.stderr.write(`[fuzz-dissect] ${cases} cases, ${failures} failures, ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
        }
      } else if (m.T !== undefined) finished = true;
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const watch = setInterval(() => {
      if (current && performance.now() - current.since > o.watchdog * 1000) {
        hangs++;
        report({ seed: current.seed, problems: [`hang: still running after ${o.watchdog} s`] });
        next = current.i + 1;
        cases++;
        current = undefined;
        child.kill('SIGKILL');
      }
    }, 500);
    await exited;
    clearInterval(watch);
    await closed;
    rmSync(dir, { recursive: true, force: true });
    if (finished) break;
    if (current) { // the child died on a case without the watchdog
      report({ seed: current.seed, problems: ['the case process died'] });
      next = current.i + 1;
      cases++;
    }
  }
  process.stdout.write(`${cases} cases (${(chars / 1e6).toFixed(1)} M characters of documents) in ${((performance.now() - started) / 1000).toFixed(1)} s: ${failures} failure(s), ${hangs} hang(s)\n`);
  process.exitCode = failures ? 1 : 0;
}
