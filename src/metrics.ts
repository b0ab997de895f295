// The one Prometheus registry (main thread). Names and labels are the contract in DESIGN.md
// ("Metrics"); every series exists from start-up so dashboards never see gaps. Workers never touch
// this registry: they return counters in their task results (see MetricDeltas) and the pool adds
// them here, so nothing is lost when a worker restarts.
import client from 'prom-client';
import type { CaptureTask } from './workers/tasks.js';
import type { RetentionPass } from './store/retention.js';

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry, prefix: 'greytap_' });

const p = 'greytap_';
const reg = [registry];

export const connectionsActive = new client.Gauge({ name: p + 'connections_active', help: 'Open client connections', labelNames: ['listener'], registers: reg });
export const connectionsTotal = new client.Counter({ name: p + 'connections_total', help: 'Accepted client connections', labelNames: ['listener', 'intercepted'], registers: reg });
export const connectionErrors = new client.Counter({ name: p + 'connection_errors_total', help: 'Connections that ended on an error (a dead upstream, a failed TLS handshake, a bad proxy request), by listener and error code', labelNames: ['listener', 'error'], registers: reg });
export const CONNECTION_ERRORS = ['upstream_unreachable', 'fd_limit', 'upstream_tls', 'client_tls', 'bad_http', 'bad_socks'] as const;
// Forwarded bytes are tallied in plain numbers on the hot path (a labelled inc() per 16 KiB chunk
// cost ~15 % of bulk throughput) and handed to the counter when it is scraped.
const forwarded = { up: 0, down: 0 };
export function countForwarded(up: boolean, bytes: number): void {
  if (up) forwarded.up += bytes; else forwarded.down += bytes;
}
export const bytesForwarded = new client.Counter({
  name: p + 'bytes_forwarded_total', help: 'Bytes forwarded, by direction (up = client to server)', labelNames: ['direction'], registers: reg,
  collect() {
    for (const d of ['up', 'down'] as const) {
      if (forwarded[d]) { this.inc({ direction: d }, forwarded[d]); forwarded[d] = 0; }
    }
  },
});
export const httpTransactions = new client.Counter({ name: p + 'http_transactions_total', help: 'HTTP transactions seen (request heads parsed)', registers: reg });
// Per-message counts are tallied the same way (one increment per WebSocket message on the main
// thread), per direction then opcode: a "direction opcode" key was a new string to hash per message.
const wsSeen = { client: new Map<string, number>(), server: new Map<string, number>() }; // messages since the last scrape
export function countWsMessage(direction: 'client' | 'server', opcode: string): void {
  const seen = wsSeen[direction];
  seen.set(opcode, (seen.get(opcode) ?? 0) + 1);
}
export const wsMessages = new client.Counter({
  name: p + 'ws_messages_total', help: 'WebSocket messages seen on the wire', labelNames: ['direction', 'opcode'], registers: reg,
  collect() {
    for (const direction of ['client', 'server'] as const) {
      for (const [opcode, n] of wsSeen[direction]) this.inc({ direction, opcode }, n);
      wsSeen[direction].clear();
    }
  },
});
export const captureLag = new client.Histogram({
  name: p + 'capture_lag_seconds',
  help: 'Last byte of a message/body read on the main thread to its record committed',
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: reg,
});
export const forwardLatency = new client.Histogram({
  name: p + 'forward_latency_seconds',
  help: 'Time the forwarding thread spends on a chunk read from one side: its write handed to the other side, then the tap (added forwarding latency; every 16th chunk of all connections)',
  buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
  registers: reg,
});
export const captureDropped = new client.Counter({ name: p + 'capture_dropped_total', help: 'Captures dropped or degraded, by reason (forwarding is never affected)', labelNames: ['reason'], registers: reg });
export const decodeErrors = new client.Counter({ name: p + 'decode_errors_total', help: 'Decode errors, by kind', labelNames: ['kind'], registers: reg });
export const poolUtilization = new client.Gauge({ name: p + 'pool_utilization', help: 'Share of the last second the capture workers were busy (their event-loop utilization, mean over workers, 0..1)', registers: reg });
export const tlsHandshakes = new client.Counter({ name: p + 'tls_handshakes_total', help: 'TLS handshakes, by side (client = towards the agent, upstream = towards the server) and result', labelNames: ['side', 'result'], registers: reg });
export const certCache = new client.Counter({ name: p + 'cert_cache_total', help: 'Leaf certificate cache lookups', labelNames: ['result'], registers: reg });
export const storeBytes = new client.Gauge({ name: p + 'store_bytes', help: 'Size of the LMDB environment on disk', registers: reg });
export const storeLiveBytes = new client.Gauge({ name: p + 'store_live_bytes', help: 'Bytes of live data in the store (pages in use by every table): what --retention SIZE bounds; store_bytes, the file, keeps its peak', registers: reg });
export const retentionMaxBytes = new client.Gauge({ name: p + 'retention_max_bytes', help: 'The --retention SIZE bound on store_live_bytes (0: none)', registers: reg });
export const retentionMaxAge = new client.Gauge({ name: p + 'retention_max_age_seconds', help: 'The --retention AGE bound (0: none)', registers: reg });
export const retentionSweeps = new client.Counter({ name: p + 'retention_sweeps_total', help: 'Retention sweeps, by the bound enforced (size: every 5 s, age: every minute) and result (an error is logged; the next sweep retries)', labelNames: ['bound', 'result'], registers: reg });
export const retentionSweepSeconds = new client.Histogram({ name: p + 'retention_sweep_seconds', help: 'Time one retention sweep took, by bound', labelNames: ['bound'], buckets: [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60], registers: reg });
export const retentionRemoved = new client.Counter({ name: p + 'retention_removed_total', help: 'Records removed by retention, by table (transactions: HTTP exchanges and WebSocket messages)', labelNames: ['table'], registers: reg });
export const storeRecords = new client.Counter({ name: p + 'store_records_total', help: 'Records committed to the store, by kind', labelNames: ['kind'], registers: reg });
export const workerTaskSeconds = new client.Histogram({ name: p + 'worker_task_seconds', help: 'Time a worker spent on one capture task (decode + store)', labelNames: ['type'], buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: reg });
/**
 * A gauge read from its sources at scrape time, summed (each capture pool reports its own count):
 * the pool's counts change two or three times per message on the forwarding thread, where a
 * Prometheus call each time would cost more than the count. Returns how a source reports itself;
 * calling what that returns unreports it.
 */
function scrapedGauge(name: string, help: string): (source: () => number) => () => void {
  const sources = new Set<() => number>();
  new client.Gauge({
    name: p + name, help, registers: reg,
    collect() {
      let n = 0;
      for (const f of sources) n += f();
      this.set(n);
    },
  });
  return (source) => {
    sources.add(source);
    return () => sources.delete(source);
  };
}
export const reportCaptureMemory = scrapedGauge('capture_memory_bytes', 'Bytes held in capture buffers awaiting the pool');
// Items, not tasks: a Piscina task may carry one item or a thousand, and most of the backlog waits
// before Piscina sees it (behind its lane's task in flight, or for the batching flush).
export const reportQueueDepth = scrapedGauge(
  'pool_queue_depth',
  'Captured items not yet committed (one item: a WebSocket message, an HTTP exchange or a connection record): waiting behind their stream\'s task in flight, for the batching flush, in the pool queue, or in a worker',
);

export const DROP_REASONS = ['queue_full', 'too_large', 'desynced', 'worker_error', 'store_error'] as const;
export const RECORD_KINDS = ['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL', 'CONN', 'CONVERSATION'] as const;
/**
 * Every kind counted in decode_errors_total: the taps (io/http-tap.ts, io/ws-tap.ts), the decoders'
 * and the assembler's metric deltas (workers/decode-http.ts, decode-ws.ts, assemble.ts). A kind
 * missing here would appear only at its first error.
 */
export const DECODE_ERROR_KINDS = ['inflate_failed', 'invalid_utf8', 'bad_frame', 'bad_http', 'truncated_stream', 'decode_failed', 'dissect_failed', 'assemble_failed'] as const;

// Touch every labelled series so it is present from start-up.
for (const l of ['http', 'socks']) {
  connectionsActive.set({ listener: l }, 0);
  for (const i of ['true', 'false']) connectionsTotal.inc({ listener: l, intercepted: i }, 0);
  for (const e of CONNECTION_ERRORS) connectionErrors.inc({ listener: l, error: e }, 0);
}
for (const d of ['up', 'down']) bytesForwarded.inc({ direction: d }, 0);
for (const d of ['client', 'server']) for (const o of ['text', 'binary', 'ping', 'pong', 'close']) wsMessages.inc({ direction: d, opcode: o }, 0);
for (const r of DROP_REASONS) captureDropped.inc({ reason: r }, 0);
for (const k of DECODE_ERROR_KINDS) decodeErrors.inc({ kind: k }, 0);
for (const s of ['client', 'upstream']) for (const r of ['ok', 'error']) tlsHandshakes.inc({ side: s, result: r }, 0);
for (const r of ['hit', 'miss']) certCache.inc({ result: r }, 0);
for (const k of RECORD_KINDS) storeRecords.inc({ kind: k }, 0);
// (the bounds and tables a retention sweep reports: RetentionPass)
for (const b of ['age', 'size'] as const satisfies readonly RetentionPass['bound'][]) {
  for (const r of ['ok', 'error']) retentionSweeps.inc({ bound: b, result: r }, 0);
  retentionSweepSeconds.zero({ bound: b });
}
for (const t of ['transactions', 'connections', 'conversations'] as const satisfies readonly (keyof RetentionPass['removed'])[]) retentionRemoved.inc({ table: t }, 0);
// the types a task is observed under (a lane's, by its items': HTTP exchanges or connection records)
const TASK_TYPES = ['http', 'ws', 'conn'] as const satisfies readonly Exclude<CaptureTask['type'], 'lane'>[];
for (const t of TASK_TYPES) workerTaskSeconds.zero({ type: t });

/** Counters a worker accumulates during one task; the pool adds them to the registry. */
export interface MetricDeltas {
  decodeErrors?: Record<string, number>;
  dropped?: Record<string, number>;
  storeRecords?: Record<string, number>;
  /** capture lag samples in seconds (last byte read → committed) */
  lags?: number[];
}

/** A retention sweep's report (posted by its thread) into the registry. */
export function countRetentionSweep(s: RetentionPass): void {
  retentionSweeps.inc({ bound: s.bound, result: s.error === undefined ? 'ok' : 'error' });
  retentionSweepSeconds.observe({ bound: s.bound }, s.seconds);
  for (const [table, n] of Object.entries(s.removed)) if (n) retentionRemoved.inc({ table }, n);
}

export function applyDeltas(d: MetricDeltas | undefined): void {
  if (!d) return;
  for (const [k, v] of Object.entries(d.decodeErrors ?? {})) decodeErrors.inc({ kind: k }, v);
  for (const [k, v] of Object.entries(d.dropped ?? {})) captureDropped.inc({ reason: k }, v);
  for (const [k, v] of Object.entries(d.storeRecords ?? {})) storeRecords.inc({ kind: k }, v);
  for (const s of d.lags ?? []) captureLag.observe(s);
}
