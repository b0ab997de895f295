// A short, fixed-seed run of the WebSocket capture fuzzer (bench/ws-fuzz.ts; bench/fuzz-ws.ts runs
// it for as long as you like): random message sequences, fragmentation, masking, permessage-deflate
// parameters and read boundaries, some cases corrupted, through the real tap, pool, worker and
// LMDB store — every message captured exactly, the rest recorded with an error code.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CapturePool } from '../../src/workers/pool.js';
import { caseSeed, generateCase, runCases, type Failure, type RunStats } from '../../bench/ws-fuzz.js';

const SEED = 20240611;
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** `cases` cases of run SEED from `first` on, in groups of 10, on a one-worker pool. */
async function fuzz(first: number, cases: number, maxBody: number, memory?: number): Promise<{ failures: Failure[]; stats: RunStats }> {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-ws-fuzz-'));
  dirs.push(dir);
  const pool = new CapturePool({ workers: 1, dataDir: dir, maxBody, maxCaptureMemory: memory ?? 1 << 30, maxConnCaptureMemory: memory ?? 256 << 20, redactHeaders: [] });
  const stats: RunStats = { cases: 0, messages: 0, bytes: 0, errors: {} };
  const failures: Failure[] = [];
  try {
    for (let i = first; i < first + cases; i += 10) {
      const group = Array.from({ length: 10 }, (_, k) => generateCase(caseSeed(SEED, i + k), { maxSize: 64 << 10, maxMessages: 24, corruptRate: memory ? 0 : 0.4, maxBody }));
      failures.push(...await runCases(pool, dir, group, stats, memory !== undefined));
    }
  } finally {
    await pool.close();
  }
  return { failures, stats };
}

function explain(failures: Failure[], maxBody: number, memory?: number): string {
  const flags = `--max-body ${maxBody}${memory ? ` --corrupt 0 --memory ${memory}` : ''}`;
  return failures.map((f) => `case seed ${f.seed} (node dist/bench/fuzz-ws.js --replay ${f.seed} ${flags}): ${f.problem}\n  ${f.describe}`).join('\n');
}

test(`fuzz seed ${SEED}: 200 cases with whole messages, 60 with --max-body 3000, 40 under 512 KiB of capture memory`, async () => {
  for (const [first, cases, maxBody, memory] of [[0, 200, 1 << 20], [200, 60, 3000], [260, 40, 1 << 20, 512 << 10]] as const) {
    const { failures, stats } = await fuzz(first, cases, maxBody, memory);
    assert.equal(failures.length, 0, explain(failures, maxBody, memory));
    assert.equal(stats.cases, cases);
    // the run exercised what it claims to: errors of each kind were recorded (and checked)
    if (first === 0) for (const code of ['bad_frame', 'truncated_stream', 'inflate_failed', 'invalid_utf8', 'desynced']) assert.ok(stats.errors[code], `no ${code} in ${JSON.stringify(stats.errors)}`);
    if (first === 200) assert.ok(stats.errors.too_large);
    if (memory) assert.ok(stats.errors.queue_full);
  }
});
