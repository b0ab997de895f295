// The HTTP proxy listener: `CONNECT host:port` opens a tunnel; an absolute-URI request
// (`GET http://host/path`) is forwarded as is (RFC 9112 §3.2.2: origins accept absolute-form) to
// that origin and tapped. The connection is bound to the origin of its first request.
import net from 'node:net';
import { ProxyConnection } from './connection.js';
import { openTunnel } from './tunnel.js';
import { dial, dialErrorCode, dialErrorText, ignore, mapTarget } from './upstream.js';
import { pipeConnection } from './pipe.js';
import { HttpTap } from './http-tap.js';
import type { ProxyContext } from './context.js';
import { absoluteHttpOrigin, parseAuthority } from './authority.js';

/** As the tap's parser (http1.ts) allows for every later request on the connection. */
const MAX_PROXY_HEAD = 64 * 1024;
const REQUEST_LINE = /^(?:\r\n)*([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/1\.[01]\r\n/;

export function createHttpProxy(ctx: ProxyContext): net.Server {
  return net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    client.on('error', ignore); // the pipe reports errors once it runs; before that, the close says enough
    const conn = new ProxyConnection('http', client, ctx.pool);
    const cancel = conn.deadline(ctx.cfg.handshakeTimeoutMs, () => answer(client, 408, 'greytap: no complete request head in time', true));
    readProxyHead(client)
      .finally(cancel)
      .then((head) => handle(ctx, conn, client, head))
      .catch((e: Error) => {
        // A connect-and-close (a health check, a port probe) is no bad request.
        if (e instanceof ClosedEarly && e.bytes === 0) {
          client.destroy();
          return conn.finish('client_close');
        }
        if (!client.destroyed) answer(client, e instanceof ProxyHeadError ? e.status : 400, `greytap: ${e.message}`);
        conn.finish('bad_request', 'bad_http');
      });
  });
}

interface ProxyHead { method: string; target: string; chunks: Buffer[]; headEnd: number }

/** A request head greytap refuses with this status (others get 400). */
class ProxyHeadError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

class ClosedEarly extends Error {
  constructor(readonly bytes: number) { super('connection closed before a request head'); }
}

/** Reads until the end of the first request head; the chunks are kept to be forwarded as they were read. */
function readProxyHead(client: net.Socket): Promise<ProxyHead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // 'close' too: a socket destroyed by stop() or the handshake deadline emits neither 'end' nor 'error'
    const cleanup = () => { client.off('data', onData); client.off('end', onEnd); client.off('error', onEnd); client.off('close', onEnd); };
    const onEnd = () => { cleanup(); reject(new ClosedEarly(size)); };
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      const all = chunks.length === 1 ? c : Buffer.concat(chunks);
      let lead = 0; // blank lines before the request line (RFC 9112 §2.2: ignored)
      while (all[lead] === 0x0d && all[lead + 1] === 0x0a) lead += 2;
      const end = all.indexOf('\r\n\r\n', lead);
      // (the whole head: one that ends in a later read may not pass the bound either — the tap,
      // which allows as much, would fail it after the origin had it)
      if ((end < 0 ? size : end + 4) > MAX_PROXY_HEAD) {
        cleanup();
        return reject(new ProxyHeadError(431, 'request head too large'));
      }
      if (end < 0) return;
      cleanup();
      client.pause();
      // RFC 9112 §2.2: blank lines before the request line are ignored; §9.1: a method is any token.
      const line = REQUEST_LINE.exec(all.toString('latin1', 0, end + 2));
      if (!line) return reject(new Error('malformed request line'));
      resolve({ method: line[1], target: line[2], chunks, headEnd: end + 4 });
    };
    client.on('data', onData);
    client.once('end', onEnd);
    client.once('error', onEnd);
    client.once('close', onEnd);
  });
}

/**
 * RFC 9110 §15.6.5: an origin that did not answer in time is a 504; greytap out of descriptors is
 * itself unavailable, a 503 (§15.6.4); any other failure to reach the origin a 502.
 */
const dialStatus = (e: NodeJS.ErrnoException) => (e.code === 'ETIMEDOUT' ? 504 : dialErrorCode(e) === 'fd_limit' ? 503 : 502);

/** A final answer from greytap itself; `drop`: then close at once (the client may not be reading). */
function answer(client: net.Socket, status: number, text: string, drop = false): void {
  const reason = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' }[status] ?? 'Error';
  const body = text + '\n';
  client.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  if (drop) client.destroySoon();
}

async function handle(ctx: ProxyContext, conn: ProxyConnection, client: net.Socket, head: ProxyHead): Promise<void> {
  if (head.method === 'CONNECT') {
    const t = parseAuthority(head.target, 443);
    if (!t) throw new Error(`bad CONNECT target "${head.target}"`);
    const all = Buffer.concat(head.chunks);
    // Bytes after the CONNECT head already belong to the tunnel (an eager client's ClientHello).
    if (all.length > head.headEnd) client.unshift(all.subarray(head.headEnd));
    return openTunnel(ctx, conn, client, t.host, t.port, {
      ok: () => client.write('HTTP/1.1 200 Connection Established\r\n\r\n'),
      fail: (e) => answer(client, dialStatus(e), `greytap: cannot reach ${t.host}:${t.port}: ${dialErrorText(e)}`),
    });
  }
  const t = absoluteHttpOrigin(head.target);
  if (t === undefined) throw new Error(`greytap is a proxy: send CONNECT or an absolute http:// URI (got "${head.method} ${head.target}")`);
  if (!t) throw new Error(`bad URI authority in "${head.target}"`);
  const mapped = mapTarget(ctx.cfg, t.host, t.port);
  conn.opened(t.host, t.port, mapped ? `${mapped.host}:${mapped.port}` : undefined);
  conn.record.mode = 'tap';
  let upstream: net.Socket;
  try {
    upstream = await dial(ctx.cfg, t.host, t.port, ctx.listening);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    answer(client, dialStatus(err), `greytap: cannot reach ${t.host}:${t.port}: ${dialErrorText(err)}`);
    conn.finish(`dial_failed:${err.code ?? err.message}`, dialErrorCode(err));
    return;
  }
  const tap = new HttpTap({
    conn, tls: false, host: t.host, port: t.port, pool: ctx.pool, maxBody: ctx.cfg.maxBody,
    boundOrigin: `${t.host}:${t.port}`,
    // greytap ended it over what was asked on it: counted in connection_errors_total{error="bad_http"}
    closeBound: (reason) => { conn.record.closeReason ??= reason; conn.record.error ??= 'bad_http'; client.destroy(); upstream.destroy(); },
  });
  pipeConnection(conn, client, upstream, tap, { clientHead: head.chunks });
}
