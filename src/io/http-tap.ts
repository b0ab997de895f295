// Watches an HTTP/1.1 connection (plaintext or decrypted) in both directions and turns each
// request/response exchange into a capture task. It only observes: the pipe has already forwarded
// every chunk it sees. On `101 Switching Protocols` it hands the connection to the WebSocket tap
// (another protocol is relayed raw); on malformed HTTP it stops watching (the bytes keep flowing
// raw) and records the error — except on a plain-HTTP proxy connection bound to one origin, where
// checking each request's origin is not capture but what keeps another origin's request from being
// answered by the bound one: there the client's bytes pass through the tap before they are
// forwarded (gateUp), so no byte of a request head goes before the head is checked; request heads
// stay watched after a response fails to parse; and request bytes that cannot be checked close the
// connection, as does a 101 to anything but WebSocket.
import { Http1Parser, headerValues, type RequestHead, type ResponseHead } from './http1.js';
import { absoluteHttpOrigin } from './authority.js';
import { CaptureBuffer, type MemoryBudget } from './capture-buffer.js';
import { WsConnectionTap } from './ws-tap.js';
import type { Tap } from './pipe.js';
import type { ProxyConnection } from './connection.js';
import type { CapturePool } from '../workers/pool.js';
import type { StreamOrigin, HttpCaptureTask } from '../workers/tasks.js';
import type { ErrorCode, Header } from '../records.js';
import { nextId } from '../store/ids.js';
import { captureDropped, decodeErrors, httpTransactions } from '../metrics.js';

export interface HttpTapOptions {
  conn: ProxyConnection;
  tls: boolean;
  host: string;
  port: number;
  pool: CapturePool;
  maxBody: number;
  /**
   * A plain-HTTP proxy connection is bound to the origin of its first request ("host:port"). A
   * later request for another origin must not be answered by the bound one.
   */
  boundOrigin?: string;
  /**
   * Bound connections: called once with the close reason when a request names another origin
   * (`foreign_origin`), request bytes cannot be checked in time (`unchecked_request`) or the origin
   * switched to a protocol other than WebSocket (`unchecked_upgrade`); the callee closes both sides
   * (the client retries on a new connection).
   */
  closeBound?: (reason: BoundCloseReason) => void;
}

export type BoundCloseReason = 'foreign_origin' | 'unchecked_request' | 'unchecked_upgrade';

interface Exchange {
  /** held against the capture memory bounds until submitted (exchangeCost; 0 when it went uncounted) */
  cost: number;
  req: RequestHead;
  path: string;
  startTs: number;
  t0: number;
  reqBody: CaptureBuffer;
  reqBytes: number;
  reqDone: boolean;
  resp?: ResponseHead;
  respBody?: CaptureBuffer;
  respBytes: number;
  respDone: boolean;
  error?: ErrorCode;
  errorDetail?: string;
}

/**
 * What an exchange costs the capture memory bounds from its request head until it is submitted,
 * beyond its bodies: the exchange, its parsed head (strings of about twice the head's bytes) and
 * two capture buffers. Uncounted, a client pipelining requests that the origin never answered
 * grew the heap ~17 bytes per byte sent (a 56-byte GET held ~1 KB) until V8 aborted the process.
 */
const exchangeCost = (h: RequestHead) => 1024 + 2 * h.headBytes;
/** Exchanges a connection may hold open past the bounds before its capture stops (see onRequestHead). */
const UNCOUNTED_OPEN = 16;

function contentLength(headers: Header[]): number {
  return Number(headerValues(headers, 'content-length')[0]) || 0;
}

/** The path (with query) of a request-target: origin-form as is, absolute-form reduced to its path. */
export function targetPath(target: string): string {
  if (target.startsWith('/')) return target;
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(target);
  // (an empty path is "/", also before a query: RFC 9112 §3.2.1)
  return m ? (m[1].startsWith('/') ? m[1] : `/${m[1]}`) : target;
}

/**
 * 'guard': a bound connection whose responses could not be parsed; capture has stopped, but
 * request heads are still parsed for their origin.
 */
type Mode = 'http' | 'guard' | 'ws' | 'raw';

export class HttpTap implements Tap {
  private mode: Mode = 'http';
  private closing = false;
  private ws?: WsConnectionTap;
  private readonly reqParser: Http1Parser;
  private readonly respParser: Http1Parser;
  /** requests in wire order whose exchange is not yet submitted (pipelining) */
  private readonly exchanges: Exchange[] = [];
  private reqEx?: Exchange;
  private respEx?: Exchange;
  /**
   * The request side failed (not bound): capture goes on until the responses to the requests before
   * the failure are in. `broken`: its error, when no exchange of its own carries it.
   */
  private requestFailed = false;
  private broken?: { code: ErrorCode; detail: string };
  private readonly budget: MemoryBudget;
  /**
   * Bound connections only: what of a client chunk may go to the origin now (see gate). Absent
   * otherwise, so the pipe forwards first and shows the tap after, as for any capture.
   */
  readonly gateUp?: (chunk: Buffer) => Buffer[];
  /** the bytes of a request head not yet whole, held back by the gate (≤ a head: 64 KiB) */
  private unchecked: Buffer[] = [];
  /** set while the gate's chunk closes the connection: where its bytes stop going (-1: none of them, nor the held ones) */
  private cutAt?: number;

  constructor(private readonly o: HttpTapOptions) {
    if (o.boundOrigin !== undefined) this.gateUp = (chunk) => this.gate(chunk);
    const connId = o.conn.id;
    this.budget = { reserve: (n) => o.pool.reserve(connId, n), release: (n) => o.pool.release(connId, n) };
    this.reqParser = new Http1Parser('request', {
      onHead: (h) => this.onRequestHead(h as RequestHead),
      onBody: (d) => this.reqEx?.reqBody.append(d),
      onEnd: ({ wireBytes }) => {
        const ex = this.reqEx;
        if (!ex) return;
        ex.reqBytes = wireBytes;
        ex.reqDone = true;
        this.reqEx = undefined;
        this.flushDone();
      },
      onUpgrade: () => {},
      onError: (_code, detail, wireBytes) => {
        if (this.reqEx) this.reqEx.reqBytes = wireBytes; // a cut body's bytes did cross the wire
        this.fail('request', this.reqEx, detail);
      },
    });
    this.respParser = new Http1Parser('response', {
      onHead: (h) => this.onResponseHead(h as ResponseHead),
      onBody: (d) => this.respEx?.respBody?.append(d),
      onEnd: ({ wireBytes }) => {
        const ex = this.respEx;
        if (!ex) return;
        ex.respBytes = wireBytes;
        ex.respDone = true;
        this.respEx = undefined;
        this.flushDone();
      },
      onUpgrade: (rest) => this.onUpgrade(rest),
      onError: (_code, detail, wireBytes) => {
        if (this.respEx) this.respEx.respBytes = wireBytes;
        this.fail('response', this.respEx ?? this.exchanges[0], detail);
      },
    });
  }

  fromClient(chunk: Buffer): void {
    if (this.mode === 'http' || this.mode === 'guard') {
      this.reqParser.push(chunk);
      // Bytes behind an Upgrade request are parsed only once the origin's answer to it has been
      // passed to the client, with whatever the origin answered after it: too late to check them.
      // (A WebSocket client sends nothing before the 101, RFC 6455 §4.1.)
      if (this.o.boundOrigin !== undefined && (this.mode as Mode) !== 'raw' && this.reqParser.heldBytes > 0) {
        this.cutAt ??= chunk.length - this.reqParser.heldBytes;
        this.closeBound('unchecked_request');
      }
    } else if (this.mode === 'ws') this.ws!.fromClient(chunk);
  }

  /**
   * A bound connection's client bytes, parsed before they go: returns what may be forwarded now, in
   * order. A request for another origin must not reach the bound one (it carries that origin's
   * cookies and body), so a head goes only once it is whole and names the bound origin: the bytes
   * of a head split across reads wait here; on a foreign or unparsable request the connection is
   * closed and only the bytes before that request go.
   */
  private gate(chunk: Buffer): Buffer[] {
    const held = this.unchecked;
    this.cutAt = undefined;
    this.fromClient(chunk);
    const cut = this.cutAt as number | undefined;
    if (cut !== undefined) {
      this.unchecked = [];
      if (cut < 0) return [];
      return [...held, chunk.subarray(0, cut)];
    }
    if ((this.mode === 'http' || this.mode === 'guard') && this.reqParser.inHead) {
      const start = this.reqParser.headStart;
      if (start < 0) { // the same head goes on
        held.push(chunk);
        return [];
      }
      this.unchecked = [chunk.subarray(start)];
      return start > 0 ? [...held, chunk.subarray(0, start)] : held;
    }
    if (held.length === 0) return [chunk];
    this.unchecked = [];
    return [...held, chunk];
  }

  fromServer(chunk: Buffer): void {
    if (this.mode === 'http') this.respParser.push(chunk);
    else if (this.mode === 'ws') this.ws!.fromServer(chunk);
  }

  close(): void {
    // Closing already: a request cut by it is recorded as such, it gives no reason to close.
    this.closing = true;
    if (this.mode === 'ws') { this.ws!.close(); return; }
    if (this.mode === 'guard') { this.mode = 'raw'; return; } // capture stopped at the failure
    if (this.mode === 'http') {
      this.respParser.end(); // completes a read-until-close body
      // (unless the response was cut: then that record says it, and a partial request behind it is
      // no exchange of its own)
      if ((this.mode as Mode) === 'http') this.reqParser.end();
    }
    this.submitOpen();
    this.mode = 'raw';
  }

  /** Whatever is still open was cut short by a close. */
  private submitOpen(): void {
    for (const ex of this.exchanges.splice(0)) {
      if (!ex.reqDone || (ex.resp && !ex.respDone) || !ex.resp) {
        ex.error ??= 'truncated_stream';
        ex.errorDetail ??= !ex.resp ? 'connection closed before a response' : 'connection closed mid-message';
      }
      this.submit(ex);
    }
    this.submitBroken();
  }

  /** The record of a request that could not be parsed, after the exchanges before it (wire order). */
  private submitBroken(): void {
    if (!this.broken) return;
    this.o.pool.http({ ...this.emptyTask(), error: this.broken.code, errorDetail: this.broken.detail }, this.o.conn.id);
    this.broken = undefined;
  }

  private onRequestHead(h: RequestHead): void {
    if (this.mode === 'raw') return; // closed by an earlier request of the same chunk
    httpTransactions.inc();
    const foreign = this.foreignTarget(h);
    if (foreign !== undefined) {
      // None of its bytes has gone (the gate), and none will: the connection is closed, and the
      // client retries on a new one.
      this.cutAt ??= this.reqParser.headStart;
      decodeErrors.inc({ kind: 'bad_http' });
      this.o.pool.http({ ...this.emptyTask(), method: h.method, target: h.target, httpVersion: h.version, reqHeaders: h.headers,
        error: 'bad_http', errorDetail: `request for ${foreign} on a proxy connection bound to ${this.o.boundOrigin}: connection closed` }, this.o.conn.id);
      this.closeBound('foreign_origin');
      return;
    }
    if (this.mode === 'guard') return;
    let cost = exchangeCost(h);
    if (!this.budget.reserve(cost)) {
      // The bounds are full (maybe by other connections' backlog for a moment): a few exchanges go
      // on uncounted, their bodies dropped as any body is then; a pile of them stops capture.
      if (this.exchanges.length >= UNCOUNTED_OPEN) return this.stopCapture(h);
      cost = 0;
    }
    const ex: Exchange = {
      cost,
      req: h,
      path: targetPath(h.target),
      startTs: Date.now(),
      t0: performance.now(),
      reqBody: new CaptureBuffer(this.o.maxBody, this.budget, contentLength(h.headers)),
      reqBytes: h.headBytes,
      reqDone: false,
      respBytes: 0,
      respDone: false,
    };
    this.exchanges.push(ex);
    this.reqEx = ex;
    this.respParser.expectResponseTo(h.method);
  }

  /**
   * On a bound connection, what a request names instead of the bound origin; undefined when it
   * may go there. Absolute-form of any other scheme or origin and CONNECT are foreign; origin-form
   * and asterisk-form name no origin, so they stay with the one the connection has.
   */
  private foreignTarget(h: RequestHead): string | undefined {
    if (this.o.boundOrigin === undefined) return undefined;
    if (h.method === 'CONNECT') return `CONNECT ${h.target}`;
    if (h.target.startsWith('/') || h.target === '*') return undefined;
    const o = absoluteHttpOrigin(h.target);
    // scheme and authority only: the rest of a target may carry credentials (?key=)
    const named = o ? `${o.host}:${o.port}` : /^[^/?#]*(?:\/\/[^/?#]*)?/.exec(h.target)![0];
    return named === this.o.boundOrigin ? undefined : named;
  }

  /**
   * Requests awaiting responses hold more than the capture memory bounds allow (a client pipelining
   * what the origin does not answer): the open exchanges are recorded as they are and capture of
   * the connection stops, each counted as queue_full. Forwarding goes on, and so does the origin
   * check of a bound connection ('guard' parses request heads without keeping them).
   */
  private stopCapture(h: RequestHead): void {
    const detail = `${this.exchanges.length} requests awaiting responses hold this connection's capture memory: capture of the connection stopped`;
    captureDropped.inc({ reason: 'queue_full' }, this.submitWaiting('queue_full', detail) + 1);
    this.o.pool.http({ ...this.emptyTask(), origin: this.origin(targetPath(h.target)), method: h.method, target: h.target, httpVersion: h.version, reqHeaders: h.headers,
      truncated: true, error: 'queue_full', errorDetail: detail }, this.o.conn.id);
    this.reqEx = this.respEx = undefined;
    this.mode = this.o.boundOrigin === undefined ? 'raw' : 'guard';
  }

  /** Submits every exchange still waiting, marked (unless it already says why) as cut off by `code`. Returns how many. */
  private submitWaiting(code: ErrorCode, detail: string): number {
    const waiting = this.exchanges.splice(0);
    for (const ex of waiting) {
      ex.error ??= code;
      ex.errorDetail ??= detail;
      this.submit(ex);
    }
    return waiting.length;
  }

  private closeBound(reason: BoundCloseReason): void {
    this.submitOpen();
    this.mode = 'raw';
    this.o.closeBound?.(reason);
  }

  private onResponseHead(h: ResponseHead): void {
    if (this.mode !== 'http') return; // stopped by an earlier message of the same chunk
    if (h.informational) return; // 100 Continue / 103: the final response follows for the same request
    // An Upgrade/CONNECT request the origin refused: the request side goes back to parsing HTTP.
    if (h.status !== 101 && this.reqParser.state === 'held') this.reqParser.resume();
    const ex = this.exchanges.find((e) => !e.resp);
    if (!ex) return this.fail('response', undefined, `response ${h.status} without a request`);
    ex.resp = h;
    ex.respBytes = h.headBytes;
    ex.respBody = new CaptureBuffer(this.o.maxBody, this.budget, contentLength(h.headers));
    this.respEx = ex;
  }

  private onUpgrade(rest: Buffer): void {
    const ex = this.respEx ?? this.exchanges.find((e) => e.resp);
    if (!ex?.resp) return;
    ex.respDone = ex.reqDone = true;
    this.exchanges.splice(this.exchanges.indexOf(ex), 1);
    // A 2xx to CONNECT inside the tunnel is a nested tunnel, and a 101 to anything but WebSocket
    // (h2c, Docker's `Upgrade: tcp`) another protocol: neither is decoded, so their bytes are not
    // mistaken for WebSocket frames.
    const upgradeTo = headerValues(ex.resp.headers, 'upgrade');
    if (ex.resp.status !== 101 || !upgradeTo.some((v) => /(^|,)\s*websocket\s*(,|$)/i.test(v))) {
      // Relayed raw where the client chose the origin (a tunnel). On a bound connection nothing
      // after it could be checked for its origin (HTTP/2 frames name any :authority, `tcp` none),
      // so it closes, as mitmproxy does with a 101 no protocol layer takes. The pipe has written the
      // 101 (and what came with it) to the client before the tap sees it, so the client gets the 101
      // and then the close (unless it is not reading: destroy drops what the kernel has not taken);
      // the close comes in the same tick, before the client can have sent a byte of the new protocol.
      const bound = this.o.boundOrigin;
      if (bound !== undefined) {
        decodeErrors.inc({ kind: 'bad_http' });
        ex.error = 'bad_http';
        ex.errorDetail = `${ex.resp.status} to ${upgradeTo.join(', ') || 'another protocol'} on a proxy connection bound to ${bound}: what follows cannot be checked for its origin, connection closed`;
      }
      this.submit(ex);
      if (bound === undefined) this.mode = 'raw';
      else this.closeBound('unchecked_upgrade');
      return;
    }
    const upgrade = nextId();
    this.submit(ex, upgrade);
    // Requests pipelined behind it will get no HTTP response now (and the WebSocket tap never
    // submits exchanges): recorded here, so their capture memory is released too.
    this.submitWaiting('truncated_stream', 'the connection switched to WebSocket before its response');
    this.ws = new WsConnectionTap({
      origin: { ...this.origin(ex.path), scheme: this.o.tls ? 'wss' : 'ws' },
      upgrade,
      responseHeaders: ex.resp.headers,
      pool: this.o.pool,
      maxBody: this.o.maxBody,
    });
    this.mode = 'ws';
    const early = this.reqParser.upgrade();
    if (early.length) this.ws.fromClient(early);
    if (rest.length) this.ws.fromServer(rest);
  }

  /**
   * Malformed or cut-short HTTP: record it and stop watching; the pipe keeps forwarding raw. A
   * malformed request stops the watching only once the responses to the requests before it are in.
   * On a bound connection requests must still be checked: after a response side failure their heads
   * are watched on ('guard'); after a request side failure nothing later on it can be, so it closes.
   */
  private fail(side: 'request' | 'response', ex: Exchange | undefined, detail: string): void {
    if (this.mode === 'raw') return; // everything is submitted already
    if (this.mode === 'guard') {
      if (this.closing) return void (this.mode = 'raw');
      this.cutAt ??= this.reqParser.headStart;
      return this.closeBound('unchecked_request'); // only requests are parsed now
    }
    // the parser reports a message cut by the close as bad_http with a "truncated…" detail
    const code: ErrorCode = detail.startsWith('truncated') ? 'truncated_stream' : 'bad_http';
    decodeErrors.inc({ kind: code });
    if (side === 'request' && this.o.boundOrigin === undefined && !this.closing) {
      // The requests before this one are whole and on their way: their responses are still to
      // come, and are captured; flushDone stops the tap once they are in (what the origin makes of
      // the broken request cannot be told apart from the bytes).
      this.requestFailed = true;
      this.reqEx = undefined;
      if (ex) Object.assign(ex, { error: code, errorDetail: detail, reqDone: true });
      else this.broken = { code, detail };
      return this.flushDone();
    }
    const target = ex ?? this.exchanges[0];
    if (target) { target.error = code; target.errorDetail = detail; }
    // nothing to attach it to: record a transaction that only says what went wrong
    else this.broken ??= { code, detail };
    for (const e of this.exchanges.splice(0)) this.submit(e);
    this.submitBroken();
    // Every exchange is submitted: no later byte may reach their (handed over) buffers.
    this.reqEx = this.respEx = undefined;
    if (this.o.boundOrigin === undefined || this.closing) this.mode = 'raw';
    else if (side === 'response') this.mode = 'guard';
    else {
      this.cutAt ??= this.reqParser.headStart; // (a head that failed: none of it goes)
      this.closeBound('unchecked_request');
    }
  }

  /** Submits finished exchanges from the front, keeping wire order. */
  private flushDone(): void {
    while (this.exchanges.length && this.exchanges[0].reqDone && this.exchanges[0].respDone) this.submit(this.exchanges.shift()!);
    if (this.requestFailed && this.exchanges.length === 0) {
      this.submitBroken();
      this.mode = 'raw';
    }
  }

  private origin(path: string): StreamOrigin {
    return { conn: this.o.conn.id, host: this.o.host, port: this.o.port, scheme: this.o.tls ? 'https' : 'http', path, clientUser: this.o.conn.record.clientUser };
  }

  private emptyTask(): HttpCaptureTask {
    return {
      type: 'http', origin: this.origin(''), method: '', target: '', httpVersion: '', reqHeaders: [], respHeaders: [],
      reqBytes: 0, reqBodyBytes: 0, respBytes: 0, respBodyBytes: 0, truncated: false,
      startTs: Date.now(), durationMs: 0, lastByteAt: performance.timeOrigin + performance.now(), maxBody: this.o.maxBody,
    };
  }

  private submit(ex: Exchange, id?: string): void {
    this.budget.release(ex.cost);
    const bodies = [ex.reqBody, ex.respBody].filter((b): b is CaptureBuffer => !!b);
    const tooLarge = bodies.some((b) => b.tooLarge);
    const overBudget = bodies.some((b) => b.overBudget);
    if (tooLarge) captureDropped.inc({ reason: 'too_large' });
    if (overBudget) captureDropped.inc({ reason: 'queue_full' });
    const task: HttpCaptureTask = {
      type: 'http',
      origin: this.origin(ex.path),
      id,
      method: ex.req.method,
      target: ex.req.target,
      httpVersion: ex.req.version,
      reqHeaders: ex.req.headers,
      reqBody: ex.reqBody.takeView(),
      reqBytes: ex.reqBytes,
      reqBodyBytes: ex.reqBody.total,
      status: ex.resp?.status,
      statusText: ex.resp?.statusText,
      respHeaders: ex.resp?.headers ?? [],
      respBody: ex.respBody?.takeView(),
      respBytes: ex.respBytes,
      respBodyBytes: ex.respBody?.total ?? 0,
      truncated: tooLarge || overBudget,
      startTs: ex.startTs,
      durationMs: Math.round((performance.now() - ex.t0) * 1000) / 1000, // µs resolution is all that means anything
      lastByteAt: performance.timeOrigin + performance.now(),
      maxBody: this.o.maxBody,
      error: ex.error ?? (overBudget ? 'queue_full' : tooLarge ? 'too_large' : undefined),
      errorDetail: ex.errorDetail,
    };
    this.o.pool.http(task, this.o.conn.id);
  }
}
