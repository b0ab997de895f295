// One client connection's life: its Connection record (written when it opens and again when it
// closes) and its share of the connection metrics.
import type net from 'node:net';
import type { ConnectionRecord, ErrorCode, Listener } from '../records.js';
import { nextId } from '../store/ids.js';
import { hostPort } from './authority.js';
import { connectionErrors, connectionsActive, connectionsTotal } from '../metrics.js';
import type { CapturePool } from '../workers/pool.js';

export class ProxyConnection {
  readonly record: ConnectionRecord;
  private finished = false;
  private counted = false;

  constructor(readonly listener: Listener, client: net.Socket, private readonly pool: CapturePool) {
    const now = Date.now();
    this.record = {
      id: nextId(),
      ts: now,
      listener,
      clientAddr: hostPort(client.remoteAddress, client.remotePort),
      host: '',
      port: 0,
      intercepted: false,
      mode: 'raw',
      bytesUp: 0,
      bytesDown: 0,
      startTs: now,
    };
    connectionsActive.inc({ listener });
  }

  get id(): string { return this.record.id; }

  /**
   * Runs `expire` (which closes the sockets) and finishes the connection as `handshake_timeout`
   * unless the returned cancel comes first: a client that never completes its proxy request or its
   * TLS handshake must not hold its socket (and a dialled upstream) for ever.
   */
  deadline(ms: number, expire: () => void): () => void {
    const t = setTimeout(() => {
      try { expire(); } finally { this.finish('handshake_timeout'); }
    }, ms);
    t.unref(); // the socket keeps the process up while it lives, not this timer
    return () => clearTimeout(t);
  }

  /** The target is known (CONNECT / SOCKS request / absolute URI): the record becomes visible. */
  opened(host: string, port: number, dialed?: string): void {
    Object.assign(this.record, { host, port, dialed });
    this.pool.connection({ ...this.record });
  }

  /**
   * Counts the connection in connections_total once, as soon as it is known whether it is
   * intercepted (forwarding starts): a long agent session shows when it begins, not when it ends.
   */
  count(): void {
    if (this.counted) return;
    this.counted = true;
    connectionsTotal.inc({ listener: this.listener, intercepted: String(this.record.intercepted) });
  }

  finish(closeReason: string, error?: ErrorCode): void {
    if (this.finished) return;
    this.finished = true;
    this.record.endTs = Date.now();
    this.record.closeReason = this.record.closeReason ?? closeReason;
    if (error && !this.record.error) this.record.error = error;
    connectionsActive.dec({ listener: this.listener });
    this.count(); // one that never got as far as forwarding is counted as it ends
    if (this.record.error) connectionErrors.inc({ listener: this.listener, error: this.record.error });
    if (this.record.host) this.pool.connection({ ...this.record });
  }
}
