// The contenders: how each is started on 127.0.0.1 in a process of its own, how the client
// reaches the upstream through it (Route), and what it is told to trust. `sees` documents exactly
// what each one is asked to do, so the table compares like with like.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { forkChild, lastLines, spawnChild, stopChild, waitReady, type Child } from './children.js';
import { BENCH_DOMAIN, makeBenchPki, type BenchPki } from './certs.js';
import type { Route } from './protocol.js';

export interface StartCtx {
  tmp: string;
  pki: BenchPki;
  upstreamPort: number;
  /** churn host names h1..hN.bench.test that a name-addressed proxy must be able to map */
  hosts: number;
  /** greytap --workers */
  workers: number;
  /** directory for greytap's --cpu-prof output, or undefined */
  cpuProfDir?: string;
  repoRoot: string;
  benchDir: string; // compiled bench modules (dist/bench)
}

export interface Running {
  /** the proxy's process, for CPU and RSS; null for direct */
  pid: number | null;
  route: Route;
  /** greytap only: its Prometheus endpoint */
  metricsUrl?: string;
  alive(): boolean;
  tail(): string;
  stop(): Promise<void>;
}

export interface Contender {
  name: string;
  /** only with --full */
  fullOnly?: boolean;
  what: string;
  sees: string;
  start(ctx: StartCtx): Promise<Running>;
}

/** The contender cannot run here at all (not installed): reported as "unavailable". */
export class Unavailable extends Error {}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Fresh bench certificates in `tmp`, and the upstream (server.ts) in a process of its own, serving with them. */
export async function startUpstream(tmp: string, benchDir: string): Promise<{ pki: BenchPki; server: Child; upstreamPort: number }> {
  const pki = makeBenchPki(tmp);
  const cfg = join(tmp, 'server.json');
  writeFileSync(cfg, JSON.stringify(pki.server));
  const server = forkChild(join(benchDir, 'server.js'), [cfg]);
  return { pki, server, upstreamPort: (await waitReady(server, 15_000)).port };
}

/** Polls `probe` every 200 ms until it is true; fails early when the child has exited. */
async function until(c: Child, what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (c.exited()) throw new Error(`exited before ${what}: ${lastLines(c.tail(), 3) || '(no output)'}`);
    if (await probe().catch(() => false)) return;
    await sleep(200);
  }
  throw new Error(`no ${what} after ${timeoutMs / 1000} s: ${lastLines(c.tail(), 2)}`);
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.setTimeout(1000, () => { s.destroy(); resolve(false); });
  });
}

function running(c: Child | null, route: Route, stop: () => Promise<void>, metricsUrl?: string): Running {
  return {
    pid: c?.proc.pid ?? null,
    route,
    metricsUrl,
    alive: () => (c ? !c.exited() : true),
    tail: () => c?.tail() ?? '',
    stop,
  };
}

function hasCommand(cmd: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }); return true; } catch { return false; }
}

const direct: Contender = {
  name: 'direct',
  what: 'no proxy: client → upstream TLS (the ceiling)',
  sees: 'nothing; the client dials 127.0.0.1:PORT with SNI bench.test and trusts the bench CA',
  async start(ctx) {
    return running(null, { proxy: null, addressing: 'ip', upstreamPort: ctx.upstreamPort, caFile: ctx.pki.upstreamCaFile }, async () => {});
  },
};

const pipe: Contender = {
  name: 'tls-pipe',
  what: 'minimal Node TLS-terminating pipe in the bench: decrypt, write, encrypt; no parsing, no capture',
  sees: 'CONNECT 127.0.0.1:PORT; terminates TLS with one pre-made leaf (bench.test, *.bench.test); dials the CONNECT target with the client SNI',
  async start(ctx) {
    const cfg = join(ctx.tmp, 'pipe.json');
    writeFileSync(cfg, JSON.stringify({ key: ctx.pki.pipeLeaf.key, cert: ctx.pki.pipeLeaf.cert, upstreamCa: ctx.pki.upstreamCaPem }));
    const c = forkChild(join(ctx.benchDir, 'pipe.js'), [cfg]);
    const r = await waitReady(c, 15_000);
    return running(c, { proxy: { type: 'http', host: '127.0.0.1', port: r.port }, addressing: 'ip', upstreamPort: ctx.upstreamPort, caFile: ctx.pki.pipeCaFile }, () => stopChild(c));
  },
};

/** The first lines `greytap serve` prints: where it listens (ports chosen by the kernel) and its CA. */
const BANNER = /greytap serving: http-proxy (\S+) +socks5 (\S+) +api (\S+)\nCA certificate: (.+?) {2}\(/;

export interface GreytapOptions {
  /** its SOCKS5 listener on too; `viaSocks`: the route goes through it */
  socks: boolean;
  viaSocks?: boolean;
  /** its --data-dir, a directory of that name in ctx.tmp */
  dataDir: string;
  /** more `serve` options, after the bench's own (an option given twice takes the later value) */
  args?: string[];
}

export interface RunningGreytap extends Running {
  pid: number;
  metricsUrl: string;
  dataDir: string;
}

/**
 * `greytap serve` on ports the kernel picks (`127.0.0.1:0`), read back from its banner: no port
 * is chosen here and then lost to another process before greytap binds it. The banner is printed
 * once every listener is up, so the proxy is ready when it appears.
 */
export async function startGreytap(ctx: StartCtx, o: GreytapOptions): Promise<RunningGreytap> {
  const bin = join(ctx.repoRoot, 'bin', 'greytap.js');
  const cli = join(ctx.repoRoot, 'dist', 'src', 'cli.js');
  if (!existsSync(bin) || !existsSync(cli)) throw new Error(`${existsSync(bin) ? 'dist/src/cli.js' : 'bin/greytap.js'} missing (greytap not built yet)`);
  const dataDir = join(ctx.tmp, o.dataDir);
  const maps = [BENCH_DOMAIN, ...Array.from({ length: ctx.hosts }, (_, i) => `h${i + 1}.${BENCH_DOMAIN}`)]
    .flatMap((h) => ['--map', `${h}:${ctx.upstreamPort}=127.0.0.1:${ctx.upstreamPort}`]);
  const words = (v: string | undefined) => v?.split(' ').filter(Boolean) ?? [];
  const nodeArgs = [...(ctx.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', ctx.cpuProfDir] : []), ...words(process.env.BENCH_GREYTAP_NODE_ARGS)];
  const args = [...nodeArgs, bin, 'serve', '--data-dir', dataDir, '--http-proxy', '127.0.0.1:0', '--socks', o.socks ? '127.0.0.1:0' : 'off',
    '--api', '127.0.0.1:0', '--upstream-ca', ctx.pki.upstreamCaFile, '--workers', String(ctx.workers), ...maps, ...(o.args ?? []), ...words(process.env.BENCH_GREYTAP_ARGS)];
  const c = spawnChild(process.execPath, args, { cwd: ctx.repoRoot });
  const stop = () => stopChild(c, 'SIGINT', 15_000); // SIGINT: flush captured records (and write the CPU profile)
  try {
    let banner: RegExpExecArray | null = null;
    await until(c, 'banner', 30_000, async () => (banner = BANNER.exec(c.tail())) !== null);
    const [, http, socks, api, caFile] = banner!;
    const port = (addr: string) => Number(addr.slice(addr.lastIndexOf(':') + 1));
    if (o.viaSocks && socks === 'off') throw new Error('SOCKS5 listener off');
    const proxy = o.viaSocks ? { type: 'socks5' as const, host: '127.0.0.1', port: port(socks) } : { type: 'http' as const, host: '127.0.0.1', port: port(http) };
    const r = running(c, { proxy, addressing: 'name', upstreamPort: ctx.upstreamPort, caFile }, stop, `${api.replace(/\/$/, '')}/metrics`);
    return { ...r, pid: c.proc.pid!, metricsUrl: r.metricsUrl!, dataDir };
  } catch (e) {
    await stop();
    throw e;
  }
}

function greytap(socks: boolean): Contender {
  return {
    name: socks ? 'greytap-socks5' : 'greytap',
    fullOnly: socks,
    what: `greytap serve (capture on, --workers N) via its ${socks ? 'SOCKS5' : 'HTTP CONNECT'} listener`,
    sees: `${socks ? 'SOCKS5 CONNECT (domain name)' : 'CONNECT'} bench.test:PORT / hN.bench.test:PORT, with --map for each name to 127.0.0.1:PORT and --upstream-ca bench CA; mints its own leaf per SNI`,
    start: (ctx) => startGreytap(ctx, { socks: true, viaSocks: socks, dataDir: socks ? 'greytap-socks-data' : 'greytap-data' }),
  };
}

function mitmdump(mode: 'regular' | 'socks5'): Contender {
  return {
    name: mode === 'regular' ? 'mitmdump' : 'mitmdump-socks5',
    fullOnly: mode === 'socks5',
    what: `mitmproxy's mitmdump --mode ${mode} (Debian package, defaults)`,
    sees: `${mode === 'regular' ? 'CONNECT' : 'SOCKS5 CONNECT (IPv4)'} 127.0.0.1:PORT (it cannot map names); SNI bench.test / hN.bench.test, which it uses for its leaf and for upstream SNI/verification against --set ssl_verify_upstream_trusted_ca`,
    async start(ctx) {
      if (!hasCommand('mitmdump')) throw new Unavailable('mitmdump not installed (bench/install-peers.sh installs Debian mitmproxy)');
      const port = await freePort();
      const confdir = join(ctx.tmp, `mitmproxy-${mode}`);
      mkdirSync(confdir, { recursive: true });
      const c = spawnChild('mitmdump', ['--mode', mode, '--listen-host', '127.0.0.1', '--listen-port', String(port),
        '--set', `confdir=${confdir}`, '--set', `ssl_verify_upstream_trusted_ca=${ctx.pki.upstreamCaFile}`, '-q']);
      const caFile = join(confdir, 'mitmproxy-ca-cert.pem');
      try {
        await until(c, 'listening port', 30_000, async () => existsSync(caFile) && (await tcpOpen(port)));
      } catch (e) {
        await stopChild(c);
        throw e;
      }
      const proxy = { type: mode === 'regular' ? 'http' as const : 'socks5' as const, host: '127.0.0.1', port };
      return running(c, { proxy, addressing: 'ip', upstreamPort: ctx.upstreamPort, caFile }, () => stopChild(c));
    },
  };
}

const httpMitmProxy: Contender = {
  name: 'http-mitm-proxy',
  what: 'http-mitm-proxy 1.1 (npm), keepAlive on, no handlers but a host-mapping hook',
  sees: 'CONNECT bench.test:PORT / hN.bench.test:PORT (its leaf is per CONNECT host); a hook dials 127.0.0.1 keeping the name as SNI; bench CA via NODE_EXTRA_CA_CERTS',
  async start(ctx) {
    const sslCaDir = join(ctx.tmp, 'http-mitm-proxy');
    const cfg = join(ctx.tmp, 'hmp.json');
    writeFileSync(cfg, JSON.stringify({ sslCaDir }));
    const c = forkChild(join(ctx.benchDir, 'hmp.js'), [cfg], { ...process.env, NODE_EXTRA_CA_CERTS: ctx.pki.upstreamCaFile });
    let r;
    try { r = await waitReady(c, 60_000); } catch (e) { await stopChild(c); throw new Error(`${(e as Error).message}: ${lastLines(c.tail(), 2)}`); }
    return running(c, { proxy: { type: 'http', host: '127.0.0.1', port: r.port }, addressing: 'name', upstreamPort: ctx.upstreamPort, caFile: r.caFile! }, () => stopChild(c));
  },
};

export const CONTENDERS: Contender[] = [direct, pipe, greytap(false), greytap(true), mitmdump('regular'), mitmdump('socks5'), httpMitmProxy];
