// `greytap serve`: CA, pool, store, API and the two proxy listeners, wired once.
import { mkdirSync } from 'node:fs';
import type net from 'node:net';
import type http from 'node:http';
import type { Config, HostPort } from './config.js';
import { loadOrCreateCA, upstreamCaList } from './io/tls-intercept.js';
import { upstreamTrust } from './io/upstream.js';
import { createHttpProxy } from './io/http-proxy.js';
import { createSocksProxy } from './io/socks-listener.js';
import type { ProxyContext } from './io/context.js';
import { CapturePool } from './workers/pool.js';
import { openStore } from './store/lmdb.js';
import { startRetention } from './store/retention.js';
import { startApi } from './api/server.js';
import { RecordEvents } from './api/events.js';
import { registry } from './metrics.js';

export interface Running {
  ctx: ProxyContext;
  addresses: { httpProxy?: HostPort; socks?: HostPort; api?: HostPort };
  caPath: string;
  /** Stops accepting, waits for captured records to be committed, closes everything. */
  stop(): Promise<void>;
}

function listen(server: net.Server | http.Server, at: HostPort): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      const a = server.address() as net.AddressInfo;
      resolve({ host: a.address, port: a.port });
    });
  });
}

export async function serve(cfg: Config): Promise<Running> {
  mkdirSync(cfg.dataDir, { recursive: true });
  const ca = loadOrCreateCA(cfg.dataDir);
  const trust = upstreamTrust(upstreamCaList(cfg.upstreamCa));
  const store = openStore(cfg.dataDir, { retention: { maxAgeMs: cfg.retentionMs, maxBytes: cfg.retentionBytes } });
  const events = new RecordEvents();
  const pool = new CapturePool({
    workers: cfg.workers,
    dataDir: cfg.dataDir,
    maxBody: cfg.maxBody,
    maxCaptureMemory: cfg.maxCaptureMemory,
    maxConnCaptureMemory: cfg.maxConnCaptureMemory,
    redactHeaders: cfg.redactHeaders,
    nice: cfg.captureNice,
    onCommitted: (ids) => events.committed(ids),
  });
  const ctx: ProxyContext = { cfg, ca, upstreamTrust: trust, pool };
  const servers: (net.Server | http.Server)[] = [];
  // Proxy client sockets, so stop() can end tunnels that would otherwise keep close() waiting.
  const clients = new Set<net.Socket>();
  const track = (s: net.Server) => s.on('connection', (c: net.Socket) => { clients.add(c); c.once('close', () => clients.delete(c)); });
  const addresses: Running['addresses'] = {};
  let up = false;
  try {
    if (cfg.httpProxy) { const s = createHttpProxy(ctx); track(s); servers.push(s); addresses.httpProxy = await listen(s, cfg.httpProxy); }
    if (cfg.socks) { const s = createSocksProxy(ctx); track(s); servers.push(s); addresses.socks = await listen(s, cfg.socks); }
    if (cfg.api) {
      const s = await startApi({ host: cfg.api.host, port: cfg.api.port, store, registry, caPem: ca.caCertPem, health: () => up, events });
      servers.push(s);
      const a = s.address() as net.AddressInfo;
      addresses.api = { host: a.address, port: a.port };
    }
  } catch (e) {
    for (const s of servers) s.close();
    await pool.close();
    await store.close();
    throw e;
  }
  up = true;
  const retention = startRetention(store, { maxAgeMs: cfg.retentionMs, maxBytes: cfg.retentionBytes });

  return {
    ctx,
    addresses,
    caPath: ca.caCertPath,
    async stop() {
      up = false;
      retention.stop();
      const closed = Promise.all(servers.map((s) => new Promise<void>((r) => {
        s.close(() => r());
        (s as http.Server).closeAllConnections?.();
      })));
      // Open tunnels end now (their pipes abort the origin side too); what they captured so far is flushed below.
      for (const c of clients) c.destroy();
      await closed;
      await pool.drain();
      await pool.close();
      await store.close();
    },
  };
}
