// The dashboard must only query what greytap actually exposes, the way Prometheus needs it: every
// greytap_* name in every panel expression is looked up in a real server's /metrics with its type
// and labels; counters are only read through rate()/increase(), histograms only as
// histogram_quantile over sum by (le) of the rate of their buckets; grouping and legend labels
// exist on the series; each series is drawn in its metric's unit; the datasource is the variable.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startGreytap, type Greytap } from '../helpers/harness.js';

interface Target { refId: string; expr: string; legendFormat?: string }
interface Panel { id?: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { type: string; uid: string }; targets: Target[]; fieldConfig?: any }

const dash = JSON.parse(readFileSync('grafana/greytap-dashboard.json', 'utf8'));
const panels: Panel[] = dash.panels;
const targets = panels.flatMap((p) => p.targets.map((t) => ({ panel: p, t })));
const namesIn = (expr: string) => [...new Set(expr.match(/greytap_[a-z0-9_]+/g) ?? [])];

/** What a real /metrics says of each name a query may use: its type, and the labels its series carry. */
interface Exposed { type: string; labels: Set<string> }
let exposed: Map<string, Exposed>;
let g: Greytap;

before(async () => {
  g = await startGreytap();
  const text = await (await fetch(g.api + '/metrics')).text();
  exposed = new Map();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)/gm)) {
    for (const n of type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name]) exposed.set(n, { type, labels: new Set() });
  }
  for (const [, name, labels] of text.matchAll(/^(\w+)\{([^}]*)\}/gm)) {
    for (const [, l] of labels.matchAll(/(\w+)="/g)) exposed.get(name)?.labels.add(l);
  }
});
after(() => g?.stop());

test('every metric queried by grafana/greytap-dashboard.json exists in /metrics', () => {
  const names = new Set(targets.flatMap(({ t }) => namesIn(t.expr)));
  assert.ok(names.size >= 15, `dashboard queries ${names.size} metrics`);
  assert.deepEqual([...names].filter((n) => !exposed.has(n)), [], 'dashboard queries metrics that /metrics does not have');
});

test('counters are only read through rate() or increase(), histograms only as histogram_quantile over sum by (le) of the rate of their buckets', () => {
  const wrong: string[] = [];
  for (const { panel, t } of targets) {
    for (const n of namesIn(t.expr)) {
      const { type } = exposed.get(n) ?? { type: '?' };
      const uses = [...t.expr.matchAll(new RegExp(`(\\w*)\\(\\s*${n}(?![\\w])`, 'g'))];
      const bare = (t.expr.match(new RegExp(`${n}(?![\\w])`, 'g')) ?? []).length;
      const ok = (fns: string[]) => uses.length === bare && uses.every((u) => fns.includes(u[1]));
      if (n.endsWith('_bucket') && type === 'histogram') {
        if (!new RegExp(`histogram_quantile\\(\\s*0?\\.\\d+\\s*,\\s*sum by \\(([^)]*\\ble\\b[^)]*)\\)\\s*\\(\\s*rate\\(\\s*${n}\\[`).test(t.expr)) wrong.push(`${panel.title} ${t.refId}: ${t.expr}`);
      } else if (type === 'counter' || type === 'histogram') {
        if (!ok(['rate', 'increase'])) wrong.push(`${panel.title} ${t.refId}: ${t.expr}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

test('every label a query groups by, matches on or names in its legend is a label of the series it reads', () => {
  const wrong: string[] = [];
  for (const { panel, t } of targets) {
    const have = new Set(namesIn(t.expr).flatMap((n) => [...(exposed.get(n)?.labels ?? [])]));
    const used = [
      ...[...t.expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((l) => l.trim()).filter(Boolean)),
      ...[...t.expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1].matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1])),
      ...[...(t.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]),
    ];
    for (const l of used) if (!have.has(l)) wrong.push(`${panel.title} ${t.refId}: ${l} in ${t.expr}`);
  }
  assert.deepEqual(wrong, []);
});

/** The unit a target's values are in, from its metric's name and how it is queried; undefined: a count. */
function unitOf(expr: string): string | undefined {
  const [n] = namesIn(expr);
  if (!n) return undefined;
  if (/histogram_quantile/.test(expr)) return n.replace(/_bucket$/, '').endsWith('_seconds') ? 's' : undefined;
  const rated = /\b(?:rate|irate)\(/.test(expr);
  if (n.endsWith('_bytes_total') && rated) return 'Bps';
  if (n.endsWith('_bytes') && !rated) return 'bytes';
  if (n.endsWith('_seconds') && !rated) return 's';
  if (n.endsWith('_utilization') || n.endsWith('_ratio')) return 'percentunit';
  return undefined;
}

test('every series with a unit (bytes, bytes/s, seconds, a 0..1 share) is drawn in it', () => {
  const wrong: string[] = [];
  for (const { panel, t } of targets) {
    const want = unitOf(t.expr);
    if (!want) continue;
    const override = (panel.fieldConfig?.overrides ?? []).find((o: any) => o.matcher?.id === 'byFrameRefID' && o.matcher.options === t.refId);
    const unit = override?.properties?.find((x: any) => x.id === 'unit')?.value ?? panel.fieldConfig?.defaults?.unit;
    if (unit !== want) wrong.push(`${panel.title} ${t.refId} (${t.expr}): ${unit}, not ${want}`);
  }
  assert.deepEqual(wrong, []);
});

test('the dashboard imports: its datasource is a variable every panel uses, panels are laid out on the 24-column grid, refIds are unique per panel', () => {
  assert.equal(typeof dash.title, 'string');
  assert.match(dash.uid, /^[\w-]{1,40}$/);
  assert.ok(Number.isInteger(dash.schemaVersion));
  const dsVar = (dash.templating?.list ?? []).find((v: any) => v.type === 'datasource');
  assert.equal(dsVar?.query, 'prometheus', 'a Prometheus datasource variable');
  for (const p of panels) {
    assert.deepEqual(p.datasource, { type: 'prometheus', uid: `\${${dsVar.name}}` }, p.title);
    const { x, y, w, h } = p.gridPos;
    assert.ok([x, y, w, h].every(Number.isInteger) && x >= 0 && w > 0 && x + w <= 24 && h > 0, `${p.title}: gridPos`);
    assert.equal(new Set(p.targets.map((t) => t.refId)).size, p.targets.length, `${p.title}: refIds`);
    assert.ok(p.targets.length > 0 && p.targets.every((t) => t.expr), `${p.title}: queries`);
  }
  const ids = panels.filter((p) => p.id !== undefined).map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
});
