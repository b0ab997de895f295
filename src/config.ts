// Options of `greytap serve` (DESIGN.md "CLI"): defaults, config file (same names, camelCase),
// GREYTAP_* environment variables, then command-line flags — later sources win. Bad options throw
// ConfigError with a one-line reason; the CLI prints it and exits 2.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export class ConfigError extends Error {}

/** Runs `open` on what an option names (a file, a directory); what it throws is that option's one-line ConfigError. */
export function openingOption<T>(option: string, value: string, open: () => T): T {
  try { return open(); } catch (e) { throw new ConfigError(`${option} ${value}: ${(e as Error).message}`); }
}

export interface HostPort { host: string; port: number }

export interface Config {
  dataDir: string;
  httpProxy: HostPort | null;
  socks: HostPort | null;
  api: HostPort | null;
  workers: number;
  upstreamCa: string[]; // file paths
  map: Map<string, HostPort>; // "host:port" (lower-case) → dial target
  noIntercept: string[]; // host globs
  maxBody: number;
  retentionMs: number | null;
  retentionBytes: number | null;
  socksAuth: { user: string; pass: string }[] | null; // RFC 1929 users; null = no-auth
  redactHeaders: string[]; // extra substrings of header names to redact
  allowRemote: boolean; // listeners on non-loopback addresses must be asked for
  maxCaptureMemory: number; // bytes held in capture buffers, all connections together
  maxConnCaptureMemory: number; // per connection
  captureNice: number; // CPU niceness of the capture workers (0 = same as forwarding)
  handshakeTimeoutMs: number; // accept → proxy request, and ClientHello → TLS established
  dissectRules: string | null; // JSON file of endpoint rules (workers/dissect/index.ts), loaded by serve
}

export const DEFAULTS = {
  dataDir: './greytap-data',
  httpProxy: '127.0.0.1:43051',
  socks: '127.0.0.1:43052',
  api: '127.0.0.1:43080',
  maxBody: 16 * 1024 * 1024,
  maxCaptureMemory: 256 * 1024 * 1024,
  maxConnCaptureMemory: 64 * 1024 * 1024,
  captureNice: 15,
  handshakeTimeout: '60s', // as long as Node's own HTTP server waits for request headers
};

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20, g: 1 << 30, gb: 1 << 30, gib: 1 << 30, t: 2 ** 40, tib: 2 ** 40 };

export function parseBytes(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(String(s).trim());
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new ConfigError(`${what}: expected a size like 16MiB, got "${s}"`);
  return Math.floor(Number(m[1]) * unit);
}

const AGE: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "7d" → milliseconds; null when not a duration. */
function parseAge(s: string): number | null {
  const m = /^(\d+)([smhdw])$/.exec(s.trim());
  return m ? Number(m[1]) * AGE[m[2]] : null;
}

export function parseHostPort(s: string, what: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(String(s).trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${what}: expected HOST:PORT, got "${s}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

function listenAddr(v: unknown, what: string): HostPort | null {
  if (v === 'off' || v === false) return null;
  return parseHostPort(String(v), what);
}

function list(v: unknown): string[] {
  if (v === undefined || v === null || v === '') return [];
  if (Array.isArray(v)) return v.map(String);
  return String(v).split(',').map((x) => x.trim()).filter(Boolean);
}

const FLAGS: Record<string, { key: string; repeat?: boolean; bool?: boolean }> = {
  '--config': { key: 'config' },
  '--data-dir': { key: 'dataDir' },
  '--http-proxy': { key: 'httpProxy' },
  '--socks': { key: 'socks' },
  '--api': { key: 'api' },
  '--workers': { key: 'workers' },
  '--upstream-ca': { key: 'upstreamCa', repeat: true },
  '--map': { key: 'map', repeat: true },
  '--no-intercept': { key: 'noIntercept', repeat: true },
  '--max-body': { key: 'maxBody' },
  '--retention': { key: 'retention', repeat: true },
  '--socks-auth': { key: 'socksAuth', repeat: true },
  '--redact-header': { key: 'redactHeaders', repeat: true },
  '--allow-remote': { key: 'allowRemote', bool: true },
  '--max-capture-memory': { key: 'maxCaptureMemory' },
  '--max-conn-capture-memory': { key: 'maxConnCaptureMemory' },
  '--capture-nice': { key: 'captureNice' },
  '--handshake-timeout': { key: 'handshakeTimeout' },
  '--dissect-rules': { key: 'dissectRules' },
};

/** Raw option values by camelCase key, from argv (flags only; the subcommand is already removed). */
export function parseArgv(argv: string[], allowed = Object.keys(FLAGS)): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let inline: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { inline = a.slice(eq + 1); a = a.slice(0, eq); }
    const f = FLAGS[a];
    if (!f || !allowed.includes(a)) throw new ConfigError(`unknown option ${a}`);
    let v: unknown = true;
    if (!f.bool) {
      v = inline ?? argv[++i];
      if (v === undefined) throw new ConfigError(`${a} needs a value`);
    }
    if (f.repeat) ((out[f.key] ??= []) as unknown[]).push(v);
    else out[f.key] = v;
  }
  return out;
}

function fromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of Object.values(FLAGS)) {
    const name = 'GREYTAP_' + f.key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
    const v = env[name];
    if (v === undefined) continue;
    out[f.key] = f.repeat ? list(v) : f.bool ? v === '1' || v === 'true' : v;
  }
  return out;
}

/** A loopback name or address (the bound address of a listener is checked again: a name may resolve elsewhere). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\./.test(host);
}

/** The no-open-relay rule's refusal, for a listener's option and address. */
export function notLoopbackError(option: string, at: HostPort, bound?: string): ConfigError {
  const what = bound === undefined ? 'is not a loopback address' : `is bound to ${bound}, not a loopback address`;
  return new ConfigError(`${option} ${at.host}:${at.port} ${what}; add --allow-remote to listen there`);
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): Config {
  const cli = parseArgv(argv);
  const envOpts = fromEnv(env);
  const file = (cli.config ?? envOpts.config) as string | undefined;
  let fileOpts: Record<string, unknown> = {};
  if (file) {
    try { fileOpts = JSON.parse(readFileSync(file, 'utf8')); }
    catch (e) { throw new ConfigError(`--config ${file}: ${(e as Error).message}`); }
  }
  const o = { ...fileOpts, ...envOpts, ...cli } as Record<string, unknown>;

  const workers = o.workers === undefined ? Math.max(1, availableParallelism() - 1) : Number(o.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) throw new ConfigError(`--workers: expected a whole number from 1, got "${o.workers}"`);

  const captureNice = o.captureNice === undefined ? DEFAULTS.captureNice : Number(o.captureNice);
  if (!Number.isInteger(captureNice) || captureNice < 0 || captureNice > 19) throw new ConfigError(`--capture-nice: expected a whole number from 0 to 19, got "${o.captureNice}"`);

  const map = new Map<string, HostPort>();
  for (const m of list(o.map)) {
    const [from, to] = m.split('=');
    if (!from || !to) throw new ConfigError(`--map: expected HOST:PORT=HOST:PORT, got "${m}"`);
    const f = parseHostPort(from, '--map');
    map.set(`${f.host.toLowerCase()}:${f.port}`, parseHostPort(to, '--map'));
  }

  let retentionMs: number | null = null;
  let retentionBytes: number | null = null;
  for (const r of list(o.retention)) {
    const age = parseAge(r);
    if (age !== null) retentionMs = age;
    else retentionBytes = parseBytes(r, '--retention');
  }
  const handshakeTimeoutMs = parseAge(String(o.handshakeTimeout ?? DEFAULTS.handshakeTimeout));
  if (!handshakeTimeoutMs) throw new ConfigError(`--handshake-timeout: expected a duration like 60s or 2m, got "${o.handshakeTimeout}"`);

  const socksAuth = list(o.socksAuth).map((s) => {
    const i = s.indexOf(':');
    if (i <= 0) throw new ConfigError(`--socks-auth: expected USER:PASS, got "${s}"`);
    return { user: s.slice(0, i), pass: s.slice(i + 1) };
  });

  const cfg: Config = {
    dataDir: String(o.dataDir ?? DEFAULTS.dataDir),
    httpProxy: listenAddr(o.httpProxy ?? DEFAULTS.httpProxy, '--http-proxy'),
    socks: listenAddr(o.socks ?? DEFAULTS.socks, '--socks'),
    api: listenAddr(o.api ?? DEFAULTS.api, '--api'),
    workers,
    upstreamCa: list(o.upstreamCa),
    map,
    noIntercept: list(o.noIntercept),
    maxBody: o.maxBody === undefined ? DEFAULTS.maxBody : parseBytes(String(o.maxBody), '--max-body'),
    retentionMs,
    retentionBytes,
    socksAuth: socksAuth.length ? socksAuth : null,
    redactHeaders: list(o.redactHeaders),
    allowRemote: o.allowRemote === true || o.allowRemote === 'true',
    maxCaptureMemory: o.maxCaptureMemory === undefined ? DEFAULTS.maxCaptureMemory : parseBytes(String(o.maxCaptureMemory), '--max-capture-memory'),
    maxConnCaptureMemory: o.maxConnCaptureMemory === undefined ? DEFAULTS.maxConnCaptureMemory : parseBytes(String(o.maxConnCaptureMemory), '--max-conn-capture-memory'),
    captureNice,
    handshakeTimeoutMs,
    dissectRules: o.dissectRules === undefined ? null : String(o.dissectRules),
  };
  // No open relay by default: a proxy listener reachable from other hosts must be asked for.
  for (const [name, l] of [['--http-proxy', cfg.httpProxy], ['--socks', cfg.socks], ['--api', cfg.api]] as const) {
    if (l && !isLoopback(l.host) && !cfg.allowRemote) throw notLoopbackError(name, l);
  }
  return cfg;
}

/** Shell-style glob (`*`, `?`) match for --no-intercept, case-insensitive. */
export function globMatch(glob: string, host: string): boolean {
  const re = new RegExp('^' + glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 'i');
  return re.test(host);
}
