// Starts a real greytap (in this process, real listeners on 127.0.0.1:0, real worker pool and LMDB
// in a temp dir) and gives tests small clients: CONNECT and SOCKS5 tunnels, curl, the API.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { loadConfig } from '../../src/config.js';
import { serve, type Running } from '../../src/serve.js';

export function tmpDir(prefix = 'greytap-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface Greytap {
  running: Running;
  dataDir: string;
  httpProxy: string; // "127.0.0.1:port"
  socks: string;
  api: string; // "http://127.0.0.1:port"
  caPath: string;
  /** Waits until every capture submitted so far is committed. */
  drain(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** stop() leaves the data dir in place (the caller removes it), e.g. to reopen the store afterwards */
  keepData?: boolean;
}

export async function startGreytap(args: string[] = [], opts: StartOptions = {}): Promise<Greytap> {
  const dataDir = tmpDir();
  const cfg = loadConfig(['--data-dir', dataDir, '--http-proxy', '127.0.0.1:0', '--socks', '127.0.0.1:0', '--api', '127.0.0.1:0', '--workers', '1', ...args], {});
  let running: Running;
  try { running = await serve(cfg); } catch (e) { rmSync(dataDir, { recursive: true, force: true }); throw e; }
  const a = running.addresses;
  let stopped = false;
  return {
    running,
    dataDir,
    httpProxy: `127.0.0.1:${a.httpProxy?.port}`,
    socks: `127.0.0.1:${a.socks?.port}`,
    api: `http://127.0.0.1:${a.api?.port}`,
    caPath: running.caPath,
    drain: () => running.ctx.pool.drain(),
    async stop() {
      if (stopped) return;
      stopped = true;
      await running.stop();
      if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function apiGet<T = any>(g: Greytap, path: string): Promise<T> {
  const r = await fetch(g.api + path);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

/** Polls fn until it returns a truthy value (capture is asynchronous by design). */
type Truthy<T> = T extends false | 0 | '' | null | undefined ? never : T;

export async function waitFor<T>(fn: () => Promise<T> | T, what: string, timeoutMs = 15_000): Promise<Truthy<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as Truthy<T>;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP connection through the HTTP proxy's CONNECT, ready for the tunnelled protocol. */
export function connectTunnel(proxy: string, target: string): Promise<net.Socket> {
  const [host, port] = proxy.split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), host, () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    let head = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      head = Buffer.concat([head, c]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      const status = head.toString('latin1', 0, end).split(' ')[1];
      if (status !== '200') { s.destroy(); return reject(new Error(`CONNECT ${target}: ${head.toString('latin1')}`)); }
      if (head.length > end + 4) s.unshift(head.subarray(end + 4));
      resolve(s);
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

export interface CurlResult { code: number; stdout: string; stderr: string }

export function curl(args: string[], timeoutMs = 60_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(timeoutMs / 1000), ...args], { maxBuffer: 256 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A TCP connection through the SOCKS5 listener (no auth unless user/pass given; domain address). */
export function connectSocks(socks: string, host: string, port: number, auth?: { user: string; pass: string }): Promise<net.Socket> {
  const [h, p] = socks.split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(p), h);
    s.once('error', reject);
    let buf = Buffer.alloc(0);
    let state: 'method' | 'auth' | 'reply' = 'method';
    const request = () => {
      const name = Buffer.from(host);
      s.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 255])]));
      state = 'reply';
    };
    s.on('connect', () => s.write(Buffer.from(auth ? [5, 1, 2] : [5, 1, 0])));
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (state === 'method' && buf.length >= 2) {
        const method = buf[1];
        buf = buf.subarray(2);
        if (method === 0xff) return reject(new Error('SOCKS5: no acceptable method'));
        if (method === 2 && auth) {
          const u = Buffer.from(auth.user), pw = Buffer.from(auth.pass);
          s.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([pw.length]), pw]));
          state = 'auth';
        } else request();
      }
      if (state === 'auth' && buf.length >= 2) {
        if (buf[1] !== 0) return reject(new Error('SOCKS5: authentication failed'));
        buf = buf.subarray(2);
        request();
      }
      if (state === 'reply' && buf.length >= 10) {
        s.off('data', onData);
        if (buf[1] !== 0) { s.destroy(); return reject(Object.assign(new Error(`SOCKS5 reply ${buf[1]}`), { rep: buf[1] })); }
        if (buf.length > 10) s.unshift(buf.subarray(10));
        resolve(s);
      }
    };
    s.on('data', onData);
  });
}
