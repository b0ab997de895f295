// greytap held at its --retention bound for minutes, under a load that saturates the machine:
// does the store stay bounded, does greytap's memory stay flat, does the traffic go on untouched?
// A deployment with `--retention SIZE` lives at its bound — every record captured is matched by one
// that retention removes — and retention's sweeper and the capture workers both run at nice 15, so
// under full CPU contention both can lag (README, Bounds: "capture worker CPU").
//
//   node dist/bench/soak.js [options]     (--help lists them with their defaults)
//
// A real `greytap serve --retention SIZE` (startGreytap, as the bench's greytap contender), the
// bench's origin (server.ts) and one load client (client.ts) running one workload for the whole
// soak, each a process of its own. Every `--every` seconds: greytap's /metrics, the data file on
// disk, greytap's CPU and anonymous memory from /proc, and the client's running totals. The live
// data retention bounds is greytap's own store_live_bytes gauge.
import { statSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { benchArgs } from './args.js';
import { installExitHandlers, runClient, stopChild } from './children.js';
import { startGreytap, startUpstream } from './contenders.js';
import { cpuSeconds, rssAnonMiB } from './procstat.js';
import { histogramQuantile, increaseByLabel, scrape, sumSeries, type Samples } from './prom.js';
import { WORKLOADS } from './workloads.js';
import { median } from './latency.js';
import { parseBytes } from '../src/config.js';
import { SIZE_CHECK_MS } from '../src/store/retention.js';
import type { ClientProgress, ClientResult } from './protocol.js';

const o = benchArgs('node dist/bench/soak.js [options]: greytap held at its --retention bound under load; store size, memory, capture lag and the load\'s rate over time', {
  minutes: { default: 20, min: 0.1, help: 'how long the load runs' },
  every: { default: 10, min: 1, help: 'seconds between samples' },
  workers: { default: Math.max(1, cpus().length - 1), min: 1, help: 'greytap\'s --workers' },
  'rss-growth': { default: 10, min: 0, help: '"memory flat" fails when RSS grows by more than this % over the second half' },
}, {}, {
  retention: { arg: 'SIZE', default: '64MiB', help: 'greytap\'s --retention', check: (v) => { parseBytes(v, '--retention'); } },
  workload: {
    arg: 'NAME', default: 'ws-deflate-1k-c8', help: `the load, one of the bench's workloads (${Object.keys(WORKLOADS).join(', ')})`,
    check: (v) => { if (!WORKLOADS[v]) throw new Error('no such workload'); },
  },
  json: 'also write the samples and the summary as JSON',
});
const BOUND = parseBytes(o.retention!, '--retention');
const workload = WORKLOADS[o.workload!];
const durationMs = o.minutes * 60_000;
const everyMs = o.every * 1000;
const MiB = 1 << 20;

/**
 * How far over its bound the store may go. Retention checks the live size every SIZE_CHECK_MS
 * (src/store/retention.ts) and removes the oldest records until it fits; between two checks it
 * removes nothing, so the store peaks at the bound plus what capture committed since the last
 * check and while the sweep ran. The data file (greytap_store_bytes) never shrinks: LMDB reuses
 * freed pages, so it stays at that peak, and a file that keeps growing past it means the removals
 * fall behind (a sweeper starved at nice 15) or freed pages are not reused. The slack is two check
 * intervals of capture at the run's mean rate, in the bytes a record took when the store first
 * filled, times 1.5: the rate in any few seconds strays from the mean (by up to 1.3× in 10 s
 * samples of (a)), and the file holds pages besides live data (free pages a reader's snapshot
 * still holds, the trees' branch pages).
 */
const SLACK_WINDOW_S = (2 * SIZE_CHECK_MS) / 1000;
const SLACK_MARGIN = 1.5;

interface Sample {
  /** seconds since the load began */
  t: number;
  /** greytap_store_bytes: the data file's size */
  storeBytes: number;
  /** the data file's blocks on disk (its size, unless sparse) */
  fileDiskBytes: number | null;
  /** live pages of every table: what --retention bounds (greytap_store_live_bytes) */
  liveBytes: number;
  /** over the interval, from greytap's retention metrics: records removed by table, size sweeps ended (and failed), seconds they took */
  removed: Record<string, number>;
  sweeps: number;
  sweepErrors: number;
  sweepSeconds: number;
  records: Record<string, number>;
  recordsTotal: number;
  dropped: Record<string, number>;
  /** capture lag over the interval (histogram_quantile of the buckets' increase), seconds */
  lagP50: number | null;
  lagP99: number | null;
  rssBytes: number;
  anonBytes: number | null;
  captureMemoryBytes: number;
  queueDepth: number;
  /** greytap's CPU over the interval, in cores */
  cpuCores: number | null;
  /** the load's echoes (operations) completed so far, and per second over the interval */
  echoes: number;
  echoesPerSec: number | null;
  clientErrors: number;
}

const log = (s: string) => process.stdout.write(`${s}\n`);
const mib = (b: number | null) => (b === null ? '–' : (b / MiB).toFixed(1));
const num = (n: number) => Math.round(n).toLocaleString('en-US');

function fileDiskBytes(dataDir: string): number | null {
  try { return statSync(join(dataDir, 'db', 'data.mdb')).blocks * 512; } catch { return null; }
}

/** The median of the samples in (at − span, at]: one sample may fall just before or after a GC. */
function around(samples: Sample[], atS: number, spanS: number, f: (s: Sample) => number | null): number | null {
  const xs = samples.filter((s) => s.t > atS - spanS && s.t <= atS + 1e-9).map(f).filter((v): v is number => v !== null);
  return xs.length ? median(xs) : null;
}

/** Echoes per second between the samples nearest two times. */
function rateBetween(samples: Sample[], fromS: number, toS: number): number | null {
  const near = (t: number) => samples.reduce((a, b) => (Math.abs(b.t - t) < Math.abs(a.t - t) ? b : a));
  const a = fromS <= 0 ? { t: 0, echoes: 0 } : near(fromS), b = near(toS);
  return b.t > a.t ? (b.echoes - a.echoes) / (b.t - a.t) : null;
}

function summarise(samples: Sample[], res: ClientResult | null, clientError: string | null, alive: boolean) {
  const end = samples.at(-1)!;
  const fill = samples.findIndex((s) => s.storeBytes >= BOUND);
  const after = fill < 0 ? [] : samples.slice(fill + 1);
  // each sample stands for the interval that ends at it
  let overS = 0, spanS = 0, excessS = 0;
  for (let i = 0; i < after.length; i++) {
    const dt = after[i].t - (i ? after[i - 1].t : samples[fill].t);
    spanS += dt;
    if (after[i].storeBytes > BOUND) { overS += dt; excessS += dt * (after[i].storeBytes / BOUND - 1); }
  }
  const maxAfter = after.length ? Math.max(...after.map((s) => s.storeBytes)) : null;
  const maxLiveAfter = after.length ? Math.max(...after.map((s) => s.liveBytes)) : null;
  const fillS = fill < 0 ? null : samples[fill].t;
  const bytesPerRecord = fill < 0 ? null : samples[fill].storeBytes / samples[fill].recordsTotal;
  const captureBytesPerS = bytesPerRecord === null ? null : (end.recordsTotal * bytesPerRecord) / end.t;
  const slackBytes = captureBytesPerS === null ? null : SLACK_MARGIN * SLACK_WINDOW_S * captureBytesPerS;
  const slack = slackBytes === null ? null : slackBytes / BOUND;
  const limit = slackBytes === null ? null : BOUND + slackBytes;
  // A sweep shows as live data falling over one sample or more (not as an interval with removals:
  // sampled every 10 s, every interval holds two size checks); what is left at its end is the
  // bound plus what came in meanwhile (one still falling at the last sample was cut short).
  const liveAfterSweeps: { t: number; liveBytes: number; cutShort: boolean }[] = [];
  // the load's rate in the intervals a sweep ran in, against the others: its removals run at
  // normal priority (lmdb-js's libuv threads), beside a load that already fills the cores
  const rates = { sweeping: [] as number[], otherwise: [] as number[] };
  for (let i = 1, falling = false; i < samples.length; i++) {
    const falls = samples[i].liveBytes < samples[i - 1].liveBytes;
    if (samples[i].echoesPerSec !== null && i < samples.length - 1) rates[falls ? 'sweeping' : 'otherwise'].push(samples[i].echoesPerSec!);
    const sweep = { t: samples[i].t, liveBytes: samples[i].liveBytes, cutShort: i === samples.length - 1 };
    if (falls && falling) liveAfterSweeps[liveAfterSweeps.length - 1] = sweep;
    else if (falls) liveAfterSweeps.push(sweep);
    falling = falls;
  }
  const add = (f: (s: Sample) => Record<string, number>) => samples.reduce<Record<string, number>>((acc, s) => {
    for (const [k, v] of Object.entries(f(s))) acc[k] = (acc[k] ?? 0) + v;
    return acc;
  }, {});
  const sweeps = samples.reduce((a, s) => a + s.sweeps, 0), sweepErrors = samples.reduce((a, s) => a + s.sweepErrors, 0);
  const retention = {
    sweeps,
    failed: sweepErrors,
    meanSweepSeconds: sweeps ? samples.reduce((a, s) => a + s.sweepSeconds, 0) / sweeps : null,
    removed: add((s) => s.removed),
  };
  const total = end.t;
  const span = Math.max(o.every, total / 10);
  const rssQ1 = around(samples, total / 4, span, (s) => s.rssBytes);
  const rssHalf = around(samples, total / 2, span, (s) => s.rssBytes);
  const rssEnd = around(samples, total, span, (s) => s.rssBytes);
  const anonHalf = around(samples, total / 2, span, (s) => s.anonBytes);
  const anonEnd = around(samples, total, span, (s) => s.anonBytes);
  // RSS counts the data file's pages that are mapped in: a file that grew in the second half grows it too
  const fileHalf = around(samples, total / 2, span, (s) => s.storeBytes);
  const fileEnd = around(samples, total, span, (s) => s.storeBytes);
  const growth = (a: number | null, b: number | null) => (a && b !== null ? b / a - 1 : null);
  const secondHalfGrowth = growth(rssHalf, rssEnd);
  const ws = workload.kind === 'ws';
  const unanswered = res && ws ? res.wire.wsClient - res.wire.wsServer : null;
  const verdicts = {
    storeBounded: {
      ok: fill >= 0 && maxAfter !== null && limit !== null && maxAfter <= limit && sweepErrors === 0,
      why: (fill < 0
        ? `store_bytes never reached the bound (${mib(BOUND)} MiB; at most ${mib(Math.max(...samples.map((s) => s.storeBytes)))} MiB)`
        : `after the first fill at ${fillS!.toFixed(0)} s, store_bytes at most ${mib(maxAfter)} MiB against a limit of ${mib(limit)} MiB (the bound + ${SLACK_MARGIN} × ${SLACK_WINDOW_S} s (two size checks) × ${mib(captureBytesPerS)} MiB/s captured: slack ${(slack! * 100).toFixed(0)} %)`)
        + `; ${sweepErrors} of ${sweeps} sweeps failed`,
    },
    memoryFlat: {
      ok: secondHalfGrowth !== null && secondHalfGrowth * 100 <= o['rss-growth'],
      why: `RSS ${mib(rssHalf)} MiB at half time, ${mib(rssEnd)} MiB at the end: ${secondHalfGrowth === null ? '–' : (secondHalfGrowth * 100).toFixed(1)} % (at most ${o['rss-growth']} %); anonymous ${mib(anonHalf)} → ${mib(anonEnd)} MiB, data file ${mib(fileHalf)} → ${mib(fileEnd)} MiB`,
    },
    trafficUnaffected: {
      ok: !!res && res.ok && res.errors === 0 && !clientError && (unanswered === null || unanswered === 0) && alive,
      why: !res
        ? `the load client failed: ${clientError}`
        : `${num(res.opsTotal)} ${workload.unit === 'msg' ? 'echoes' : `${workload.unit}s`}, ${res.errors} errors${res.firstError ? ` (first: ${res.firstError})` : ''}${unanswered === null ? '' : `, ${unanswered} sent without an echo`}${alive ? '' : '; greytap died'}`,
    },
  };
  return {
    boundBytes: BOUND,
    firstFillS: fillS,
    bytesPerRecord,
    captureBytesPerS,
    liveAfterSweeps,
    retention,
    afterFill: fill < 0 ? null : {
      maxStoreBytes: maxAfter,
      maxLiveBytes: maxLiveAfter,
      overBoundShare: spanS ? overS / spanS : 0,
      /** time-weighted mean excess over the bound, over the time it was over (fraction of the bound) */
      meanExcessWhenOver: overS ? excessS / overS : 0,
      maxExcess: maxAfter === null ? null : maxAfter / BOUND - 1,
      slack,
      limitBytes: limit,
    },
    rss: { firstQuarterBytes: rssQ1, halfBytes: rssHalf, endBytes: rssEnd, growthFirstQuarterToEnd: growth(rssQ1, rssEnd), growthSecondHalf: secondHalfGrowth, maxBytes: Math.max(...samples.map((s) => s.rssBytes)) },
    anon: { halfBytes: anonHalf, endBytes: anonEnd, growthSecondHalf: growth(anonHalf, anonEnd), maxBytes: Math.max(...samples.map((s) => s.anonBytes ?? 0)) },
    dropped: end.dropped,
    records: end.records,
    echoesPerSec: {
      firstQuarter: rateBetween(samples, 0, total / 4),
      lastQuarter: rateBetween(samples, (3 * total) / 4, total),
      sweepingMedian: rates.sweeping.length ? median(rates.sweeping) : null,
      otherwiseMedian: rates.otherwise.length ? median(rates.otherwise) : null,
    },
    client: res ? { opsTotal: res.opsTotal, errors: res.errors, firstError: res.firstError ?? null, wire: res.wire, cpuSeconds: res.cpuSeconds } : { error: clientError },
    verdicts,
  };
}

function printSummary(s: ReturnType<typeof summarise>): void {
  const pct = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`);
  const a = s.afterFill;
  log('');
  log(`bound: --retention ${o.retention} = ${num(s.boundBytes)} bytes (${mib(s.boundBytes)} MiB)`);
  log(`first reached: ${s.firstFillS === null ? 'never' : `${s.firstFillS.toFixed(0)} s (${num(s.bytesPerRecord!)} bytes a record; capture ${mib(s.captureBytesPerS)} MiB/s over the run)`}`);
  const ret = s.retention;
  log(`retention (greytap's metrics): ${ret.sweeps} size sweeps, ${ret.failed} failed, ${ret.meanSweepSeconds === null ? '–' : `${(ret.meanSweepSeconds * 1000).toFixed(0)} ms`} each on average; removed ${Object.entries(ret.removed).map(([k, v]) => `${num(v)} ${k}`).join(', ') || 'nothing'}`);
  log(`live data falls seen: ${s.liveAfterSweeps.length}, live data after each ${s.liveAfterSweeps.map((x) => `${mib(x.liveBytes)} MiB at ${x.t.toFixed(0)} s${x.cutShort ? ' (still falling at the end)' : ''}`).join(', ') || '–'}`);
  if (a) {
    log(`after it: store_bytes max ${mib(a.maxStoreBytes)} MiB (${pct(a.maxExcess)} over the bound), over the bound ${pct(a.overBoundShare)} of the time, by ${pct(a.meanExcessWhenOver)} on average when over; live data max ${mib(a.maxLiveBytes)} MiB`);
  }
  log(`RSS: ${mib(s.rss.firstQuarterBytes)} MiB at the end of the first quarter, ${mib(s.rss.endBytes)} MiB at the end (${pct(s.rss.growthFirstQuarterToEnd)}); second half ${pct(s.rss.growthSecondHalf)}; max ${mib(s.rss.maxBytes)} MiB (anonymous max ${mib(s.anon.maxBytes)} MiB, second half ${pct(s.anon.growthSecondHalf)})`);
  log(`drops: ${Object.entries(s.dropped).map(([k, v]) => `${k} ${num(v)}`).join(', ') || 'none'}; records: ${Object.entries(s.records).map(([k, v]) => `${k} ${num(v)}`).join(', ')}`);
  const r = (x: number | null) => (x === null ? '–' : num(x));
  const e = s.echoesPerSec;
  log(`echoes/s: first quarter ${r(e.firstQuarter)}, last quarter ${r(e.lastQuarter)}; median of the intervals a sweep ran in ${r(e.sweepingMedian)}, of the others ${r(e.otherwiseMedian)}`);
  const v = s.verdicts;
  for (const [name, x] of [['store bounded', v.storeBounded], ['memory flat', v.memoryFlat], ['traffic unaffected', v.trafficUnaffected]] as const) {
    log(`${x.ok ? 'PASS' : 'FAIL'} ${name}: ${x.why}`);
  }
}

async function main(): Promise<number> {
  const benchDir = dirname(fileURLToPath(import.meta.url)); // dist/bench
  const repoRoot = resolve(benchDir, '..', '..');
  const tmp = mkdtempSync(join(tmpdir(), 'greytap-soak-'));
  installExitHandlers();
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

  const { pki, server, upstreamPort } = await startUpstream(tmp, benchDir);
  const g = await startGreytap({ tmp, pki, upstreamPort, hosts: workload.hosts ?? 0, workers: o.workers, repoRoot, benchDir },
    { socks: false, dataDir: 'greytap-data', args: ['--retention', o.retention!] });
  process.stderr.write(`soak: ${workload.id} for ${o.minutes} min through greytap (pid ${g.pid}, --retention ${o.retention}, --workers ${o.workers}, --data-dir ${g.dataDir}); a sample every ${o.every} s\n`);

  let progress: ClientProgress & { at: number } = { progress: true, opsTotal: 0, errors: 0, wire: { wsClient: 0, wsServer: 0, httpExchanges: 0 }, at: performance.now() };
  let res: ClientResult | null = null, clientError: string | null = null, done = false;
  const t0 = performance.now();
  const client = runClient(
    { workload, route: g.route, warmupMs: 0, durationMs, drainMs: 5000, bulkTimeoutMs: 60_000, progressMs: 1000 },
    (p) => { progress = { ...p, at: performance.now() }; },
  ).then((r) => { res = r; }, (e: Error) => { clientError = e.message; }).finally(() => { done = true; });

  const samples: Sample[] = [];
  let prev: { m: Samples | null; cpu: number | null; at: number; echoes: number; echoAt: number } = { m: await scrape(g.metricsUrl), cpu: cpuSeconds(g.pid), at: t0, echoes: 0, echoAt: t0 };
  for (let k = 1; ; k++) {
    // wait for the next tick, or the client's end (then one last sample)
    const next = t0 + k * everyMs;
    while (!done && performance.now() < next) await sleep(Math.min(250, next - performance.now()));
    if (done && res) progress = { progress: true, ...(res as ClientResult), at: performance.now() };
    const now = performance.now();
    const m = await scrape(g.metricsUrl);
    if (!m) {
      log(`greytap's /metrics did not answer${g.alive() ? '' : `: greytap exited (${g.tail().split('\n').slice(-2).join(' | ')})`}`);
      if (!g.alive() || done) break;
      continue;
    }
    const cpu = cpuSeconds(g.pid);
    const grew = (name: string, labels: Record<string, string> = {}) => sumSeries(m, name, labels) - (prev.m ? sumSeries(prev.m, name, labels) : 0);
    const records = increaseByLabel(m, null, 'greytap_store_records_total', 'kind');
    const s: Sample = {
      t: (now - t0) / 1000,
      storeBytes: sumSeries(m, 'greytap_store_bytes'),
      fileDiskBytes: fileDiskBytes(g.dataDir),
      liveBytes: sumSeries(m, 'greytap_store_live_bytes'),
      removed: increaseByLabel(m, prev.m, 'greytap_retention_removed_total', 'table'),
      sweeps: grew('greytap_retention_sweeps_total', { bound: 'size' }),
      sweepErrors: grew('greytap_retention_sweeps_total', { result: 'error' }),
      sweepSeconds: grew('greytap_retention_sweep_seconds_sum'),
      records,
      recordsTotal: Object.values(records).reduce((a, b) => a + b, 0),
      dropped: increaseByLabel(m, null, 'greytap_capture_dropped_total', 'reason'),
      lagP50: histogramQuantile(m, prev.m, 'greytap_capture_lag_seconds', 0.5),
      lagP99: histogramQuantile(m, prev.m, 'greytap_capture_lag_seconds', 0.99),
      rssBytes: sumSeries(m, 'greytap_process_resident_memory_bytes'),
      anonBytes: (rssAnonMiB(g.pid) ?? NaN) * MiB || null,
      captureMemoryBytes: sumSeries(m, 'greytap_capture_memory_bytes'),
      queueDepth: sumSeries(m, 'greytap_pool_queue_depth'),
      cpuCores: cpu !== null && prev.cpu !== null ? (cpu - prev.cpu) / ((now - prev.at) / 1000) : null,
      echoes: progress.opsTotal,
      echoesPerSec: progress.at > prev.echoAt ? (progress.opsTotal - prev.echoes) / ((progress.at - prev.echoAt) / 1000) : null,
      clientErrors: progress.errors,
    };
    samples.push(s);
    const prevRecords = samples.length > 1 ? samples[samples.length - 2].recordsTotal : 0;
    const lag = (x: number | null) => (x === null ? '–' : x.toFixed(3));
    log(`t=${s.t.toFixed(0).padStart(5)} s  store ${mib(s.storeBytes).padStart(7)} MiB (live ${mib(s.liveBytes)}, ${num(s.removed.transactions ?? 0)} removed)  records ${num(s.recordsTotal)} (+${num((s.recordsTotal - prevRecords) / ((now - prev.at) / 1000))}/s)`
      + `  drops ${num(Object.values(s.dropped).reduce((a, b) => a + b, 0))}  lag p50/p99 ${lag(s.lagP50)}/${lag(s.lagP99)} s  rss ${mib(s.rssBytes)} MiB (anon ${mib(s.anonBytes)})`
      + `  capmem ${mib(s.captureMemoryBytes)} MiB  queue ${num(s.queueDepth)}  cpu ${s.cpuCores?.toFixed(2) ?? '–'}  echoes ${s.echoesPerSec === null ? '–' : num(s.echoesPerSec)}/s${s.clientErrors ? `  client errors ${s.clientErrors}` : ''}`);
    prev = { m, cpu, at: now, echoes: progress.opsTotal, echoAt: progress.at };
    if (done) break;
  }
  await client;
  const alive = g.alive();
  await g.stop();
  await stopChild(server);
  if (!samples.length) throw new Error('no sample taken');
  const summary = summarise(samples, res, clientError, alive);
  printSummary(summary);
  if (o.json) {
    writeFileSync(o.json, JSON.stringify({
      settings: { workload: workload.id, minutes: o.minutes, every: o.every, retention: o.retention, boundBytes: BOUND, workers: o.workers, rssGrowthPercent: o['rss-growth'], slackWindowS: SLACK_WINDOW_S },
      samples, summary,
    }, null, 2) + '\n');
  }
  return Object.values(summary.verdicts).every((v) => v.ok) ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  process.stderr.write(`soak: failed: ${(e as Error).stack ?? e}\n`);
  process.exit(2);
});
