// The SOCKS5 listener (RFC 1928; username/password per RFC 1929 when --socks-auth is set). The
// username becomes the connection's client identity (the agent's name).
import net from 'node:net';
import { ProxyConnection } from './connection.js';
import { openTunnel } from './tunnel.js';
import { Socks5Handshake, socks5Reply, replyForDialError, REP } from './socks5.js';
import type { ProxyContext } from './context.js';
import { ignore } from './upstream.js';

export function createSocksProxy(ctx: ProxyContext): net.Server {
  return net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    client.on('error', ignore); // the pipe reports errors once it runs
    const conn = new ProxyConnection('socks', client, ctx.pool);
    const hs = new Socks5Handshake({ users: ctx.cfg.socksAuth });
    const cancel = conn.deadline(ctx.cfg.handshakeTimeoutMs, () => client.destroy());
    let seen = 0;
    // A FIN before the request is complete (a port probe, a client giving up): the listener allows
    // half-open sockets, so without this the socket would wait for the handshake deadline.
    const onEnd = () => {
      cancel();
      client.off('data', onData);
      client.destroy();
      if (seen === 0) conn.finish('client_close');
      else conn.finish('socks_error:connection closed mid-handshake', 'bad_socks');
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      const step = hs.push(chunk);
      if (step.write) client.write(step.write);
      if (step.type === 'need-more') return;
      cancel();
      client.off('data', onData);
      client.off('end', onEnd);
      if (step.type === 'error') {
        client.end();
        conn.finish(`socks_error:${step.detail}`, 'bad_socks');
        return;
      }
      client.pause();
      const { request, rest } = step;
      if (request.user) conn.record.clientUser = request.user;
      if (rest.length) client.unshift(rest);
      // DNS names are case-insensitive: lowercased as the HTTP proxy's targets are, so records,
      // --map, --no-intercept and the API's host filter see one spelling.
      void openTunnel(ctx, conn, client, request.host.toLowerCase(), request.port, {
        ok: () => client.write(socks5Reply(REP.SUCCEEDED, { host: client.localAddress ?? '0.0.0.0', port: client.localPort ?? 0 })),
        fail: (e) => client.end(socks5Reply(replyForDialError(e))),
      });
    };
    client.on('data', onData);
    client.once('end', onEnd);
    client.once('close', () => { if (!conn.record.host) { cancel(); conn.finish('client_close'); } });
  });
}
