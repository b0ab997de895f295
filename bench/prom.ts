// Reads greytap's /metrics (Prometheus text exposition format) into sums the bench compares
// before and after a workload, or between two samples of a soak.

export type Samples = Map<string, number>; // "name{labels}" → value

export function parsePromText(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const v = Number(line.slice(sp + 1));
    if (sp > 0 && Number.isFinite(v)) out.set(line.slice(0, sp).trim(), v);
  }
  return out;
}

/** Sum of every series of `name` whose labels include all of `labels`. */
export function sumSeries(s: Samples, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [k, v] of s) {
    const brace = k.indexOf('{');
    if ((brace < 0 ? k : k.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([l, val]) => k.includes(`${l}="${val}"`))) total += v;
  }
  return total;
}

/** What each series of `name` gained since `before`, by the value of its `label` (series that did not grow left out). */
export function increaseByLabel(after: Samples, before: Samples | null, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    if (!k.startsWith(`${name}{`)) continue;
    const d = v - (before?.get(k) ?? 0);
    if (d > 0) out[new RegExp(`${label}="([^"]*)"`).exec(k)?.[1] ?? '?'] = d;
  }
  return out;
}

/**
 * The q-quantile of what histogram `name` observed between two scrapes, as Prometheus's
 * histogram_quantile computes it over the buckets' increase (the dashboard's capture-lag panel):
 * linear within the bucket it falls in, the highest finite bound when it falls past them. Null
 * when nothing was observed.
 */
export function histogramQuantile(after: Samples, before: Samples | null, name: string, q: number): number | null {
  const buckets: { le: number; n: number }[] = [];
  for (const [k, v] of after) {
    const m = k.startsWith(`${name}_bucket{`) ? /le="([^"]+)"/.exec(k) : null;
    if (m) buckets.push({ le: m[1] === '+Inf' ? Infinity : Number(m[1]), n: v - (before?.get(k) ?? 0) });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.n ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const b of buckets) {
    if (b.n >= rank) return b.le === Infinity ? lower : lower + (b.le - lower) * ((rank - below) / (b.n - below || 1));
    lower = b.le;
    below = b.n;
  }
  return lower;
}

export async function scrape(url: string, timeoutMs = 5000): Promise<Samples | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return r.ok ? parsePromText(await r.text()) : null;
  } catch {
    return null;
  }
}
