// A tunnel (HTTP CONNECT or SOCKS5 CONNECT) after the target is known: dial the origin, tell the
// client, then look at the client's first bytes without consuming them:
//   TLS ClientHello → terminate TLS with our leaf for the SNI and re-encrypt towards the origin
//                     (unless --no-intercept matches, or the client's ALPN offer leaves out
//                     http/1.1, the only protocol the tap speaks: then tunnel raw)
//   plaintext HTTP  → tap it as HTTP
//   anything else   → raw tunnel (bytes forwarded, counted, not decoded)
import net from 'node:net';
import tls from 'node:tls';
import { beginsClientHello, classifyFirstBytes, MAX_PEEK } from './client-hello.js';
import { dial, dialErrorCode, handshakeWithin, ignore, mapTarget, upstreamTls } from './upstream.js';
import { pipeConnection, NO_TAP } from './pipe.js';
import { HttpTap } from './http-tap.js';
import type { ProxyConnection } from './connection.js';
import type { ProxyContext } from './context.js';
import { globMatch } from '../config.js';
import { tlsHandshakes } from '../metrics.js';

/** A client that says nothing for this long after the tunnel opens gets a raw tunnel (server-speaks-first protocols). */
const PEEK_TIMEOUT_MS = 3000;

export interface TunnelReplies {
  ok(): void;
  fail(err: NodeJS.ErrnoException): void;
}

export async function openTunnel(ctx: ProxyContext, conn: ProxyConnection, client: net.Socket, host: string, port: number, replies: TunnelReplies): Promise<void> {
  const mapped = mapTarget(ctx.cfg, host, port);
  conn.opened(host, port, mapped ? `${mapped.host}:${mapped.port}` : undefined);
  let upstream: net.Socket;
  try {
    upstream = await dial(ctx.cfg, host, port, ctx.listening);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    replies.fail(err);
    conn.record.closeReason = `dial_failed:${err.code ?? err.message}`;
    conn.finish(conn.record.closeReason, dialErrorCode(err));
    client.destroy();
    return;
  }
  if (client.destroyed) { upstream.destroy(); conn.finish('client_gone'); return; }
  replies.ok();
  const { first, held, timedOut } = await peek(client, upstream);
  if (!first) return raw(conn, client, upstream, held);
  const head = Buffer.concat(first);
  const kind = classifyFirstBytes(head);
  if (kind.kind === 'http') {
    conn.record.mode = 'tap';
    // Handed over, not unshifted: a client that sent its FIN behind them has ended, and a stream
    // refuses an unshift after its end (the request was lost).
    return pipeConnection(conn, client, upstream, new HttpTap({ conn, tls: false, host, port, pool: ctx.pool, maxBody: ctx.cfg.maxBody }), { clientHead: first });
  }
  // A ClientHello begun and not finished when the peek timed out is a slow or stalled client's,
  // not a protocol whose server speaks first: intercepted, its handshake finishes or fails within
  // --handshake-timeout like any other (a raw tunnel would have held it for ever). (Ended by the
  // client's FIN or the server speaking, or not plainly a ClientHello: raw, as anything else.)
  const helloBegun = timedOut && kind.kind === 'need-more' && beginsClientHello(head);
  if (kind.kind === 'tls' || helloBegun) {
    const sni = kind.kind === 'tls' ? kind.sni : undefined;
    conn.record.sni = sni;
    const name = sni ?? host;
    // A client that offers ALPN without http/1.1 (h2 only: gRPC, Node's http2) could only be told
    // no_application_protocol by our HTTP/1.1 leaf: it is tunnelled raw, as if --no-intercept matched.
    const alpn = kind.kind === 'tls' ? kind.alpn : undefined;
    const http1 = alpn === undefined || alpn.includes('http/1.1');
    if (http1 && !ctx.cfg.noIntercept.some((g) => globMatch(g, host) || (sni !== undefined && globMatch(g, sni)))) {
      unshiftAll(client, first);
      return intercept(ctx, conn, client, upstream, host, port, name);
    }
  }
  raw(conn, client, upstream, first);
}

function raw(conn: ProxyConnection, client: net.Socket, upstream: net.Socket, first: Buffer[]): void {
  conn.record.mode = 'raw';
  pipeConnection(conn, client, upstream, NO_TAP, { clientHead: first });
}

function unshiftAll(s: net.Socket, chunks: Buffer[]): void {
  for (let i = chunks.length - 1; i >= 0; i--) s.unshift(chunks[i]);
}

/**
 * Reads the client's first bytes until they can be classified. Resolves with them (not yet
 * forwarded), or null when the server spoke first / the client stayed silent (then: raw tunnel,
 * forwarding first what was `held`); `timedOut`: it ended by PEEK_TIMEOUT_MS.
 */
function peek(client: net.Socket, upstream: net.Socket): Promise<{ first: Buffer[] | null; held: Buffer[]; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    const done = (v: Buffer[] | null) => {
      client.off('data', onData);
      upstream.off('readable', onServerFirst);
      client.off('end', onEnd);
      clearTimeout(timer);
      client.pause();
      resolve({ first: v, held: chunks, timedOut });
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      if (size >= MAX_PEEK || classifyFirstBytes(Buffer.concat(chunks)).kind !== 'need-more') done(chunks);
    };
    const onServerFirst = () => done(null);
    const onEnd = () => done(chunks.length ? chunks : null);
    const timer = setTimeout(() => { timedOut = true; done(chunks.length ? chunks : null); }, PEEK_TIMEOUT_MS);
    client.on('data', onData);
    client.once('end', onEnd);
    upstream.once('readable', onServerFirst);
    // The listener paused the client while it read the CONNECT / SOCKS request, and a 'data'
    // listener does not undo an explicit pause(): without this the peek only ever times out.
    client.resume();
  });
}

async function intercept(ctx: ProxyContext, conn: ProxyConnection, client: net.Socket, upstream: net.Socket, host: string, port: number, name: string): Promise<void> {
  conn.record.intercepted = true;
  conn.record.mode = 'intercept';
  let secureContext: tls.SecureContext;
  try {
    secureContext = ctx.ca.secureContextFor(name);
  } catch (e) {
    // a server name no certificate can carry: refuse this connection only
    conn.record.closeReason = `client_tls:${(e as Error).message}`;
    conn.finish(conn.record.closeReason, 'client_tls');
    client.destroy();
    upstream.destroy();
    return;
  }
  const clientTls = new tls.TLSSocket(client, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'] });
  clientTls.on('error', ignore); // handshake errors are awaited below; later ones reach the pipe
  const clientReady = new Promise<void>((resolve, reject) => {
    clientTls.once('secure', resolve);
    clientTls.once('error', reject);
    clientTls.once('close', () => reject(new Error('client closed during the TLS handshake'))); // (after 'secure': a no-op)
  });
  handshakeWithin(clientTls, 'secure', ctx.cfg.handshakeTimeoutMs);
  // Both handshakes run at once: the origin's cost hides behind the client's.
  let upstreamSettled = false;
  const upstreamReady = upstreamTls(upstream, name, ctx.upstreamTrust, ctx.cfg.handshakeTimeoutMs);
  upstreamReady.then(() => { upstreamSettled = true; }, () => { upstreamSettled = true; });
  // A client gone mid-handshake (a reset, a FIN: it can send no more of it, or closed by stop())
  // ends both handshakes at once instead of at the timeout.
  // (On the TLS socket too: the raw socket under it may report nothing of a FIN.)
  let upstreamAbandoned = false;
  const abandon = () => {
    upstreamAbandoned ||= !upstreamSettled;
    clientTls.destroy();
    upstream.destroy();
  };
  const gone = [[client, 'close'], [client, 'end'], [clientTls, 'close'], [clientTls, 'end']] as const;
  for (const [s, e] of gone) s.once(e, abandon);
  const [c, u] = await Promise.allSettled([clientReady, upstreamReady]);
  for (const [s, e] of gone) s.off(e, abandon);
  tlsHandshakes.inc({ side: 'client', result: c.status === 'fulfilled' ? 'ok' : 'error' });
  // An origin's handshake cut short because the client left says nothing of the origin: counted
  // as an upstream error, every agent that distrusts greytap's CA showed as an upstream failure too.
  if (!upstreamAbandoned) tlsHandshakes.inc({ side: 'upstream', result: u.status === 'fulfilled' ? 'ok' : 'error' });
  if (c.status === 'rejected') {
    conn.record.closeReason = `client_tls:${(c.reason as Error).message}`;
    conn.finish(conn.record.closeReason, 'client_tls');
    clientTls.destroy();
    upstream.destroy();
    return;
  }
  conn.record.alpn = clientTls.alpnProtocol || undefined;
  if (upstreamAbandoned) {
    conn.finish('client_gone');
    clientTls.destroy();
    return;
  }
  if (u.status === 'rejected') {
    // The agent gets a readable answer instead of a hang or a bare reset.
    const why = (u.reason as Error).message;
    conn.record.closeReason = `upstream_tls:${why}`;
    conn.finish(conn.record.closeReason, 'upstream_tls');
    const body = `greytap: TLS to ${host}:${port} failed: ${why}\n`;
    clientTls.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    upstream.destroy();
    return;
  }
  pipeConnection(conn, clientTls, u.value, new HttpTap({ conn, tls: true, host, port, pool: ctx.pool, maxBody: ctx.cfg.maxBody }));
}
