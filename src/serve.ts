// `greytap serve`: CA, pool, store, API and the two proxy listeners, wired once.
import { chmodSync, mkdirSync } from 'node:fs';
import type net from 'node:net';
import type http from 'node:http';
import { ConfigError, isLoopback, notLoopbackError, openingOption, type Config, type HostPort } from './config.js';
import { loadOrCreateCA, upstreamCaList } from './io/tls-intercept.js';
import { upstreamTrust } from './io/upstream.js';
import { loadDissectRules } from './workers/dissect/index.js';
import { createHttpProxy } from './io/http-proxy.js';
import { createSocksProxy } from './io/socks-listener.js';
import type { ProxyContext } from './io/context.js';
import { CapturePool } from './workers/pool.js';
import { openStore } from './store/lmdb.js';
import { startRetentionThread } from './store/retention-thread.js';
import { startApi } from './api/server.js';
import { RecordEvents } from './api/events.js';
import { countRetentionSweep, registry, retentionMaxAge, retentionMaxBytes } from './metrics.js';

export interface Running {
  ctx: ProxyContext;
  addresses: { httpProxy?: HostPort; socks?: HostPort; api?: HostPort };
  caPath: string;
  /** Stops accepting, waits for captured records to be committed, closes everything. */
  stop(): Promise<void>;
}

/** A listener that cannot start, as one line naming the option that chose its address. */
function listenError(option: string, at: HostPort, e: NodeJS.ErrnoException): ConfigError {
  return new ConfigError(`${option} ${at.host}:${at.port}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.code ?? e.message}`);
}

function listen(server: net.Server | http.Server, at: HostPort, option: string, allowRemote: boolean): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) => reject(listenError(option, at, e));
    server.once('error', fail);
    server.listen(at.port, at.host, () => {
      server.off('error', fail);
      try {
        resolve(boundAddress(server, at, option, allowRemote));
      } catch (e) {
        reject(e); // (serve closes its listeners)
      }
    });
  });
}

/**
 * Where a listener is bound. Config checked the name it was given; a name is checked again by the
 * address it resolved to (a hosts entry can point `127.example` at 0.0.0.0): no open relay unless
 * asked for.
 */
function boundAddress(server: net.Server | http.Server, at: HostPort, option: string, allowRemote: boolean): HostPort {
  const a = server.address() as net.AddressInfo;
  if (!allowRemote && !isLoopback(a.address)) throw notLoopbackError(option, at, a.address);
  return { host: a.address, port: a.port };
}

export async function serve(cfg: Config): Promise<Running> {
  // Captured bodies are not redacted (prompts, OAuth token exchanges): the data directory is the
  // owner's alone, set again on every start (LMDB creates its files by the umask, 0644 by default;
  // they are reached only through this directory).
  openingOption('--data-dir', cfg.dataDir, () => {
    mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
    chmodSync(cfg.dataDir, 0o700);
  });
  let ca: ReturnType<typeof loadOrCreateCA>;
  try {
    ca = loadOrCreateCA(cfg.dataDir);
  } catch (e) {
    throw new ConfigError((e as Error).message); // its message names the file and the way out
  }
  const trust = upstreamTrust(upstreamCaList(cfg.upstreamCa));
  const dissectRules = cfg.dissectRules ? loadDissectRules(cfg.dissectRules) : undefined;
  const store = openingOption('--data-dir', cfg.dataDir, () => openStore(cfg.dataDir, { retention: { maxAgeMs: cfg.retentionMs, maxBytes: cfg.retentionBytes } }));
  const events = new RecordEvents();
  const pool = new CapturePool({
    workers: cfg.workers,
    dataDir: cfg.dataDir,
    maxBody: cfg.maxBody,
    maxCaptureMemory: cfg.maxCaptureMemory,
    maxConnCaptureMemory: cfg.maxConnCaptureMemory,
    redactHeaders: cfg.redactHeaders,
    nice: cfg.captureNice,
    dissectRules,
    onCommitted: (ids, frames) => events.committed(ids, frames),
    eventsListening: events.listening,
  });
  const ctx: ProxyContext = { cfg, ca, upstreamTrust: trust, pool, listening: [] };
  const servers: (net.Server | http.Server)[] = [];
  // Proxy client sockets, so stop() can end tunnels that would otherwise keep close() waiting.
  const clients = new Set<net.Socket>();
  const track = (s: net.Server) => s.on('connection', (c: net.Socket) => { clients.add(c); c.once('close', () => clients.delete(c)); });
  const addresses: Running['addresses'] = {};
  let up = false;
  try {
    if (cfg.httpProxy) { const s = createHttpProxy(ctx); track(s); servers.push(s); addresses.httpProxy = await listen(s, cfg.httpProxy, '--http-proxy', cfg.allowRemote); ctx.listening.push(addresses.httpProxy); }
    if (cfg.socks) { const s = createSocksProxy(ctx); track(s); servers.push(s); addresses.socks = await listen(s, cfg.socks, '--socks', cfg.allowRemote); ctx.listening.push(addresses.socks); }
    if (cfg.api) {
      const at = cfg.api;
      const s = await startApi({ host: at.host, port: at.port, store, registry, caPem: ca.caCertPem, health: () => up, events })
        .catch((e: NodeJS.ErrnoException) => { throw listenError('--api', at, e); });
      servers.push(s);
      addresses.api = boundAddress(s, at, '--api', cfg.allowRemote);
    }
  } catch (e) {
    for (const s of servers) s.close();
    await pool.close();
    await store.close();
    throw e;
  }
  up = true;
  retentionMaxBytes.set(cfg.retentionBytes ?? 0);
  retentionMaxAge.set((cfg.retentionMs ?? 0) / 1000);
  const retention = startRetentionThread(cfg.dataDir, { maxAgeMs: cfg.retentionMs, maxBytes: cfg.retentionBytes }, cfg.captureNice, countRetentionSweep);

  return {
    ctx,
    addresses,
    caPath: ca.caCertPath,
    async stop() {
      up = false;
      const retained = retention?.stop();
      const closed = Promise.all(servers.map((s) => new Promise<void>((r) => {
        s.close(() => r());
        (s as http.Server).closeAllConnections?.();
      })));
      // Open tunnels end now (their pipes abort the origin side too); what they captured so far is flushed below.
      for (const c of clients) c.destroy();
      await closed;
      await pool.drain();
      await pool.close();
      await retained;
      await store.close();
    },
  };
}
