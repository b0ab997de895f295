// The HTTP/1.1 tap's differential fuzzer (bench/http-fuzz.ts) run for long: cases from --seed on,
// cycling through the modes, until --iterations cases or --seconds have passed. A failing case
// prints its seed and mode; `--seed N --iterations 1 --mode M` replays it.
//
//   node dist/bench/fuzz-http.js [--seed N] [--iterations N] [--seconds N] [--mode valid|corrupt|smuggle]
import { benchArgs } from './args.js';
import { fuzzOne, MODES, type Mode } from './http-fuzz.js';

const o = benchArgs('node dist/bench/fuzz-http.js [options]: differential fuzzing of the HTTP/1.1 tap', {
  seed: { default: Date.now() % 1_000_000_000, min: 0, help: 'first case\'s seed' },
  iterations: { default: 1e9, min: 1, help: 'cases to run at most' },
  seconds: { default: 60, min: 1, help: 'time to run at most' },
}, { verbose: 'print why the tap framed more or fewer messages than llhttp' }, { mode: 'only this mode (valid, corrupt, smuggle); all of them by default' });

const modes: Mode[] = o.mode ? [o.mode as Mode] : MODES;
if (modes.some((m) => !MODES.includes(m))) {
  process.stderr.write(`unknown --mode ${o.mode}\n`);
  process.exit(2);
}
process.stdout.write(`seed ${o.seed}, modes ${modes.join(', ')}\n`);
const until = performance.now() + o.seconds * 1000;
const counts = { cases: 0, exchanges: 0, failed: 0, lenient: 0, stricter: 0 };
for (let i = 0; i < o.iterations && performance.now() < until; i++) {
  const seed = o.seed + i;
  const mode = modes[i % modes.length];
  const out = fuzzOne(seed, mode);
  counts.cases++;
  counts.exchanges += out.exchanges;
  if (out.lenient) counts.lenient++;
  if (out.stricter) counts.stricter++;
  if (o.verbose && out.notes.length) process.stdout.write(`note --seed ${seed} --mode ${mode}: ${out.notes.join(' | ')}\n`);
  if (out.problems.length) {
    counts.failed++;
    process.stdout.write(`FAIL --seed ${seed} --mode ${mode}\n  ${out.problems.slice(0, 5).join('\n  ')}\n`);
  }
}
process.stdout.write(`${counts.cases} cases (${counts.exchanges} exchanges), ${counts.failed} failed; tap framed more than llhttp in ${counts.lenient}, fewer in ${counts.stricter}\n`);
process.exitCode = counts.failed ? 1 : 0;
