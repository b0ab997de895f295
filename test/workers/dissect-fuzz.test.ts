// The dissector and assembly fuzzer's seeds (bench/dissect-fuzz.ts), unmutated, still assemble to
// what they did when the golden file was written
// (node dist/bench/fuzz-dissect.js --write-golden test/workers/dissect-fuzz.golden.json).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { goldenConversations } from '../../bench/dissect-fuzz.js';
import { openStore } from '../../src/store/lmdb.js';

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
