// The dashboard must only query metrics greytap actually exposes: every greytap_* name in every
// panel expression is looked up in a real server's /metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startGreytap } from '../helpers/harness.js';

test('every metric queried by grafana/greytap-dashboard.json exists in /metrics', async () => {
  const dash = JSON.parse(readFileSync('grafana/greytap-dashboard.json', 'utf8'));
  const exprs: string[] = dash.panels.flatMap((p: any) => p.targets.map((t: any) => t.expr));
  const names = new Set(exprs.flatMap((e) => e.match(/greytap_[a-z0-9_]+/g) ?? []));
  assert.ok(names.size >= 15, `dashboard queries ${names.size} metrics`);
  const g = await startGreytap();
  try {
    const text = await (await fetch(g.api + '/metrics')).text();
    const exposed = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)/gm)].flatMap(([, n, type]) =>
      type === 'histogram' ? [`${n}_bucket`, `${n}_sum`, `${n}_count`] : [n]));
    const missing = [...names].filter((n) => !exposed.has(n));
    assert.deepEqual(missing, [], `dashboard queries metrics that /metrics does not have`);
  } finally { await g.stop(); }
});

test('every byte-valued series in the dashboard is drawn in bytes', () => {
  const dash = JSON.parse(readFileSync('grafana/greytap-dashboard.json', 'utf8'));
  for (const p of dash.panels) {
    for (const t of p.targets) {
      if (!/greytap_\w+_bytes\b(?!_total)/.test(t.expr) || /rate\(/.test(t.expr)) continue;
      const override = (p.fieldConfig?.overrides ?? []).find((o: any) => o.matcher?.id === 'byFrameRefID' && o.matcher.options === t.refId);
      const unit = override?.properties?.find((x: any) => x.id === 'unit')?.value ?? p.fieldConfig?.defaults?.unit;
      assert.equal(unit, 'bytes', `${p.title}: ${t.expr}`);
    }
  }
});
