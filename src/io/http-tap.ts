// Watches an HTTP/1.1 connection (plaintext or decrypted) in both directions and turns each
// request/response exchange into a capture task. It only observes: the pipe has already forwarded
// every chunk it sees. On `101 Switching Protocols` it hands the connection to the WebSocket tap;
// on malformed HTTP it stops watching (the bytes keep flowing raw) and records the error.
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
   * later absolute-URI request for another origin must not be answered by the bound one.
   */
  boundOrigin?: string;
  /** Called when such a request is seen: the connection is closed (the client retries elsewhere). */
  onForeignOrigin?: () => void;
}

interface Exchange {
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

function contentLength(headers: Header[]): number {
  return Number(headerValues(headers, 'content-length')[0]) || 0;
}

/** The path (with query) of a request-target: origin-form as is, absolute-form reduced to its path. */
export function targetPath(target: string): string {
  if (target.startsWith('/')) return target;
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(target);
  return m ? m[1] || '/' : target;
}

export class HttpTap implements Tap {
  private mode: 'http' | 'ws' | 'raw' = 'http';
  private ws?: WsConnectionTap;
  private readonly reqParser: Http1Parser;
  private readonly respParser: Http1Parser;
  /** requests in wire order whose exchange is not yet submitted (pipelining) */
  private readonly exchanges: Exchange[] = [];
  private reqEx?: Exchange;
  private respEx?: Exchange;
  private readonly budget: MemoryBudget;

  constructor(private readonly o: HttpTapOptions) {
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
      onError: (_code, detail) => this.fail(this.reqEx, detail),
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
      onError: (_code, detail) => this.fail(this.respEx ?? this.exchanges[0], detail),
    });
  }

  fromClient(chunk: Buffer): void {
    if (this.mode === 'http') this.reqParser.push(chunk);
    else if (this.mode === 'ws') this.ws!.fromClient(chunk);
  }

  fromServer(chunk: Buffer): void {
    if (this.mode === 'http') this.respParser.push(chunk);
    else if (this.mode === 'ws') this.ws!.fromServer(chunk);
  }

  close(): void {
    if (this.mode === 'ws') { this.ws!.close(); return; }
    if (this.mode === 'http') {
      this.respParser.end(); // completes a read-until-close body
      this.reqParser.end();
    }
    // Whatever is still open was cut short by a close.
    for (const ex of this.exchanges.splice(0)) {
      if (!ex.reqDone || (ex.resp && !ex.respDone) || !ex.resp) {
        ex.error ??= 'truncated_stream';
        ex.errorDetail ??= !ex.resp ? 'connection closed before a response' : 'connection closed mid-message';
      }
      this.submit(ex);
    }
    this.mode = 'raw';
  }

  private onRequestHead(h: RequestHead): void {
    httpTransactions.inc();
    const o = this.o.boundOrigin !== undefined ? absoluteHttpOrigin(h.target) : undefined;
    const foreign = o && `${o.host}:${o.port}`;
    if (foreign && foreign !== this.o.boundOrigin) {
      // Its bytes may already be on their way to the bound origin (forwarding does not wait for
      // parsing), so the only safe answer is to close before that origin's reply reaches the client.
      decodeErrors.inc({ kind: 'bad_http' });
      this.o.pool.http({ ...this.emptyTask(), method: h.method, target: h.target, httpVersion: h.version, reqHeaders: h.headers,
        error: 'bad_http', errorDetail: `request for ${foreign} on a proxy connection bound to ${this.o.boundOrigin}: connection closed` }, this.o.conn.id);
      this.mode = 'raw';
      this.o.onForeignOrigin?.();
      return;
    }
    const ex: Exchange = {
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

  private onResponseHead(h: ResponseHead): void {
    if (h.informational) return; // 100 Continue / 103: the final response follows for the same request
    // An Upgrade/CONNECT request the origin refused: the request side goes back to parsing HTTP.
    if (h.status !== 101 && this.reqParser.state === 'held') this.reqParser.resume();
    const ex = this.exchanges.find((e) => !e.resp);
    if (!ex) return this.fail(undefined, `response ${h.status} without a request`);
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
    if (ex.resp.status !== 101) {
      // a 2xx to CONNECT inside the tunnel: a nested tunnel we do not decode
      this.submit(ex);
      this.mode = 'raw';
      return;
    }
    const upgrade = nextId();
    this.submit(ex, upgrade);
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

  /** Malformed or cut-short HTTP: record it and stop watching; the pipe keeps forwarding raw. */
  private fail(ex: Exchange | undefined, detail: string): void {
    // the parser reports a message cut by the close as bad_http with a "truncated…" detail
    const code: ErrorCode = detail.startsWith('truncated') ? 'truncated_stream' : 'bad_http';
    decodeErrors.inc({ kind: code });
    const target = ex ?? this.exchanges[0];
    if (target) { target.error = code; target.errorDetail = detail; }
    for (const e of this.exchanges.splice(0)) this.submit(e);
    if (!target) {
      // nothing to attach it to: record a transaction that only says what went wrong
      this.o.pool.http({ ...this.emptyTask(), error: code, errorDetail: detail }, this.o.conn.id);
    }
    this.mode = 'raw';
  }

  /** Submits finished exchanges from the front, keeping wire order. */
  private flushDone(): void {
    while (this.exchanges.length && this.exchanges[0].reqDone && this.exchanges[0].respDone) this.submit(this.exchanges.shift()!);
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
