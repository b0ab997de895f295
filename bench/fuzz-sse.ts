// The SSE capture fuzzer (bench/sse-fuzz.ts) for as long as you like: random event streams from a
// real origin through a real greytap (in this process) to a real client; every failure printed
// with the case seed that replays it. Exits 1 when any case failed.
//
//   node dist/bench/fuzz-sse.js [--seed N] [--iterations N] [--seconds N]   (--help lists all)
//   node dist/bench/fuzz-sse.js --replay CASE_SEED                          (one case, described)
import { benchArgs } from './args.js';
import { caseSeed, generateCase, interpretEventStream, startRig, type Case, type Rig } from './sse-fuzz.js';

const o = benchArgs('node dist/bench/fuzz-sse.js [options]: differential fuzzing of SSE capture against the WHATWG event stream interpretation', {
  seed: { default: -1, min: -1, help: 'run seed (-1: a random one, printed)' },
  replay: { default: -1, min: -1, help: 'run only the case with this case seed (as printed with a failure)' },
  iterations: { default: 1e9, min: 1, help: 'cases at most' },
  seconds: { default: 120, min: 1, help: 'stop starting cases after this long' },
  group: { default: 16, min: 1, help: 'cases run concurrently (one connection each)' },
  workers: { default: 1, min: 1, help: 'capture pool workers' },
  'max-failures': { default: 20, min: 1, help: 'stop after this many failures' },
});
const seed = o.seed >= 0 ? o.seed >>> 0 : (Math.random() * 2 ** 32) >>> 0;
/** a fresh greytap (and store) after this many cases, so a long run does not fill the disk */
const CASES_PER_RIG = 5000;

function report(c: Case, problems: string[]): void {
  process.stdout.write(`FAIL case seed ${c.seed} (replay: node dist/bench/fuzz-sse.js --replay ${c.seed})\n  ${c.describe}\n  ${problems.slice(0, 5).join('\n  ')}\n`);
}

const started = performance.now();
let rig: Rig = await startRig({ workers: o.workers });
let cases = 0, events = 0, failures = 0;
let interrupted = false; // Ctrl-C: finish the group, close greytap (its temp store goes), print the totals
process.once('SIGINT', () => { interrupted = true; });
try {
  if (o.replay >= 0) {
    const c = generateCase(o.replay >>> 0);
    process.stdout.write(`case ${c.seed}: ${c.describe}\nbody: ${JSON.stringify(c.body.toString('latin1'))}\nwrites: ${JSON.stringify(c.writes.map((w) => w.toString('latin1')))}\n`);
    const [problems] = await rig.run([c]);
    cases++;
    if (problems.length) { failures++; report(c, problems); }
  } else {
    process.stdout.write(`seed ${seed} (replay this run: --seed ${seed})\n`);
    let sinceRig = 0;
    while (!interrupted && cases < o.iterations && performance.now() - started < o.seconds * 1000 && failures < o['max-failures']) {
      const group = Array.from({ length: Math.min(o.group, o.iterations - cases) }, (_, k) => generateCase(caseSeed(seed, cases + k)));
      const problems = await rig.run(group);
      group.forEach((c, k) => {
        events += interpretEventStream(c.body, true).length;
        if (problems[k].length) { failures++; report(c, problems[k]); }
      });
      cases += group.length;
      if ((sinceRig += group.length) >= CASES_PER_RIG) {
        await rig.close();
        rig = await startRig({ workers: o.workers });
        sinceRig = 0;
      }
      if (cases % (o.group * 50) < o.group) process.stderr.write(`[fuzz-sse] ${cases} cases, ${events} events, ${failures} failures, ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
    }
  }
} finally {
  await rig.close();
}
process.stdout.write(`${cases} cases, ${events} events in ${((performance.now() - started) / 1000).toFixed(1)} s: ${failures} failure(s)\n`);
process.exitCode = failures ? 1 : 0;
