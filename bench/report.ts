// Results: the JSON shape, ratios against direct (and the TLS pipe), and the two renderings —
// a Markdown table per workload and a hand-written SVG bar chart (no dependencies).
import type { LatencySummary, Workload } from './protocol.js';

export type RowStatus = 'ok' | 'failed to start' | 'unavailable' | 'crashed' | 'error' | 'skipped';

export interface CaptureCheck {
  /** messages (WS, both directions) or HTTP exchanges the client completed, warm-up and drain included */
  expected: number;
  /** records greytap committed meanwhile (store_records_total delta of the matching kinds) */
  committed: number;
  completeness: number;
  dropped: number;
  droppedByReason: Record<string, number>;
}

export interface Row {
  workload: string;
  contender: string;
  status: RowStatus;
  reason?: string;
  opsPerSec?: number;
  mbPerSec?: number;
  latencyMs?: LatencySummary | null;
  /** contender percentile minus direct's, same workload, same run */
  addedLatencyMs?: { p50: number; p99: number; p999: number } | null;
  ratioVsDirect?: number | null;
  ratioVsPipe?: number | null;
  proxyCpuSeconds?: number | null;
  /** proxy CPU seconds per second of wall time over the whole run, warm-up and drain included (1.0 = one core busy) */
  proxyCores?: number | null;
  /** proxy CPU (all threads, capture finished after the run included) per operation completed in the run, µs */
  proxyCpuUsPerOp?: number | null;
  /**
   * The bench's own load per operation, µs: the client process plus the upstream server over the
   * same run. Where they keep the cores busy (2 cores here), a proxy's CPU per operation is taken
   * from them, so throughput follows 1 / (load + proxy CPU per op).
   */
  loadCpuUsPerOp?: number | null;
  proxyPeakRssMiB?: number | null;
  /** sampled peak of RssAnon: the proxy's own memory, without the file pages a store maps in */
  proxyPeakAnonMiB?: number | null;
  capture?: CaptureCheck | null;
  errors?: number;
  firstError?: string;
  /** an operation hit its deadline; no further round was run */
  gaveUp?: boolean;
  /** throughput of every round (null = that round failed); the row holds the best one */
  rounds?: (number | null)[];
  /** every round's outcome in order (status, errors, capture): what the best-of selection leaves out of the row */
  roundDetails?: { status: RowStatus; reason?: string; errors: number; firstError?: string; committed?: number; expected?: number; dropped?: number }[];
  /** each round's throughput / direct's (and the pipe's) in that same round: the spread the noise leaves */
  roundRatiosVsDirect?: number[];
  roundRatiosVsPipe?: number[];
}

export interface ContenderInfo { name: string; what: string; sees: string; status: 'ok' | 'failed to start' | 'unavailable' | 'crashed'; reason?: string }

export interface BenchResult {
  version: 1;
  profile: string;
  startedAt: string;
  wallSeconds: number;
  machine: { cpus: number; cpuModel: string; node: string; kernel: string; mitmproxy: string | null; greytapCommit: string | null; firstTouchUsPerPage?: number };
  settings: { warmupMs: number; durationMs: number; rounds: number; greytapWorkers: number };
  contenders: ContenderInfo[];
  workloads: Workload[];
  rows: Row[];
}

/** Throughput used for ratios: MB/s for bulk, operations/s otherwise. */
const rate = (r: Row, w: Workload) => (w.kind === 'bulk' ? r.mbPerSec : r.opsPerSec);

/** Round i of a contender against round i of the baseline (rounds are interleaved, seconds apart). */
function perRound(r: Row, base: Row | undefined): number[] {
  const out: number[] = [];
  (r.rounds ?? []).forEach((v, i) => {
    const b = base?.rounds?.[i];
    if (v != null && b) out.push(v / b);
  });
  return out;
}

/** Fills ratios and added latency from the direct (and tls-pipe) rows of the same workload. */
export function addRatios(rows: Row[], workloads: Workload[]): void {
  for (const w of workloads) {
    const mine = rows.filter((r) => r.workload === w.id);
    const base = mine.find((r) => r.contender === 'direct' && r.status === 'ok');
    const pipe = mine.find((r) => r.contender === 'tls-pipe' && r.status === 'ok');
    for (const r of mine) {
      if (r.status !== 'ok') continue;
      const v = rate(r, w) ?? 0;
      r.ratioVsDirect = base && rate(base, w) ? v / rate(base, w)! : null;
      r.ratioVsPipe = pipe && rate(pipe, w) ? v / rate(pipe, w)! : null;
      r.roundRatiosVsDirect = perRound(r, base);
      r.roundRatiosVsPipe = perRound(r, pipe);
      const bl = base?.latencyMs;
      r.addedLatencyMs = bl && r.latencyMs ? { p50: r.latencyMs.p50 - bl.p50, p99: r.latencyMs.p99 - bl.p99, p999: r.latencyMs.p999 - bl.p999 } : null;
    }
  }
}

/** min–max of per-round ratios */
const spread = (v: number[] | undefined) => (!v?.length ? '–' : v.length === 1 ? v[0].toFixed(2) : `${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)}`);
const f = (v: number | null | undefined, digits = 0) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const x = (v: number | null | undefined) => (v === null || v === undefined ? '–' : `${v.toFixed(2)}×`);
const ms = (v: number | undefined) => (v === undefined ? '–' : `${v >= 0 ? '+' : ''}${v < 10 && v > -10 ? v.toFixed(2) : v.toFixed(0)}`);

/**
 * A contender's next round folded into the row kept for it: the best round's row, carrying every
 * round's throughput and outcome (errors, capture), which the best-of selection would otherwise
 * drop. A crash replaces an error; a round skipped for time says nothing about the contender.
 * `rate` is negative for a round that is not ok.
 */
export function keepRound(prev: Row | undefined, row: Row, rate: (r: Row) => number): Row {
  const throughput = rate(row);
  row.rounds = [...(prev?.rounds ?? []), throughput >= 0 ? throughput : null];
  row.roundDetails = [...(prev?.roundDetails ?? []), { status: row.status, reason: row.reason, errors: row.errors ?? 0, firstError: row.firstError, committed: row.capture?.committed, expected: row.capture?.expected, dropped: row.capture?.dropped }];
  if (!prev || throughput > rate(prev) || (prev.status === 'error' && row.status !== 'ok' && row.status !== 'error' && row.status !== 'skipped')) return row;
  prev.rounds = row.rounds;
  prev.roundDetails = row.roundDetails;
  return prev;
}

export function toMarkdown(res: BenchResult): string {
  const out: string[] = [];
  const m = res.machine;
  out.push(`# greytap bench — ${res.profile} run, ${res.startedAt}`, '');
  out.push(`${m.cpus} × ${m.cpuModel}, Node ${m.node}, Linux ${m.kernel}${m.mitmproxy ? `, mitmproxy ${m.mitmproxy}` : ''}${m.greytapCommit ? `, greytap @ ${m.greytapCommit}` : ''}` +
    `${m.firstTouchUsPerPage !== undefined ? `; first write to fresh memory ${m.firstTouchUsPerPage.toFixed(1)} µs per 4 KiB page (what storing new data costs the kernel here)` : ''}. ` +
    `Warm-up ${res.settings.warmupMs / 1000} s, window ${res.settings.durationMs / 1000} s per run, best of ${res.settings.rounds} interleaved round(s); greytap --workers ${res.settings.greytapWorkers}; client, upstream and proxy are separate processes on the same cores. ` +
    `Ratios are against **direct** (and the **TLS pipe** for bulk) measured in this same run; added latency is the contender's percentile minus direct's. ` +
    `Load CPU is the bench's own client and upstream processes per operation: where they keep the cores busy, the proxy's CPU per operation is taken from them.`, '');
  out.push('| contender | status | what it is |', '|---|---|---|');
  for (const c of res.contenders) out.push(`| ${c.name} | ${c.status}${c.reason ? `: ${c.reason.replace(/\|/g, '/').slice(0, 160)}` : ''} | ${c.what} |`);
  out.push('');
  for (const w of res.workloads) {
    out.push(`## ${w.label}`, '');
    const unit = w.kind === 'bulk' ? 'downloads' : `${w.unit}`;
    out.push(`| contender | ${unit}/s | MB/s | × direct | × pipe | +p50 ms | +p99 ms | +p99.9 ms | p50 / p99 ms | per round × direct / × pipe | proxy CPU s (cores) | proxy CPU µs/op | load CPU µs/op | peak RSS / anon MiB | capture | drops | errors |`);
    out.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const r of res.rows.filter((r) => r.workload === w.id)) {
      if (r.status !== 'ok') {
        out.push(`| ${r.contender} | ${r.status}${r.reason ? `: ${r.reason.replace(/\|/g, '/').slice(0, 120)}` : ''} | | | | | | | | | | | | | | | |`);
        continue;
      }
      const cap = r.capture ? `${(r.capture.completeness * 100).toFixed(1)} % (${r.capture.committed}/${r.capture.expected})` : '';
      const drops = r.capture ? `${r.capture.dropped}${r.capture.dropped ? ` (${Object.entries(r.capture.droppedByReason).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}` : '';
      const l = r.latencyMs;
      const allErrors = r.roundDetails?.reduce((n, d) => n + d.errors, 0) ?? r.errors ?? 0;
      const errs = `${r.errors ?? 0}${allErrors > (r.errors ?? 0) ? ` (${allErrors} over all rounds)` : ''}`;
      out.push(`| ${r.contender} | ${f(r.opsPerSec, w.kind === 'bulk' ? 2 : 0)} | ${f(r.mbPerSec, 1)} | ${x(r.ratioVsDirect)} | ${x(r.ratioVsPipe)} | ` +
        `${ms(r.addedLatencyMs?.p50)} | ${ms(r.addedLatencyMs?.p99)} | ${ms(r.addedLatencyMs?.p999)} | ${l ? `${f(l.p50, 2)} / ${f(l.p99, 2)}` : '–'} | ${spread(r.roundRatiosVsDirect)} / ${spread(r.roundRatiosVsPipe)} | ` +
        `${r.proxyCpuSeconds == null ? '–' : `${r.proxyCpuSeconds.toFixed(2)} (${f(r.proxyCores, 2)})`} | ${r.proxyCpuUsPerOp == null ? '–' : f(r.proxyCpuUsPerOp)} | ${f(r.loadCpuUsPerOp)} | ${f(r.proxyPeakRssMiB)}${r.proxyPeakAnonMiB == null ? '' : ` / ${f(r.proxyPeakAnonMiB)}`} | ${cap} | ${drops} | ${errs}${r.firstError ? ` (${r.firstError.replace(/\|/g, '/').slice(0, 60)})` : ''} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

const COLORS: Record<string, string> = {
  direct: '#7f7f7f', 'tls-pipe': '#bcbd22', greytap: '#1f77b4', 'greytap-socks5': '#6baed6',
  mitmdump: '#d62728', 'mitmdump-socks5': '#ff9896', 'http-mitm-proxy': '#9467bd',
};
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Horizontal grouped bars: throughput as a fraction of direct, one group per workload. */
export function toSvg(res: BenchResult): string {
  const names = res.contenders.map((c) => c.name);
  const barH = 12, gap = 3, groupGap = 26, left = 250, width = 900, plotW = width - left - 90;
  const maxRatio = Math.max(1, ...res.rows.map((r) => r.ratioVsDirect ?? 0));
  const scale = plotW / Math.min(maxRatio, 3);
  let y = 60;
  const parts: string[] = [];
  for (const w of res.workloads) {
    parts.push(`<text x="10" y="${y - 6}" font-size="12" font-weight="bold">${esc(w.label)}</text>`);
    for (const n of names) {
      const r = res.rows.find((r) => r.workload === w.id && r.contender === n);
      parts.push(`<text x="${left - 6}" y="${y + barH - 2}" font-size="11" text-anchor="end">${esc(n)}</text>`);
      if (r && r.status === 'ok' && r.ratioVsDirect != null) {
        const len = Math.max(1, Math.min(r.ratioVsDirect, 3) * scale);
        parts.push(`<rect x="${left}" y="${y}" width="${len.toFixed(1)}" height="${barH}" fill="${COLORS[n] ?? '#444'}"/>`);
        parts.push(`<text x="${(left + len + 4).toFixed(1)}" y="${y + barH - 2}" font-size="11">${r.ratioVsDirect.toFixed(2)}×</text>`);
      } else {
        parts.push(`<text x="${left + 4}" y="${y + barH - 2}" font-size="11" fill="#999">${esc(r ? r.status : 'not run')}</text>`);
      }
      y += barH + gap;
    }
    y += groupGap;
  }
  const h = y + 10;
  const x1 = left + scale;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">greytap bench (${esc(res.profile)}, ${esc(res.startedAt)}): throughput relative to direct (1.0× = no proxy)</text>`,
    `<line x1="${x1}" y1="34" x2="${x1}" y2="${h - 10}" stroke="#aaa" stroke-dasharray="4 3"/>`,
    `<text x="${x1}" y="46" font-size="11" text-anchor="middle">1.0× direct</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
