// A short, fixed-seed run of the HTTP/1.1 tap's differential fuzzer (bench/http-fuzz.ts); the long
// runs are `node dist/bench/fuzz-http.js --seconds N`. A failure names the seed and mode to replay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzzOne, MODES } from '../../bench/http-fuzz.js';

const CASES = 150; // per mode

for (const mode of MODES) {
  test(`fuzz ${mode}: ${CASES} fixed seeds`, () => {
    const failed: string[] = [];
    for (let seed = 1; seed <= CASES; seed++) {
      const out = fuzzOne(seed, mode);
      if (out.problems.length) failed.push(`--seed ${seed} --mode ${mode}: ${out.problems.slice(0, 3).join('; ')}`);
    }
    assert.deepEqual(failed, []);
  });
}
