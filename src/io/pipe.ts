// Forwarding: every chunk read from one side is written, as the same Buffer, to the other side,
// then shown to the tap (which copies what it wants and returns at once) — except a client's
// bytes on a plain-HTTP proxy connection, which its tap checks first (Tap.gateUp). Backpressure pauses the
// faster side, so memory stays bounded whatever the peers do. Nothing here waits on capture.
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { countForwarded, forwardLatency } from '../metrics.js';
import type { ProxyConnection } from './connection.js';
import { holdsEnough } from './backpressure.js';

/** What watches the bytes: an HTTP tap, a WebSocket tap, or nothing (raw tunnel). */
export interface Tap {
  fromClient(chunk: Buffer): void;
  /**
   * A tap that must see the client's bytes before they go (a plain-HTTP proxy connection bound to
   * one origin): instead of fromClient, it takes each chunk and returns what may be forwarded now.
   */
  gateUp?(chunk: Buffer): Buffer[];
  fromServer(chunk: Buffer): void;
  /** Both sides are done (or one failed): flush what was in progress, marking it cut short. */
  close(): void;
}

export const NO_TAP: Tap = { fromClient() {}, fromServer() {}, close() {} };

/**
 * Writes what a gating tap lets through of `chunk`; false when `dst` wants no more for now. A gate
 * that throws fails closed: the bytes it held back cannot be put in order again.
 */
function passGate(gate: (chunk: Buffer) => Buffer[], chunk: Buffer, src: Duplex, dst: Duplex): boolean {
  let out: Buffer[];
  try {
    out = gate(chunk);
  } catch (e) {
    src.destroy(e as Error);
    return true;
  }
  let ok = true;
  for (const b of out) if (!dst.destroyed) ok = dst.write(b);
  return ok;
}

export interface PipeOptions {
  /** bytes already read from the client (e.g. after a proxy request head), forwarded first */
  clientHead?: Buffer[];
  /** LINGER_MS (tests set it small) */
  lingerMs?: number;
}

/**
 * After one side has fully closed, how long the other may linger half-open with nothing moving
 * before we cut it (closed: the kernel still sends what it holds, then a FIN).
 */
const LINGER_MS = 30_000;
/**
 * While greytap still holds bytes for a lingering side, it waits this many linger periods before
 * the cut drops them. A peer that reads slowly behind megabytes of kernel buffers shows no progress
 * to greytap for long stretches (the kernel reports room only once a third of its buffer is free):
 * cutting at 30 s dropped up to ~190 KiB that the sender had seen accepted.
 */
const LINGER_HOLDING = 10;

/**
 * Ends `dst` because its counterpart failed or was cut (a reset, no FIN). A FIN would tell a plain
 * TCP peer the stream ended cleanly, and a body delimited by the connection's end (or an upload)
 * would pass for complete: a TCP peer gets a RST instead, as it would have without greytap. (A TLS
 * peer gets no close_notify, which tells it the same.)
 */
function abort(dst: Duplex): void {
  if (dst instanceof Socket && !(dst instanceof TLSSocket) && !dst.destroyed) {
    try { dst.resetAndDestroy(); return; } catch { /* not a TCP handle: destroy below */ }
  }
  dst.destroy();
}

// The latency histogram samples every 16th chunk (observing costs more than forwarding a chunk),
// counted across all connections: counted per connection, one that carries fewer than 16 chunks
// each way (most HTTP exchanges, short WebSocket sessions) was never sampled at all.
let chunksSeen = 0;

export function pipeConnection(conn: ProxyConnection, client: Duplex, server: Duplex, tap: Tap, opts: PipeOptions = {}): void {
  const rec = conn.record;
  conn.count();
  let openSides = 2;
  let lingerTimer: NodeJS.Timeout | undefined;

  // bytes read plus bytes no longer waiting to be written: grows while anything moves either way
  const moved = () => rec.bytesUp + rec.bytesDown - client.writableLength - server.writableLength;
  const linger = (last: number, held: number) => {
    lingerTimer = setTimeout(() => {
      const now = moved();
      if (now !== last) return linger(now, 0);
      if (client.writableLength + server.writableLength > 0 && held + 1 < LINGER_HOLDING) return linger(now, held + 1);
      client.destroy();
      server.destroy();
    }, opts.lingerMs ?? LINGER_MS);
    lingerTimer.unref();
  };

  const sideClosed = () => {
    if (--openSides === 1) return linger(moved(), 0);
    clearTimeout(lingerTimer);
    try { tap.close(); } catch { /* a tap must never break forwarding */ }
    conn.finish(rec.closeReason ?? 'closed');
  };

  const gate = tap.gateUp?.bind(tap);
  /** One chunk on its way: written (through the gate, for the client's bytes, when the tap has one), counted, shown to the tap. False when `dst` wants no more for now. */
  const pass = (chunk: Buffer, src: Duplex, dst: Duplex, up: boolean): boolean => {
    const gated = up && gate !== undefined;
    const ok = gated ? passGate(gate, chunk, src, dst) : dst.write(chunk);
    if (up) rec.bytesUp += chunk.length; else rec.bytesDown += chunk.length;
    countForwarded(up, chunk.length);
    if (!gated) {
      try {
        if (up) tap.fromClient(chunk); else tap.fromServer(chunk);
      } catch { /* capture bugs lose capture, never traffic */ }
    }
    return ok;
  };

  const forward = (src: Duplex, dst: Duplex, up: boolean) => {
    // On a bulk transfer nearly every write returns false (measured: 49,589 of 49,617 chunks), so
    // the drain listener is registered once, as Node's pipe() does, instead of a once('drain')
    // closure and listener per chunk. 'drain' comes when dst's buffer is empty again.
    let paused = false;
    dst.on('drain', () => {
      if (!paused) return;
      paused = false;
      src.resume();
    });
    src.on('data', (chunk: Buffer) => {
      const t0 = (++chunksSeen & 15) === 0 ? performance.now() : 0;
      if (!pass(chunk, src, dst, up) && !paused && holdsEnough(dst)) {
        paused = true;
        src.pause();
      }
      if (t0) forwardLatency.observe((performance.now() - t0) / 1000);
    });
    // A FIN is passed on after the bytes before it are flushed; the other direction keeps flowing.
    const onEnd = () => {
      rec.closeReason ??= up ? 'client_end' : 'server_end';
      dst.end();
    };
    // An error (reset, TLS failure) aborts both directions: nothing more can be delivered in order.
    src.on('error', (e: NodeJS.ErrnoException) => {
      rec.closeReason ??= `${up ? 'client' : 'server'}_error:${e.code ?? e.message}`;
      abort(dst);
    });
    // Closed without a FIN (destroyed, reset): the other side cannot be finished in order either.
    // Nor can it be when it is still sending: what it sends has nowhere to go (this side was
    // destroyed after its FIN, by stop()), and counted as moving it would keep the linger going.
    const onClose = () => {
      if (!src.readableEnded || !dst.readableEnded) abort(dst);
      sideClosed();
    };
    // A socket that ended or closed while its first bytes were peeked will not say so again.
    if (src.readableEnded) process.nextTick(onEnd);
    else src.on('end', onEnd);
    if (src.closed) process.nextTick(onClose);
    else src.once('close', onClose);
  };

  for (const chunk of opts.clientHead ?? []) pass(chunk, client, server, true);
  forward(client, server, true);
  forward(server, client, false);
  // Sockets that were paused while their first bytes were peeked do not resume by themselves.
  client.resume();
  server.resume();
}
