// The workloads of issue 7, and the three run profiles (smoke, short, full).
import type { Workload } from './protocol.js';

const ws = (group: string, msgBytes: number, deflate: boolean, concurrency: number): Workload => ({
  id: `ws-${deflate ? 'deflate' : 'plain'}-${msgBytes >= 1024 ? msgBytes / 1024 + 'k' : msgBytes}-c${concurrency}`,
  label: `(${group}) WebSocket echo ${msgBytes >= 1024 ? msgBytes / 1024 + ' KiB' : msgBytes + ' B'} JSON, deflate ${deflate ? 'on (context takeover)' : 'off'}, ${concurrency} conns`,
  group, kind: 'ws', concurrency, msgBytes, deflate, unit: 'msg',
});

export const WORKLOADS: Record<string, Workload> = Object.fromEntries([
  ws('a', 1024, true, 8),
  ws('a', 1024, true, 64),
  ws('b', 1024, false, 8),
  ws('b', 1024, false, 64),
  ws('c', 65536, false, 8),
  ws('c', 65536, true, 8),
  { id: 'sse-c4', label: '(d) SSE: 4 streams × 2,000 small events', group: 'd', kind: 'sse', concurrency: 4, events: 2000, unit: 'event' },
  { id: 'http-1k-c8', label: '(e) HTTPS POST 1 KiB → 1 KiB, keep-alive, 8 conns', group: 'e', kind: 'http', concurrency: 8, msgBytes: 1024, respBytes: 1024, unit: 'req' },
  { id: 'http-1m-c8', label: '(e) HTTPS GET → 1 MiB, keep-alive, 8 conns', group: 'e', kind: 'http', concurrency: 8, respBytes: 1 << 20, unit: 'req' },
  { id: 'churn-100h-c8', label: '(f) new TLS connection per request, 100 host names, 8 loops', group: 'f', kind: 'churn', concurrency: 8, hosts: 100, unit: 'conn' },
  { id: 'churn-500h-c8', label: '(f) new TLS connection per request, 500 host names, 8 loops', group: 'f', kind: 'churn', concurrency: 8, hosts: 500, unit: 'conn' },
  { id: 'bulk-64m', label: 'bulk: sequential 64 MiB downloads, 1 conn', group: 'bulk', kind: 'bulk', concurrency: 1, bulkBytes: 64 << 20, unit: 'MB' },
  { id: 'bulk-256m', label: 'bulk: sequential 256 MiB downloads, 1 conn', group: 'bulk', kind: 'bulk', concurrency: 1, bulkBytes: 256 << 20, unit: 'MB' },
].map((w) => [w.id, w as Workload]));

export interface Profile {
  name: 'smoke' | 'short' | 'full';
  workloads: string[];
  contenders: 'smoke' | 'short' | 'full';
  warmupMs: number;
  durationMs: number;
  drainMs: number;
  /** bulk: deadline of one whole download */
  bulkTimeoutMs: number;
  /** each workload × contender runs this many times, interleaved; the best throughput is kept (noise only ever slows) */
  rounds: number;
  /** the whole bench stops starting new runs after this (remaining runs: "skipped: time budget") */
  budgetMs: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  smoke: { name: 'smoke', workloads: ['ws-plain-1k-c8'], contenders: 'smoke', warmupMs: 300, durationMs: 1500, drainMs: 2000, bulkTimeoutMs: 15_000, rounds: 1, budgetMs: 60_000 },
  // The short profile's warm-up covers a fresh client's ramp: with new connections from a new client
  // process, echoes per 250 ms climb for ~1 s through direct and ~2 s through greytap (measured on
  // (a)), so a 0.3 s warm-up measured the ramp — (a) read 0.63–0.69× direct where 10 s windows read
  // 0.76–0.85×. 1.2 s of warm-up and 1 s windows cost ~50 s more than 0.3 s and 1.2 s.
  short: {
    name: 'short',
    workloads: ['ws-deflate-1k-c8', 'ws-plain-1k-c8', 'ws-plain-64k-c8', 'sse-c4', 'http-1k-c8', 'http-1m-c8', 'churn-100h-c8', 'bulk-64m'],
    contenders: 'short', warmupMs: 1200, durationMs: 1000, drainMs: 3000, bulkTimeoutMs: 8000, rounds: 2, budgetMs: 250_000,
  },
  full: {
    name: 'full',
    workloads: ['ws-deflate-1k-c8', 'ws-deflate-1k-c64', 'ws-plain-1k-c8', 'ws-plain-1k-c64', 'ws-plain-64k-c8', 'ws-deflate-64k-c8',
      'sse-c4', 'http-1k-c8', 'http-1m-c8', 'churn-500h-c8', 'bulk-256m'],
    contenders: 'full', warmupMs: 2000, durationMs: 10_000, drainMs: 5000, bulkTimeoutMs: 60_000, rounds: 3, budgetMs: 60 * 60_000,
  },
};

export const SMOKE_CONTENDERS = ['direct', 'tls-pipe', 'greytap'];
