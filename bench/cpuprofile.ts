// Summarises a V8 .cpuprofile (from `npm run bench -- --cpu-prof`, which starts greytap with
// node --cpu-prof): self time per function and per file/module, largest first — "what dominates".
// Usage: node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]
import { readFileSync } from 'node:fs';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

export interface SelfTime { name: string; ms: number; share: number }

function where(url: string): string {
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 13).split('/').slice(0, u.slice(nm + 13).startsWith('@') ? 2 : 1).join('/');
  const d = u.indexOf('/dist/');
  return d >= 0 ? u.slice(d + 6) : u || '(native/V8)';
}

/** Self time by function and by module; (idle), (program) and (garbage collector) are kept — they are part of the answer. */
export function summarise(p: CpuProfile): { total: number; functions: SelfTime[]; modules: SelfTime[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]);
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    if (!n) continue;
    total += dt;
    const cf = n.callFrame;
    const f = `${cf.functionName || '(anonymous)'} ${where(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    fn.set(f, (fn.get(f) ?? 0) + dt);
    const m = cf.url ? where(cf.url) : cf.functionName;
    mod.set(m, (mod.get(m) ?? 0) + dt);
  }
  const rank = (m: Map<string, number>) => [...m].map(([name, ms]) => ({ name, ms, share: total ? ms / total : 0 })).sort((a, b) => b.ms - a.ms);
  return { total, functions: rank(fn), modules: rank(mod) };
}

if (process.argv[1]?.endsWith('cpuprofile.js') && process.argv[2]) {
  const top = Number(process.argv[3] ?? 25);
  const s = summarise(JSON.parse(readFileSync(process.argv[2], 'utf8')) as CpuProfile);
  const line = (x: SelfTime) => `${(x.share * 100).toFixed(1).padStart(5)} %  ${x.ms.toFixed(0).padStart(7)} ms  ${x.name}`;
  process.stdout.write(`total sampled: ${s.total.toFixed(0)} ms\n\nby module:\n${s.modules.slice(0, 15).map(line).join('\n')}\n\nby function (self):\n${s.functions.slice(0, top).map(line).join('\n')}\n`);
}
