// The load client's way in: a TCP connection straight to the upstream or through the contender
// (HTTP CONNECT, RFC 9110 §9.3.6; SOCKS5 CONNECT, RFC 1928), then TLS with the bench host name as
// SNI, verified against the CA of whoever terminates it. Every step is bounded by a timeout.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { BENCH_DOMAIN } from './certs.js';
import type { Route } from './protocol.js';

const STEP_TIMEOUT_MS = 15_000;
const caCache = new Map<string, Buffer>();

/** bench.test for the shared host, hN.bench.test for connection churn. */
export function hostName(hostIdx: number | null): string {
  return hostIdx === null ? BENCH_DOMAIN : `h${hostIdx}.${BENCH_DOMAIN}`;
}

/** host:port the client names in CONNECT / SOCKS and in the Host header. */
export function target(route: Route, hostIdx: number | null): { host: string; port: number } {
  return { host: route.addressing === 'name' ? hostName(hostIdx) : '127.0.0.1', port: route.upstreamPort };
}

export function tcp(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const t = setTimeout(() => s.destroy(new Error('connect timeout')), STEP_TIMEOUT_MS);
    s.once('connect', () => { clearTimeout(t); s.removeListener('error', reject); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** Reads from s until `done(buf)` returns the number of bytes that belong to the reply; the rest is unshifted. */
function readReply(s: net.Socket, done: (buf: Buffer) => number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => fail(new Error(`${what}: no reply`)), STEP_TIMEOUT_MS);
    const cleanup = () => { clearTimeout(t); s.removeListener('data', onData); s.removeListener('error', fail); s.removeListener('end', onEnd); };
    const fail = (e: Error) => { cleanup(); s.destroy(); reject(e); };
    const onEnd = () => fail(new Error(`${what}: closed by proxy`));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      let n: number;
      try { n = done(buf); } catch (e) { fail(e as Error); return; }
      if (n < 0) { if (buf.length > 65536) fail(new Error(`${what}: reply too long`)); return; }
      cleanup();
      s.pause();
      if (n < buf.length) s.unshift(buf.subarray(n));
      resolve(buf.subarray(0, n));
    };
    s.on('data', onData);
    s.once('error', fail);
    s.once('end', onEnd);
    s.resume(); // a previous reply paused it; a new 'data' listener alone does not resume
  });
}

export async function httpConnect(s: net.Socket, host: string, port: number): Promise<void> {
  s.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  const head = await readReply(s, (b) => { const i = b.indexOf('\r\n\r\n'); return i < 0 ? -1 : i + 4; }, 'CONNECT');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.toString('latin1'));
  if (!status || status[1] !== '200') throw new Error(`CONNECT refused: ${head.toString('latin1').split('\r\n')[0]}`);
}

async function socks5Connect(s: net.Socket, host: string, port: number): Promise<void> {
  s.write(Buffer.from([5, 1, 0])); // version 5, one method: no authentication (RFC 1928 §3)
  const m = await readReply(s, (b) => (b.length >= 2 ? 2 : -1), 'SOCKS5 greeting');
  if (m[0] !== 5 || m[1] !== 0) throw new Error(`SOCKS5: method refused (${m[1]})`);
  const v4 = net.isIPv4(host) ? Buffer.from(host.split('.').map(Number)) : null;
  const addr = v4 ? Buffer.concat([Buffer.from([1]), v4]) : Buffer.concat([Buffer.from([3, Buffer.byteLength(host)]), Buffer.from(host)]);
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  s.write(Buffer.concat([Buffer.from([5, 1, 0]), addr, p]));
  // Reply length depends on the bound address type (RFC 1928 §6).
  const r = await readReply(s, (b) => {
    if (b.length < 5) return -1;
    const len = b[3] === 1 ? 10 : b[3] === 4 ? 22 : b[3] === 3 ? 7 + b[4] : NaN;
    if (Number.isNaN(len)) throw new Error('SOCKS5: bad reply address type');
    return b.length >= len ? len : -1;
  }, 'SOCKS5 connect');
  if (r[1] !== 0) throw new Error(`SOCKS5: connect failed (reply ${r[1]})`);
}

/** A TLS connection to the upstream's bench host (hostIdx null = bench.test) through the route. */
export async function dialTls(route: Route, hostIdx: number | null): Promise<tls.TLSSocket> {
  const t = target(route, hostIdx);
  const s = route.proxy ? await tcp(route.proxy.host, route.proxy.port) : await tcp('127.0.0.1', route.upstreamPort);
  try {
    if (route.proxy?.type === 'http') await httpConnect(s, t.host, t.port);
    else if (route.proxy?.type === 'socks5') await socks5Connect(s, t.host, t.port);
  } catch (e) { s.destroy(); throw e; }
  let ca = caCache.get(route.caFile);
  if (!ca) caCache.set(route.caFile, (ca = readFileSync(route.caFile)));
  return new Promise((resolve, reject) => {
    const ts = tls.connect({ socket: s, servername: hostName(hostIdx), ca, ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => ts.destroy(new Error('TLS handshake timeout')), STEP_TIMEOUT_MS);
    ts.once('secureConnect', () => { clearTimeout(timer); ts.removeListener('error', onErr); resolve(ts); });
    const onErr = (e: Error) => { clearTimeout(timer); s.destroy(); reject(e); };
    ts.once('error', onErr);
  });
}
