// Dialing the origin. --map changes only where we dial; TLS SNI and certificate verification keep
// the requested host name, which is how tests point real clients at local servers.
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { Config, HostPort } from '../config.js';

export function ignore(): void {}

export function mapTarget(cfg: Config, host: string, port: number): HostPort | undefined {
  return cfg.map.get(`${host.toLowerCase()}:${port}`);
}

/** Error code of a dial refused because it reached one of greytap's own proxy listeners. */
export const PROXY_LOOP = 'PROXY_LOOP';

/**
 * Resolves with a connected TCP socket, rejects with the dial error (ECONNREFUSED, ENOTFOUND…).
 * A connection that reached one of greytap's own proxy listeners (`listening`; by any name, IP or
 * --map) is closed and rejected with code PROXY_LOOP: forwarding a request to ourselves would send
 * it round again, each hop one more pair of sockets, until the process runs out of descriptors.
 */
export function dial(cfg: Config, host: string, port: number, listening: readonly HostPort[] = [], timeoutMs = 10_000): Promise<net.Socket> {
  const to = mapTarget(cfg, host, port) ?? { host, port };
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => s.destroy(Object.assign(new Error(`connect to ${to.host}:${to.port} timed out`), { code: 'ETIMEDOUT' })), timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', ignore); // until the pipe attaches its own: an unhandled socket error would kill the process
      if (isOwnListener(s.remoteAddress, s.remotePort, listening)) {
        s.destroy();
        const via = to.host === host && to.port === port ? '' : ` (mapped to ${to.host}:${to.port})`;
        return reject(Object.assign(new Error(`${host}:${port}${via} is greytap's own proxy listener: refusing a proxy loop`), { code: PROXY_LOOP }));
      }
      resolve(s);
    });
    s.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/**
 * What a failed dial says about whom: out of file descriptors (EMFILE, ENFILE) greytap could not
 * open a socket at all, which an operator must not read as a dead upstream.
 */
export function dialErrorCode(e: NodeJS.ErrnoException): 'fd_limit' | 'upstream_unreachable' {
  return e.code === 'EMFILE' || e.code === 'ENFILE' ? 'fd_limit' : 'upstream_unreachable';
}

/** The short text of a dial error for an answer to the client: the errno code, or the whole message of a refused loop. */
export function dialErrorText(e: NodeJS.ErrnoException): string {
  return e.code === PROXY_LOOP ? e.message : e.code ?? e.message;
}

const plainV4 = (a: string) => a.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');

/**
 * Whether `address:port` (the far end of a connected socket) is one of the listeners. A listener
 * on a wildcard address (0.0.0.0, ::) accepts on every local address: loopback and interfaces.
 */
export function isOwnListener(address: string | undefined, port: number | undefined, listening: readonly HostPort[]): boolean {
  if (address === undefined || port === undefined) return false;
  const a = plainV4(address);
  for (const l of listening) {
    if (l.port !== port) continue;
    const h = plainV4(l.host);
    if (h === a) return true;
    if ((h === '0.0.0.0' || h === '::') && isLocalAddress(a)) return true;
  }
  return false;
}

function isLocalAddress(a: string): boolean {
  if (a === '::1' || /^127\./.test(a)) return true;
  return Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.address === a));
}

/**
 * The trust store for origins (upstreamCaList), built once: passing `ca` to every tls.connect would
 * rebuild an OpenSSL context from hundreds of PEM roots per connection (~22 ms for Node's ~140
 * alone, measured in bench (f)).
 */
export function upstreamTrust(ca: string[]): tls.SecureContext {
  return tls.createSecureContext({ ca });
}

/**
 * Upgrades a connected socket to TLS towards the origin: SNI = the requested name (omitted for IP
 * literals, which TLS forbids as SNI), verified against `trust` (upstreamTrust) for that name.
 * Only http/1.1 is offered so the origin never picks h2 (the tap parses HTTP/1.1).
 */
export function upstreamTls(socket: net.Socket, name: string, trust: tls.SecureContext, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({
      socket,
      host: name,
      servername: net.isIP(name) ? undefined : name,
      secureContext: trust,
      ALPNProtocols: ['http/1.1'],
    });
    handshakeWithin(t, 'secureConnect', timeoutMs);
    // The socket under it destroyed (the client went away) ends it with 'close' alone, no 'error'.
    t.once('close', () => reject(new Error('connection closed during the TLS handshake')));
    t.once('secureConnect', () => { t.removeAllListeners('error'); t.on('error', ignore); resolve(t); });
    t.once('error', reject);
  });
}

/**
 * Fails a TLS socket whose handshake has not finished `ms` after it started: a peer that stalls
 * mid-handshake must not hold its socket, and the other side's, for ever.
 */
export function handshakeWithin(t: tls.TLSSocket, done: 'secure' | 'secureConnect', ms: number): void {
  const timer = setTimeout(() => t.destroy(new Error(`TLS handshake not finished within ${ms / 1000} s`)), ms);
  timer.unref();
  const stop = () => clearTimeout(timer);
  t.once(done, stop);
  t.once('close', stop);
}
