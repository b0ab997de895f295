// serve's options: defaults, flags over environment over config file, one-line errors, the
// loopback rule (no open relay by default), and the CPU niceness of capture's threads (the workers,
// retention's sweeper) on real threads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, ConfigError, DEFAULTS } from '../src/config.js';
import { startGreytap, tmpDir, waitFor } from './helpers/harness.js';

test('defaults follow DESIGN.md', () => {
  const c = loadConfig([], {});
  assert.equal(c.dataDir, './greytap-data');
  assert.deepEqual(c.httpProxy, { host: '127.0.0.1', port: 43051 });
  assert.deepEqual(c.socks, { host: '127.0.0.1', port: 43052 });
  assert.deepEqual(c.api, { host: '127.0.0.1', port: 43080 });
  assert.equal(c.maxBody, 16 * 1024 * 1024);
  assert.equal(c.captureNice, DEFAULTS.captureNice);
  assert.equal(c.handshakeTimeoutMs, 60_000);
  assert.equal(c.dissectRules, null);
  assert.ok(c.workers >= 1);
});

test('flags win over GREYTAP_* variables, which win over the config file', () => {
  const dir = tmpDir();
  const file = join(dir, 'greytap.json');
  writeFileSync(file, JSON.stringify({ maxBody: '1MiB', workers: 3, captureNice: 5, map: ['a.test:443=127.0.0.1:9'], dissectRules: '/file/rules.json' }));
  const c = loadConfig(['--config', file, '--max-body', '2MiB'], { GREYTAP_WORKERS: '2' });
  assert.equal(c.maxBody, 2 * 1024 * 1024);
  assert.equal(c.workers, 2);
  assert.equal(c.captureNice, 5);
  assert.deepEqual(c.map.get('a.test:443'), { host: '127.0.0.1', port: 9 });
  assert.equal(c.dissectRules, '/file/rules.json');
  assert.equal(loadConfig(['--config', file], { GREYTAP_DISSECT_RULES: '/env/rules.json' }).dissectRules, '/env/rules.json');
  assert.equal(loadConfig(['--dissect-rules', '/flag/rules.json'], { GREYTAP_DISSECT_RULES: '/env/rules.json' }).dissectRules, '/flag/rules.json');
  assert.equal(loadConfig(['--http-proxy', 'off'], {}).httpProxy, null);
  assert.deepEqual(loadConfig(['--retention', '7d', '--retention', '2GiB'], {}), { ...loadConfig([], {}), retentionMs: 7 * 86_400_000, retentionBytes: 2 * 1024 ** 3 });
  rmSync(dir, { recursive: true, force: true });
});

test('bad options fail with a one-line reason', () => {
  for (const [argv, re] of [
    [['--max-body', 'lots'], /--max-body: expected a size/],
    [['--workers', '0'], /--workers/],
    [['--capture-nice', '25'], /--capture-nice: expected a whole number from 0 to 19/],
    [['--handshake-timeout', '0s'], /--handshake-timeout: expected a duration like 60s/],
    [['--handshake-timeout', '5'], /--handshake-timeout: expected a duration like 60s/],
    [['--map', 'nope'], /--map: expected HOST:PORT=HOST:PORT/],
    [['--socks', '127.0.0.1'], /--socks: expected HOST:PORT/],
    [['--frobnicate'], /unknown option --frobnicate/],
    [['--http-proxy', '0.0.0.0:43051'], /not a loopback address; add --allow-remote/],
  ] as const) {
    assert.throws(() => loadConfig([...argv], {}), (e: unknown) => e instanceof ConfigError && re.test((e as Error).message) && !(e as Error).message.includes('\n'));
  }
  assert.deepEqual(loadConfig(['--http-proxy', '0.0.0.0:43051', '--allow-remote'], {}).httpProxy, { host: '0.0.0.0', port: 43051 });
});

/** Niceness of one thread (field 19 of /proc/self/task/TID/stat). */
function niceOf(tid: string | number): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

function threadNices(): number[] {
  return readdirSync('/proc/self/task').map(niceOf);
}

test('capture workers run at --capture-nice while the forwarding thread keeps its priority', async () => {
  const g = await startGreytap(['--capture-nice', '12']);
  try {
    await waitFor(() => threadNices().includes(12), 'a worker thread at nice 12');
    assert.equal(niceOf(process.pid), 0, 'the main (forwarding) thread is not reniced');
  } finally { await g.stop(); }
});

test('retention\'s sweeper runs at --capture-nice too: a store at its bound removes a record for each one captured', async () => {
  const atNice = async (args: string[]) => {
    const g = await startGreytap(['--capture-nice', '13', '--workers', '1', ...args]);
    try {
      await waitFor(() => threadNices().includes(13), 'a thread at nice 13');
      await new Promise((r) => setTimeout(r, 300)); // every thread serve starts is up
      return threadNices().filter((n) => n === 13).length;
    } finally { await g.stop(); }
  };
  const without = await atNice([]);
  const withRetention = await atNice(['--retention', '7d']);
  assert.equal(withRetention, without + 1, `threads at nice 13: ${without} without retention, ${withRetention} with it`);
  assert.equal(niceOf(process.pid), 0, 'the main (forwarding) thread is not reniced');
});
