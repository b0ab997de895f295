// Types crossing process boundaries in the bench: runner ↔ client, runner ↔ server/pipe/peers.

/** How the load client reaches the upstream through one contender. */
export interface Route {
  /** null = dial the upstream directly (the "direct" contender) */
  proxy: { type: 'http' | 'socks5'; host: string; port: number } | null;
  /**
   * What the client asks the proxy for (CONNECT / SOCKS target):
   * 'name' = the TLS host name (bench.test:PORT, h7.bench.test:PORT) — the proxy must map it to 127.0.0.1;
   * 'ip'   = 127.0.0.1:PORT — the proxy dials that literally; the host name travels only as TLS SNI.
   */
  addressing: 'name' | 'ip';
  /** upstream server port on 127.0.0.1 (also the port in every target) */
  upstreamPort: number;
  /** PEM file the client trusts for the TLS it terminates (bench CA, or the proxy's CA) */
  caFile: string;
}

export type WorkloadKind = 'ws' | 'http' | 'sse' | 'churn' | 'bulk';

export interface Workload {
  id: string;
  /** one line for the table: what is measured */
  label: string;
  /** the letter: a…f, or "bulk" */
  group: string;
  kind: WorkloadKind;
  concurrency: number;
  /** ws: message payload bytes; http: request body bytes (0 = GET) */
  msgBytes?: number;
  /** ws: permessage-deflate with context takeover (both directions) or off */
  deflate?: boolean;
  /** http: response body bytes */
  respBytes?: number;
  /** sse: events per stream */
  events?: number;
  /** churn: distinct host names cycled through (h1..hN.bench.test) */
  hosts?: number;
  /** bulk: bytes per download */
  bulkBytes?: number;
  /** unit of ops/s in the table */
  unit: 'msg' | 'req' | 'event' | 'conn' | 'MB';
}

export interface ClientJob {
  workload: Workload;
  route: Route;
  warmupMs: number;
  durationMs: number;
  /** upper bound on waiting for in-flight operations after the measured window */
  drainMs: number;
  /** bulk: deadline of one whole download */
  bulkTimeoutMs: number;
  /** send a ClientProgress this often while the job runs (a soak reads its rate per interval); none when unset */
  progressMs?: number;
}

/** The running totals of a job, sent every `progressMs` before its ClientResult. */
export interface ClientProgress {
  progress: true;
  opsTotal: number;
  errors: number;
  firstError?: string;
  wire: ClientResult['wire'];
}

export interface LatencySummary { n: number; p50: number; p99: number; p999: number; mean: number }

export interface ClientResult {
  ok: boolean;
  /** operations completed inside the measured window (echoes, requests, events, connections) */
  ops: number;
  /** operations completed over the whole run (warm-up and drain included) */
  opsTotal: number;
  /** payload bytes moved inside the window, both directions */
  bytes: number;
  elapsedMs: number;
  /** milliseconds; per echo / request / event (server write → client parse) / connection */
  latency: LatencySummary | null;
  errors: number;
  firstError?: string;
  /** an operation hit its deadline (e.g. a proxy that buffers a whole 64 MiB body); another round would too */
  gaveUp: boolean;
  /** the client process's CPU over the whole job (connections, warm-up and drain included) */
  cpuSeconds: number;
  /** totals over the whole run (warm-up and drain included), what a capturing proxy should record */
  wire: { wsClient: number; wsServer: number; httpExchanges: number };
}

/** IPC from forked helper processes (server, pipe, http-mitm-proxy) to the runner. */
export interface ReadyMessage { ready: true; port: number; caFile?: string }
