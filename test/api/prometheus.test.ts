// A real Prometheus (Debian's, installed by test/setup.sh) scraping a real greytap every second:
// promtool accepts grafana/greytap-alerts.yml, every alert rule loads and evaluates without error,
// every query of the dashboard runs, and a real flood over a tiny capture budget puts the drop
// alert in pending while the alerts for a greytap that is down, failing retention or short of file
// descriptors stay quiet.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import net from 'node:net';
import type https from 'node:https';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, tmpDir, waitFor, type Greytap } from '../helpers/harness.js';
import { startWsOrigin, openClient, closeClient } from '../ws/ws-helpers.js';

const RULES = resolve('grafana/greytap-alerts.yml');
const ALERTS = ['GreytapDown', 'GreytapCaptureDropping', 'GreytapCaptureLagging', 'GreytapRetentionFailing', 'GreytapStoreOverBound', 'GreytapFileDescriptorsLow'];
const dash = JSON.parse(readFileSync('grafana/greytap-dashboard.json', 'utf8'));

const pki = makeTestPki();
let g: Greytap;
let origin: https.Server;
let prom: ChildProcess;
let promUrl = '';
let promLog = '';

const freePort = () => new Promise<number>((r) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as net.AddressInfo; s.close(() => r(port)); });
});

async function api<T = any>(path: string): Promise<T> {
  const body = (await (await fetch(promUrl + path)).json()) as { status: string; data: T; error?: string };
  assert.equal(body.status, 'success', `${path}: ${body.error}`);
  return body.data;
}

const alertsNow = async () => (await api<{ alerts: { labels: Record<string, string>; state: string }[] }>('/api/v1/alerts')).alerts;

before(async () => {
  const o = await startWsOrigin(pki);
  origin = o.server;
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `ws.test:443=127.0.0.1:${o.port}`, '--max-capture-memory', '64KiB', '--max-conn-capture-memory', '64KiB']);
  const dir = tmpDir('greytap-prometheus-');
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    `rule_files: ['${RULES}']`,
    'scrape_configs:',
    `  - { job_name: greytap, static_configs: [{ targets: ['${g.api.replace('http://', '')}'] }] }`,
  ].join('\n') + '\n');
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  prom = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  prom.stderr!.on('data', (b: Buffer) => { promLog = (promLog + b).slice(-4000); });
  await waitFor(async () => (await fetch(promUrl + '/-/ready').catch(() => null))?.ok, `prometheus ready (${promLog})`, 30_000);
  // greytap scraped a few times: rates over the window have two samples
  await waitFor(async () => Number((await api<{ result: { value: [number, string] }[] }>('/api/v1/query?query=' + encodeURIComponent('count_over_time(up{job="greytap"}[1m])'))).result[0]?.value[1] ?? 0) >= 3, 'three scrapes of greytap', 30_000);
});

after(async () => {
  prom?.kill('SIGTERM');
  await g?.stop();
  origin?.closeAllConnections();
  origin?.close();
});

test('promtool accepts the alert rules', () => {
  const r = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${ALERTS.length} rules found`));
});

test('every alert rule loads and evaluates on a real Prometheus scraping greytap, without error', async () => {
  const rules = await waitFor(async () => {
    const groups = (await api<{ groups: { rules: { name: string; query: string; health: string; lastError?: string; lastEvaluation: string }[] }[] }>('/api/v1/rules')).groups;
    const all = groups.flatMap((x) => x.rules);
    return all.length && all.every((r) => !r.lastEvaluation.startsWith('0001')) ? all : null;
  }, 'every rule evaluated once');
  assert.deepEqual(rules.map((r) => r.name).sort(), [...ALERTS].sort());
  assert.deepEqual(rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError}`), []);
  // A misspelt metric or label evaluates fine, to nothing: every selector must find greytap's
  // series, and every label a rule groups by must be on them.
  const wrong: string[] = [];
  for (const r of rules) {
    const selectors = [...r.query.matchAll(/\b(greytap_\w+|up)(\{[^}]*\})?/g)].map((m) => m[0]);
    const labels = [...r.query.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((l) => l.trim()).filter(Boolean));
    for (const sel of selectors) {
      const series = await api<Record<string, string>[]>('/api/v1/series?' + new URLSearchParams({ 'match[]': sel }));
      if (series.length === 0) wrong.push(`${r.name}: no series for ${sel}`);
      for (const l of labels) if (l !== 'le' || sel.endsWith('_bucket')) if (series.length && !series.every((x) => l in x)) wrong.push(`${r.name}: ${sel} has no label ${l}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('every query of the dashboard runs on that Prometheus, and each that is not a rate of an idle counter returns series', async () => {
  const exprs: string[] = dash.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr.replace(/\$__rate_interval/g, '1m')));
  const empty: string[] = [];
  for (const expr of exprs) {
    const data = await api<{ result: unknown[] }>('/api/v1/query?query=' + encodeURIComponent(expr));
    // (a histogram_quantile over buckets that did not move, or a `> 0` filter, may rightly be empty)
    if (data.result.length === 0 && !/histogram_quantile|>\s*0/.test(expr)) empty.push(expr);
  }
  assert.deepEqual(empty, [], 'queries that found no series');
});

test('a real flood over a tiny capture budget: GreytapCaptureDropping goes pending for queue_full; down, retention and file-descriptor alerts stay quiet', async () => {
  const c = await openClient(g, '/plain', 'http', { perMessageDeflate: false });
  for (let i = 0; i < 300; i++) c.ws.send(Buffer.alloc(64 << 10, i % 251));
  await waitFor(() => c.received.length === 300, 'every echo');
  await closeClient(c);
  const alerts = await waitFor(async () => {
    const now = await alertsNow();
    return now.some((a) => a.labels.alertname === 'GreytapCaptureDropping') ? now : null;
  }, 'the drop alert', 20_000);
  const dropping = alerts.filter((a) => a.labels.alertname === 'GreytapCaptureDropping');
  assert.deepEqual(dropping.map((a) => [a.labels.reason, a.state]), [['queue_full', 'pending']], 'pending (for: 10m), by reason');
  const quiet = alerts.filter((a) => ['GreytapDown', 'GreytapRetentionFailing', 'GreytapStoreOverBound', 'GreytapFileDescriptorsLow'].includes(a.labels.alertname));
  assert.deepEqual(quiet, []);
});
