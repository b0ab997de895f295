// A short, fixed-seed run of the dissector and assembly fuzzer (bench/dissect-fuzz.ts; bench/fuzz-dissect.ts
// runs it for as long as you like): mutated real sessions, committed to the real LMDB store and
// assembled — no dissector throws, no update fails, every conversation well formed, no case hangs.
// And the seeds themselves, unmutated, still assemble to what they did when the golden file was
// written (node dist/bench/fuzz-dissect.js --write-golden test/workers/dissect-fuzz.golden.json).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { caseSeed, describeOps, fuzzCase, generateCase, goldenConversations } from '../../bench/dissect-fuzz.js';
import { openStore } from '../../src/store/lmdb.js';

const SEED = 20261207;
const CASES = 80;
const dir = mkdtempSync(join(tmpdir(), 'greytap-dissect-fuzz-'));
const store = openStore(dir);
after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the unmutated seeds assemble to the golden conversations', async () => {
  const golden = JSON.parse(readFileSync(fileURLToPath(new URL('../../../test/workers/dissect-fuzz.golden.json', import.meta.url)), 'utf8'));
  assert.deepEqual(await goldenConversations(store), golden);
});

test(`fuzz seed ${SEED}: ${CASES} mutated sessions assemble without a failure`, async () => {
  const failed: string[] = [];
  for (let i = 0; i < CASES; i++) {
    const c = generateCase(caseSeed(SEED, i));
    // timing is the long runs' business (a loaded test machine makes it noisy): only a hang fails here
    const r = await fuzzCase(store, c, { budgetMs: 10_000, scaling: false });
    if (r.problems.length) failed.push(`case seed ${c.seed} (node dist/bench/fuzz-dissect.js --replay ${c.seed}) on ${c.seedName}: ${r.problems.slice(0, 3).join('; ')}\n    ${describeOps(c.ops)}`);
  }
  assert.deepEqual(failed, []);
});
