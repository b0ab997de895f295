// Reads greytap's /metrics (Prometheus text exposition format) into sums the bench compares
// before and after a workload.

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

export async function scrape(url: string, timeoutMs = 5000): Promise<Samples | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return r.ok ? parsePromText(await r.text()) : null;
  } catch {
    return null;
  }
}
