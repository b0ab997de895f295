// The API listener (--api): dashboard, REST API, SSE events, /metrics, /healthz, /ca.pem.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Store } from '../store/store.js';
import { RecordEvents } from './events.js';
import { SseHub, type SseOptions } from './sse.js';
import { route } from './routes.js';

export { RecordEvents } from './events.js';

export interface ApiOptions {
  host: string;
  port: number;
  store: Store;
  registry: Registry;
  caPem: string;
  health: () => boolean;
  events: RecordEvents;
  /** SSE tuning (heartbeat interval, per-client buffer bound); defaults suit production. */
  sse?: SseOptions;
}

/** Starts listening; resolves once bound. `server.close()` also ends the open SSE streams. */
export function startApi(opts: ApiOptions): Promise<Server> {
  const sse = new SseHub(opts.store, opts.events, opts.sse);
  const ctx = { host: opts.host, store: opts.store, registry: opts.registry, caPem: opts.caPem, health: opts.health, sse };
  const server = createServer((req, res) => {
    route(ctx, req, res).catch((e: unknown) => {
      if (!res.headersSent) {
        const body = JSON.stringify({ error: `internal error: ${(e as Error)?.message ?? e}` });
        res.writeHead(500, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    });
  });
  // An SSE stream never goes idle, so close() alone would wait for every browser tab.
  const close = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => {
    sse.stop();
    close(cb);
    server.closeIdleConnections();
    return server;
  }) as typeof server.close;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
