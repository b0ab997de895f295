// The bench runner: `npm run bench` (short), `npm run bench -- --full`, `--smoke`.
// Starts the upstream server and every contender on 127.0.0.1, then for each workload runs the
// load client against each contender in turn (so every ratio compares runs minutes apart, not
// hours), measuring the contender's CPU and peak RSS and, for greytap, its capture completeness.
// A contender that fails to start or crashes is reported and skipped; every child is killed at exit.
import { cpus, release, tmpdir } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync, spawnSync } from 'node:child_process';
import { installExitHandlers, lastLines, runClient, stopChild } from './children.js';
import { CONTENDERS, Unavailable, startUpstream, type Contender, type Running, type StartCtx } from './contenders.js';
import { cpuRate, cpuSeconds, firstTouchMicrosPerPage, peakRssMiB, resetPeakRss, sampleAnonPeak } from './procstat.js';
import { increaseByLabel, scrape, sumSeries, type Samples } from './prom.js';
import { addRatios, keepRound, toMarkdown, toSvg, type BenchResult, type CaptureCheck, type ContenderInfo, type Row } from './report.js';
import { PROFILES, SMOKE_CONTENDERS, WORKLOADS, type Profile } from './workloads.js';
import type { ClientJob, ClientResult, Workload } from './protocol.js';

const benchDir = dirname(fileURLToPath(import.meta.url)); // dist/bench
const repoRoot = resolve(benchDir, '..', '..');

interface Options {
  profile: Profile;
  out: string;
  only: string[] | null;
  workloads: string[] | null;
  workers: number;
  cpuProf: boolean;
  install: boolean;
}

function usage(msg: string): never {
  process.stderr.write(`bench: ${msg}\nusage: node dist/bench/run.js [--smoke|--full] [--out DIR] [--contenders a,b] [--workloads x,y] [--duration MS] [--warmup MS] [--rounds N] [--workers N] [--cpu-prof] [--no-install]\n       node dist/bench/run.js --render RESULT.json   (re-render latest.md/svg)\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  let profile: Profile = { ...PROFILES.short };
  const o: Options = { profile, out: join(repoRoot, 'bench', 'results'), only: null, workloads: null, workers: Math.max(1, cpus().length - 1), cpuProf: false, install: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--full') profile = o.profile = { ...PROFILES.full };
    else if (a === '--smoke') { profile = o.profile = { ...PROFILES.smoke }; o.install = false; }
    else if (a === '--out') o.out = resolve(val());
    else if (a === '--contenders') o.only = val().split(',');
    else if (a === '--workloads') o.workloads = val().split(',');
    else if (a === '--duration') profile.durationMs = Number(val()) || usage('--duration: milliseconds');
    else if (a === '--warmup') profile.warmupMs = Number(val()) || usage('--warmup: milliseconds');
    else if (a === '--rounds') profile.rounds = Number(val()) || usage('--rounds: a number');
    else if (a === '--workers') o.workers = Number(val()) || usage('--workers: a number');
    else if (a === '--cpu-prof') o.cpuProf = true;
    else if (a === '--no-install') o.install = false;
    else usage(`unknown option ${a}`);
  }
  for (const w of o.workloads ?? []) if (!WORKLOADS[w]) usage(`unknown workload ${w} (known: ${Object.keys(WORKLOADS).join(', ')})`);
  return o;
}

const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);

function sh(cmd: string, args: string[]): string | null {
  try { return execFileSync(cmd, args, { encoding: 'utf8', timeout: 15_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return null; }
}

function pickContenders(o: Options): Contender[] {
  if (o.only) return o.only.map((n) => CONTENDERS.find((c) => c.name === n) ?? usage(`unknown contender ${n} (known: ${CONTENDERS.map((c) => c.name).join(', ')})`));
  if (o.profile.contenders === 'smoke') return CONTENDERS.filter((c) => SMOKE_CONTENDERS.includes(c.name));
  return CONTENDERS.filter((c) => o.profile.contenders === 'full' || !c.fullOnly);
}

/** Below this share of one core greytap is doing nothing: no decoding, storing or assembling left. */
const IDLE_CORES = 0.05;

/**
 * Waits until greytap's CPU has gone quiet (at most 20 s), then reads the records of `kinds` it
 * committed since `before` against the `expected` ones. Waiting on the record count instead ended
 * while the worker was still busy: a lagging lane's records go to the worker as one task and are
 * counted when it returns, so the count can stand still for seconds while a backlog is stored, and
 * that work then ran, uncounted, into the next workload's window. /metrics is scraped only once the
 * CPU is quiet: a scrape costs the forwarding thread 10–60 ms.
 */
async function settleCapture(url: string, pid: number | null | undefined, before: Samples, kinds: string[], expected: number): Promise<CaptureCheck | null> {
  const committedOf = (s: Samples) => kinds.reduce((n, k) => n + sumSeries(s, 'greytap_store_records_total', { kind: k }) - sumSeries(before, 'greytap_store_records_total', { kind: k }), 0);
  const deadline = Date.now() + 20_000;
  while (pid && Date.now() < deadline) {
    const busy = await cpuRate(pid, 500);
    if (busy === null || busy <= IDLE_CORES) break;
  }
  const after = await scrape(url);
  if (!after) return null;
  const droppedByReason = increaseByLabel(after, before, 'greytap_capture_dropped_total', 'reason');
  const dropped = Object.values(droppedByReason).reduce((a, b) => a + b, 0);
  const committed = committedOf(after);
  return { expected, committed, completeness: expected > 0 ? committed / expected : 1, dropped, droppedByReason };
}

async function measure(o: Options, w: Workload, name: string, r: Running, upstreamPid: number | undefined): Promise<Row> {
  const p = o.profile;
  const job: ClientJob = { workload: w, route: r.route, warmupMs: p.warmupMs, durationMs: p.durationMs, drainMs: p.drainMs, bulkTimeoutMs: p.bulkTimeoutMs };
  const pid = r.pid;
  if (pid) resetPeakRss(pid);
  const before = r.metricsUrl ? await scrape(r.metricsUrl) : null;
  const cpu0 = pid ? cpuSeconds(pid) : null;
  const up0 = upstreamPid ? cpuSeconds(upstreamPid) : null;
  const anon = pid ? sampleAnonPeak(pid) : null;
  let anonPeak: number | null = null;
  const t0 = performance.now();
  let res: ClientResult;
  try {
    res = await runClient(job);
  } catch (e) {
    return { workload: w.id, contender: name, status: r.alive() ? 'error' : 'crashed', reason: (e as Error).message };
  } finally {
    anonPeak = anon?.stop() ?? null;
  }
  const wallS = (performance.now() - t0) / 1000;
  const cpuRun = pid ? cpuSeconds(pid) : null;
  const up1 = upstreamPid ? cpuSeconds(upstreamPid) : null;
  const rss = pid ? peakRssMiB(pid) : null;
  if (!r.alive()) return { workload: w.id, contender: name, status: 'crashed', reason: lastLines(r.tail(), 2) || 'process exited' };
  let capture: CaptureCheck | null = null;
  if (r.metricsUrl && before) {
    const ws = w.kind === 'ws';
    capture = await settleCapture(r.metricsUrl, pid, before, ws ? ['WS_REQ', 'WS_RESP'] : ['HTTP'], ws ? res.wire.wsClient + res.wire.wsServer : res.wire.httpExchanges);
  }
  // Per operation, the proxy's CPU includes capture it finished after the run (a lagging capture
  // still costs the host its CPU); idle polling while settling adds a little.
  const cpuSettled = pid && cpu0 !== null ? cpuSeconds(pid) : null;
  const secs = res.elapsedMs / 1000;
  const row: Row = {
    workload: w.id, contender: name, status: res.ok ? 'ok' : 'error',
    reason: res.ok ? undefined : res.firstError ?? 'no operation completed',
    opsPerSec: res.ops / secs,
    mbPerSec: res.bytes / 1e6 / secs,
    latencyMs: w.kind === 'bulk' ? null : res.latency,
    proxyCpuSeconds: cpu0 !== null && cpuRun !== null ? cpuRun - cpu0 : null,
    proxyCores: cpu0 !== null && cpuRun !== null ? (cpuRun - cpu0) / wallS : null,
    proxyCpuUsPerOp: cpu0 !== null && cpuSettled !== null && res.opsTotal > 0 ? ((cpuSettled - cpu0) / res.opsTotal) * 1e6 : null,
    loadCpuUsPerOp: up0 !== null && up1 !== null && res.opsTotal > 0 ? ((res.cpuSeconds + up1 - up0) / res.opsTotal) * 1e6 : null,
    proxyPeakRssMiB: rss,
    proxyPeakAnonMiB: anonPeak,
    capture,
    errors: res.errors,
    firstError: res.firstError,
    gaveUp: res.gaveUp || undefined,
  };
  return row;
}

/** One measured run of workload w against one contender, with crash and budget bookkeeping. */
async function runOne(o: Options, w: Workload, info: ContenderInfo, live: Map<string, Running>, started: number, upstreamPid: number | undefined): Promise<Row> {
  const r = live.get(info.name);
  if (!r) return { workload: w.id, contender: info.name, status: info.status === 'ok' ? 'crashed' : info.status, reason: info.reason };
  if (Date.now() - started > o.profile.budgetMs) return { workload: w.id, contender: info.name, status: 'skipped', reason: 'time budget' };
  if (!r.alive()) {
    info.status = 'crashed';
    info.reason = lastLines(r.tail(), 2) || 'process exited';
    live.delete(info.name);
    return { workload: w.id, contender: info.name, status: 'crashed', reason: info.reason };
  }
  const row = await measure(o, w, info.name, r, upstreamPid);
  const cap = row.capture ? ` capture ${(row.capture.completeness * 100).toFixed(1)}% drops ${row.capture.dropped}` : '';
  log(`${w.id} ${info.name}: ${row.status === 'ok' ? `${row.opsPerSec!.toFixed(w.kind === 'bulk' ? 2 : 0)} ${w.kind === 'bulk' ? 'downloads' : w.unit}/s ${row.mbPerSec!.toFixed(1)} MB/s p50 ${row.latencyMs?.p50.toFixed(2) ?? '–'} ms cpu ${row.proxyCpuSeconds?.toFixed(2) ?? '–'} s (${row.proxyCpuUsPerOp?.toFixed(0) ?? '–'} us/op; load ${row.loadCpuUsPerOp?.toFixed(0) ?? '–'} us/op)${cap}${row.errors ? ` errors ${row.errors}` : ''}` : `${row.status}: ${row.reason}`}`);
  if (row.status === 'crashed') { info.status = 'crashed'; info.reason = row.reason; live.delete(info.name); }
  return row;
}

/** `--render FILE.json`: rewrite latest.md/svg next to a result JSON (after a report change). */
function render(file: string): void {
  const res = JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
  addRatios(res.rows, res.workloads); // a result written by an earlier version gains the newer derived fields
  writeFileSync(join(dirname(file), 'latest.md'), toMarkdown(res) + '\n');
  writeFileSync(join(dirname(file), 'latest.svg'), toSvg(res));
}

async function main(): Promise<void> {
  if (process.argv[2] === '--render' && process.argv[3]) { render(resolve(process.argv[3])); return; }
  const o = parseArgs(process.argv.slice(2));
  const tmp = mkdtempSync(join(tmpdir(), 'greytap-bench-'));
  installExitHandlers();
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

  const picked = pickContenders(o);
  if (o.install && picked.some((c) => c.name.startsWith('mitmdump')) && !sh('sh', ['-c', 'command -v mitmdump'])) {
    log('mitmdump missing: running bench/install-peers.sh');
    spawnSync('bash', [join(repoRoot, 'bench', 'install-peers.sh')], { stdio: 'inherit', timeout: 600_000 });
  }

  // measured before any contender runs, so no one's memory churn is in it
  const pageCost = firstTouchMicrosPerPage();
  log(`first write to fresh memory: ${pageCost.toFixed(1)} µs per 4 KiB page`);
  const started = Date.now();
  const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const { pki, server, upstreamPort } = await startUpstream(tmp, benchDir);
  log(`upstream on 127.0.0.1:${upstreamPort}; profile ${o.profile.name}`);

  const workloads = (o.workloads ?? o.profile.workloads).map((id) => WORKLOADS[id]);
  const hosts = Math.max(0, ...workloads.map((w) => w.hosts ?? 0));
  const cpuProfDir = o.cpuProf ? join(o.out, 'cpu-prof') : undefined;
  if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });
  const ctx: StartCtx = { tmp, pki, upstreamPort, hosts, workers: o.workers, cpuProfDir, repoRoot, benchDir };

  const infos: ContenderInfo[] = [];
  const live = new Map<string, Running>();
  for (const c of picked) {
    const info: ContenderInfo = { name: c.name, what: c.what, sees: c.sees, status: 'ok' };
    infos.push(info);
    try {
      live.set(c.name, await c.start(ctx));
      log(`${c.name}: started`);
    } catch (e) {
      info.status = e instanceof Unavailable ? 'unavailable' : 'failed to start';
      info.reason = (e as Error).message;
      log(`${c.name}: ${info.status}: ${info.reason}`);
    }
  }

  const rows: Row[] = [];
  const rate = (w: Workload, r: Row) => (r.status !== 'ok' ? -1 : w.kind === 'bulk' ? r.mbPerSec ?? 0 : r.opsPerSec ?? 0);
  for (const w of workloads) {
    const best = new Map<string, Row>();
    for (let round = 1; round <= o.profile.rounds; round++) {
      for (const info of infos) {
        const prev = best.get(info.name);
        // crashed/unavailable, or an operation hit its deadline: another round would only repeat that
        if (prev && ((prev.status !== 'ok' && prev.status !== 'error') || prev.gaveUp)) continue;
        const row = await runOne(o, w, info, live, started, server.proc.pid);
        best.set(info.name, keepRound(prev, row, (r) => rate(w, r)));
      }
    }
    rows.push(...infos.map((i) => best.get(i.name)!));
  }

  await Promise.all([...live.values()].map((r) => r.stop().catch(() => {})));
  await stopChild(server);
  addRatios(rows, workloads);

  const mitmVersion = /Mitmproxy: (\S+)/.exec(sh('mitmdump', ['--version']) ?? '')?.[1] ?? null;
  const result: BenchResult = {
    version: 1,
    profile: o.profile.name,
    startedAt,
    wallSeconds: Math.round((Date.now() - started) / 1000),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '?', node: process.versions.node, kernel: release(), mitmproxy: mitmVersion, greytapCommit: sh('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']), firstTouchUsPerPage: pageCost },
    settings: { warmupMs: o.profile.warmupMs, durationMs: o.profile.durationMs, rounds: o.profile.rounds, greytapWorkers: o.workers },
    contenders: infos,
    workloads,
    rows,
  };
  mkdirSync(o.out, { recursive: true });
  const md = toMarkdown(result);
  writeFileSync(join(o.out, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(o.out, 'latest.md'), md + '\n');
  writeFileSync(join(o.out, 'latest.svg'), toSvg(result));
  process.stdout.write(md + '\n');
  log(`done in ${result.wallSeconds} s; wrote ${join(o.out, 'latest.{json,md,svg}')}${cpuProfDir && existsSync(cpuProfDir) ? `; greytap CPU profiles in ${cpuProfDir}` : ''}`);
}

main().then(() => process.exit(0), (e) => {
  log(`failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
