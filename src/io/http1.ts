// Incremental HTTP/1.1 framing parser (RFC 9112), one instance per connection direction. It only
// OBSERVES: the tap forwards every Buffer itself and pushes the same Buffer here. Bytes in →
// callbacks out, no sockets, no timers. Body payload is handed out as subarrays of the pushed
// Buffers (never copied); only head / chunk-size / trailer lines are accumulated, and those are
// bounded by maxHeadBytes.
//
// Callback order per message: onHead, onBody*, onEnd. Exceptions:
//  - informational 1xx responses (not 101): onHead only (informational: true); their bytes are in
//    head.headBytes, not in the final response's wireBytes. They do not consume expectResponseTo().
//  - 101, or a 2xx answering CONNECT: onHead, then onUpgrade(rest) (no onEnd: the message is the
//    head, its size is head.headBytes); the parser is then 'upgraded' and ignores further input.
//  - a request carrying `Upgrade`, or CONNECT: after its onEnd the parser is 'held' and buffers
//    (copies, ≤ 64 KiB) what follows until upgrade() (101 / 2xx seen) or resume() (refused).
import { isUtf8 } from 'node:buffer';
import type { Header } from '../records.js';

export interface RequestHead { kind: 'request'; method: string; target: string; version: string; headers: Header[]; headBytes: number }
export interface ResponseHead { kind: 'response'; status: number; statusText: string; version: string; headers: Header[]; headBytes: number; informational: boolean /* 1xx other than 101 */ }

export interface Http1Handlers {
  onHead(head: RequestHead | ResponseHead): void;
  /** Payload bytes only — chunk-size lines, chunk CRLFs and trailers excluded — as subarrays of the pushed Buffer (no copies). */
  onBody(data: Buffer): void;
  /** The message is complete. wireBytes = all bytes of this message on the wire (head + body + chunk framing + trailers). */
  onEnd(info: { trailers: Header[]; wireBytes: number }): void;
  /** Response side: a 101 (or a 2xx to CONNECT) ended HTTP on this connection; `rest` = the bytes after the head in that chunk (they belong to the new protocol). Request side: see upgrade(). */
  onUpgrade(rest: Buffer): void;
  /**
   * Malformed input: the parser stops parsing (stays failed); the proxy keeps forwarding raw.
   * Truncation reported by end() has a detail starting with 'truncated'. wireBytes = the failed
   * message's bytes parsed before it failed (of a message cut by the close: all that came).
   */
  onError(code: 'bad_http', detail: string, wireBytes: number): void;
}

export type Http1State =
  | 'head'
  | 'body-length'
  | 'chunk-size'
  | 'chunk-data'
  | 'chunk-crlf'
  | 'trailers'
  | 'body-until-close'
  | 'held'
  | 'done'
  | 'upgraded'
  | 'failed';

const CR = 0x0d;
const LF = 0x0a;
const DEFAULT_MAX_HEAD = 64 * 1024;
const MAX_HELD = 64 * 1024;
/** A chunk-size line is hex plus extensions; anything longer is an attack, not HTTP. */
const MAX_CHUNK_LINE = 4096;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// field-value: VCHAR / obs-text / SP / HTAB (RFC 9110 §5.5); CR, LF, NUL and other CTLs are invalid.
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const VERSION = /^HTTP\/1\.[0-9]$/;

/** All values of a header (case-insensitive name), in wire order. */
export function headerValues(headers: Header[], name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  // the length test first: lowercasing every name for every lookup was most of a head's parse
  for (const [n, v] of headers) if (n.length === lower.length && n.toLowerCase() === lower) out.push(v);
  return out;
}

/** A list-valued header (RFC 9110 §5.6.1) split into trimmed, non-empty elements across all its lines. */
export function headerList(headers: Header[], name: string): string[] {
  const out: string[] = [];
  for (const v of headerValues(headers, name)) for (const e of v.split(',')) if (e.trim() !== '') out.push(e.trim());
  return out;
}

/**
 * Transfer-Encoding's codings in the order applied, lowercased. `chunked`: the last one is chunked,
 * which is what makes the body chunk-framed (RFC 9112 §6.1, §6.3): the parser removes that one
 * only, so the capture undoes the rest.
 */
export function transferCodings(headers: Header[]): { codings: string[]; chunked: boolean } {
  const codings = headerList(headers, 'transfer-encoding').map((c) => c.toLowerCase());
  return { codings, chunked: codings[codings.length - 1] === 'chunked' };
}

class BadHttp extends Error {}

/**
 * transferCodings, for framing a message. RFC 9112 §6.3 item 3: Transfer-Encoding overrides
 * Content-Length, but a message with both "ought to be handled as an error": a recipient that
 * frames by the length instead (an origin, or the client) reads other messages out of the same
 * bytes, and we can neither remove the length (bytes are forwarded untouched) nor tell what the
 * recipient does. So it is refused, as node:http's llhttp refuses it: capture stops there and, on a
 * bound proxy connection, the guard closes it rather than check requests the origin may not see.
 */
function framingCodings(headers: Header[]): { codings: string[]; chunked: boolean } {
  const te = transferCodings(headers);
  if (te.codings.length > 0 && headerValues(headers, 'content-length').length > 0) throw new BadHttp('both Transfer-Encoding and Content-Length');
  return te;
}

export class Http1Parser {
  private st: Http1State = 'head';
  private readonly maxHead: number;

  // Line accumulation for head, chunk-size line and trailers (copied only when split across pushes).
  private acc: Buffer[] = [];
  private accLen = 0;
  private lineLen = 0; // bytes of the current line before its LF, so far
  private prevByte = -1; // last byte seen in the current block (to recognise CR before LF across pushes)
  private contentLines = 0; // non-empty lines in the current block

  private msgWire = 0; // wire bytes of the current message so far
  private remaining = 0; // body-length / chunk-data bytes left
  private sawCr = false; // chunk-crlf: the CR came
  private holdAfter = false; // current request is an upgrade / CONNECT: hold what follows
  private pendingMethods: string[] = []; // expectResponseTo queue (FIFO)
  private held: Buffer[] = [];
  private heldLen = 0;
  private heldOverflow = false;
  private headFrom = -1;

  constructor(
    private readonly side: 'request' | 'response',
    private readonly h: Http1Handlers,
    opts?: { maxHeadBytes?: number },
  ) {
    this.maxHead = opts?.maxHeadBytes ?? DEFAULT_MAX_HEAD;
  }

  get state(): string {
    return this.st;
  }

  /** Request side: bytes received while 'held' (behind an Upgrade or CONNECT request). */
  get heldBytes(): number {
    return this.heldLen;
  }

  /**
   * Where the head being read (or just read) began in the chunk being pushed; -1 when it began in
   * an earlier push (its bytes so far are kept here). For a gate that forwards no byte of a head
   * before it is checked.
   */
  get headStart(): number {
    return this.headFrom;
  }

  /** A head has begun and not ended: its bytes so far are kept here. */
  get inHead(): boolean {
    return this.st === 'head' && this.accLen > 0;
  }

  expectResponseTo(method: string): void {
    this.pendingMethods.push(method.toUpperCase());
  }

  push(chunk: Buffer): void {
    this.headFrom = -1;
    if (this.st === 'held') return this.hold(chunk);
    let pos = 0;
    try {
      while (pos < chunk.length) {
        switch (this.st as Http1State) {
          case 'head':
            pos = this.readHead(chunk, pos);
            break;
          case 'body-length':
          case 'chunk-data': {
            const take = Math.min(this.remaining, chunk.length - pos);
            this.remaining -= take;
            this.msgWire += take;
            const data = chunk.subarray(pos, pos + take);
            pos += take;
            if (this.remaining === 0) {
              if (this.st === 'chunk-data') this.st = 'chunk-crlf';
              this.h.onBody(data);
              if (this.st === 'body-length') this.finish([]);
            } else this.h.onBody(data);
            break;
          }
          case 'chunk-size':
            pos = this.readChunkSize(chunk, pos);
            break;
          case 'chunk-crlf': {
            // RFC 9112 §7.1: chunk-data is followed by CRLF (a bare LF is tolerated, §2.2).
            const b = chunk[pos++];
            this.msgWire++;
            if (b === CR && !this.sawCr) this.sawCr = true;
            else if (b === LF) {
              this.sawCr = false;
              this.st = 'chunk-size';
            } else throw new BadHttp('missing CRLF after chunk data');
            break;
          }
          case 'trailers':
            pos = this.readTrailers(chunk, pos);
            break;
          case 'body-until-close':
            this.msgWire += chunk.length - pos;
            this.h.onBody(pos === 0 ? chunk : chunk.subarray(pos));
            pos = chunk.length;
            break;
          case 'held':
            this.hold(chunk.subarray(pos));
            return;
          default: // done, upgraded, failed: nothing more to parse
            return;
        }
      }
    } catch (e) {
      if (!(e instanceof BadHttp)) throw e;
      this.fail(e.message);
    }
  }

  end(): void {
    switch (this.st) {
      case 'body-until-close':
        this.st = 'done';
        this.h.onEnd({ trailers: [], wireBytes: this.msgWire });
        return;
      case 'head':
        // Only blank lines (or nothing) since the last message: a clean close between messages.
        if (this.contentLines === 0 && this.lineLen === 0) {
          this.reset();
          this.st = 'done';
        } else this.fail('truncated head');
        return;
      case 'body-length':
      case 'chunk-size':
      case 'chunk-data':
      case 'chunk-crlf':
      case 'trailers':
        this.fail(`truncated body (${this.st})`);
        return;
      case 'held':
        this.held = [];
        this.heldLen = 0;
        this.st = 'done';
        return;
      default:
        return;
    }
  }

  upgrade(): Buffer {
    const out = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held, this.heldLen);
    this.held = [];
    this.heldLen = 0;
    if (this.st !== 'failed' && this.st !== 'done') this.st = 'upgraded';
    this.reset();
    return out;
  }

  /** Request side: the upgrade / CONNECT was refused; parse the held bytes (and what follows) as HTTP again. */
  resume(): void {
    if (this.st !== 'held') return;
    const bytes = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held, this.heldLen);
    const overflow = this.heldOverflow;
    this.held = [];
    this.heldLen = 0;
    this.heldOverflow = false;
    this.st = 'head';
    // Bytes beyond the hold limit were not kept: parsing would start mid-message.
    if (overflow) return this.fail('held bytes overflowed before the upgrade was refused');
    if (bytes.length > 0) this.push(bytes);
  }

  // ── states ──────────────────────────────────────────────────────────────────────────────

  private readHead(chunk: Buffer, pos: number): number {
    this.headFrom = this.accLen === 0 ? pos : -1;
    const end = this.scanBlock(chunk, pos, this.maxHead, true);
    if (end < 0) return chunk.length;
    const block = this.takeBlock(chunk, pos, end);
    this.msgWire += block.length;
    if (this.side === 'request') this.onRequestHead(block);
    else this.onResponseHead(block, chunk, end);
    return end;
  }

  private onRequestHead(block: Buffer): void {
    const lines = splitLines(block);
    const [method, target, version, extra] = lines[0].split(' ');
    if (extra !== undefined || !method || !TOKEN.test(method) || !target || !version) throw new BadHttp(`bad request line: ${clip(lines[0])}`);
    if (!VERSION.test(version)) throw new BadHttp(`unsupported version: ${clip(version)}`);
    if (/[\x00-\x20\x7f]/.test(target)) throw new BadHttp(`bad request target: ${clip(target)}`);
    const headers = parseFields(lines, 1);
    const head: RequestHead = { kind: 'request', method, target, version, headers, headBytes: block.length };
    // RFC 9112 §6.3: a request has a body only when it says so (TE or CL); chunked must be last.
    const te = framingCodings(headers);
    let next: Http1State;
    if (te.codings.length > 0) {
      if (!te.chunked) throw new BadHttp('request transfer-encoding without final chunked');
      next = 'chunk-size';
    } else {
      const len = contentLength(headers);
      next = len > 0 ? 'body-length' : 'done';
      this.remaining = len;
    }
    this.holdAfter = method === 'CONNECT' || headerValues(headers, 'upgrade').length > 0;
    this.h.onHead(head);
    if (this.st !== 'head') return; // a handler stopped us (upgrade() / failure)
    if (next === 'done') this.finish([]);
    else this.st = next;
  }

  private onResponseHead(block: Buffer, chunk: Buffer, end: number): void {
    const lines = splitLines(block);
    const m = /^(HTTP\/[0-9]\.[0-9]) ([0-9]{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new BadHttp(`bad status line: ${clip(lines[0])}`);
    if (!VERSION.test(m[1])) throw new BadHttp(`unsupported version: ${clip(m[1])}`);
    const status = Number(m[2]);
    if (status < 100) throw new BadHttp(`bad status code: ${status}`);
    const headers = parseFields(lines, 1);
    const informational = status >= 100 && status < 200 && status !== 101;
    const head: ResponseHead = { kind: 'response', status, statusText: m[3] ?? '', version: m[1], headers, headBytes: block.length, informational };
    if (informational) {
      // RFC 9110 §15.2: a 1xx precedes the final response to the same request; keep the queue entry.
      this.msgWire = 0;
      this.h.onHead(head);
      return;
    }
    const method = this.pendingMethods.shift() ?? 'GET';
    if (status === 101 || (method === 'CONNECT' && status >= 200 && status < 300)) {
      this.h.onHead(head);
      if (this.st !== 'head') return;
      // No onEnd: the message is the head alone (headBytes), and HTTP ends with it.
      this.st = 'upgraded';
      this.reset();
      this.h.onUpgrade(chunk.subarray(end));
      return;
    }
    // RFC 9112 §6.3: HEAD, 204 and 304 responses never have content, whatever CL/TE say.
    const te = framingCodings(headers);
    let next: Http1State;
    if (method === 'HEAD' || status === 204 || status === 304) next = 'done';
    else {
      if (te.codings.length > 0) {
        // TE overrides CL (§6.3 item 3); a response whose final coding is not chunked ends at close.
        next = te.chunked ? 'chunk-size' : 'body-until-close';
      } else if (headerValues(headers, 'content-length').length > 0) {
        this.remaining = contentLength(headers);
        next = this.remaining > 0 ? 'body-length' : 'done';
      } else next = 'body-until-close';
    }
    this.h.onHead(head);
    if (this.st !== 'head') return;
    if (next === 'done') this.finish([]);
    else this.st = next;
  }

  private readChunkSize(chunk: Buffer, pos: number): number {
    const end = this.scanLine(chunk, pos, MAX_CHUNK_LINE);
    if (end < 0) return chunk.length;
    const lineBytes = this.takeBlock(chunk, pos, end);
    this.msgWire += lineBytes.length;
    const size = chunkSize(lineBytes);
    if (size === 0) this.st = 'trailers';
    else {
      this.remaining = size;
      this.st = 'chunk-data';
    }
    return end;
  }

  private readTrailers(chunk: Buffer, pos: number): number {
    const end = this.scanBlock(chunk, pos, this.maxHead, false);
    if (end < 0) return chunk.length;
    const block = this.takeBlock(chunk, pos, end);
    this.msgWire += block.length;
    // The block is the trailer lines plus the final blank line (§7.1.2).
    this.finish(parseFields(splitLines(block), 0));
    return end;
  }

  /** The message ended: report it and go on to the next one (or hold / stop). */
  private finish(trailers: Header[]): void {
    const wireBytes = this.msgWire;
    const hold = this.side === 'request' && this.holdAfter;
    this.reset();
    this.st = hold ? 'held' : 'head';
    this.h.onEnd({ trailers, wireBytes });
  }

  private hold(bytes: Buffer): void {
    if (bytes.length === 0) return;
    const room = MAX_HELD - this.heldLen;
    if (bytes.length > room) this.heldOverflow = true;
    const keep = Math.min(room, bytes.length);
    if (keep > 0) {
      // Copied: the caller's Buffer may be a slice of a much larger read we must not pin.
      this.held.push(Buffer.from(bytes.subarray(0, keep)));
      this.heldLen += keep;
    }
  }

  private fail(detail: string): void {
    if (this.st === 'failed') return;
    this.st = 'failed';
    const wireBytes = this.msgWire + this.accLen; // with a line or head still being read
    this.reset();
    this.held = [];
    this.heldLen = 0;
    this.h.onError('bad_http', detail, wireBytes);
  }

  private reset(): void {
    this.acc = [];
    this.accLen = 0;
    this.lineLen = 0;
    this.prevByte = -1;
    this.contentLines = 0;
    this.msgWire = 0;
    this.remaining = 0;
    this.sawCr = false;
    this.holdAfter = false;
  }

  // ── line scanning ───────────────────────────────────────────────────────────────────────

  /**
   * Scans for the blank line ending a head / trailer section. Returns the index just after it, or
   * -1 (the bytes seen are kept in acc). Lines end in CRLF or a bare LF (RFC 9112 §2.2 permits
   * recognising LF alone). `skipLeading`: blank lines before the start line are ignored (§2.2).
   */
  private scanBlock(chunk: Buffer, pos: number, limit: number, skipLeading: boolean): number {
    let i = pos;
    for (;;) {
      const lf = chunk.indexOf(LF, i);
      if (lf < 0) {
        this.lineLen += chunk.length - i;
        if (chunk.length > i) this.prevByte = chunk[chunk.length - 1];
        this.keep(chunk, pos, chunk.length, limit);
        return -1;
      }
      const len = this.lineLen + (lf - i);
      const prev = lf > i ? chunk[lf - 1] : this.prevByte;
      this.lineLen = 0;
      this.prevByte = LF;
      i = lf + 1;
      if (len === 0 || (len === 1 && prev === CR)) {
        if (this.contentLines > 0 || !skipLeading) {
          if (this.accLen + (i - pos) > limit) throw new BadHttp('header section too large');
          return i;
        }
      } else this.contentLines++;
      if (this.accLen + (i - pos) > limit) throw new BadHttp('header section too large');
    }
  }

  /** Scans for the end of one line; returns the index after its LF, or -1 (bytes kept in acc). */
  private scanLine(chunk: Buffer, pos: number, limit: number): number {
    const lf = chunk.indexOf(LF, pos);
    if (lf < 0) {
      this.keep(chunk, pos, chunk.length, limit);
      return -1;
    }
    if (this.accLen + (lf + 1 - pos) > limit) throw new BadHttp('chunk-size line too long');
    return lf + 1;
  }

  private keep(chunk: Buffer, from: number, to: number, limit: number): void {
    if (to === from) return;
    if (this.accLen + (to - from) > limit) throw new BadHttp(this.st === 'chunk-size' ? 'chunk-size line too long' : 'header section too large');
    // Copied (small and bounded): pinning every partial read's whole Buffer could hold far more.
    this.acc.push(Buffer.from(chunk.subarray(from, to)));
    this.accLen += to - from;
  }

  /** The complete block: the kept parts plus chunk[pos, end) — no copy when it came in one push. */
  private takeBlock(chunk: Buffer, pos: number, end: number): Buffer {
    const tail = chunk.subarray(pos, end);
    const all = this.acc.length === 0 ? tail : Buffer.concat([...this.acc, tail], this.accLen + tail.length);
    this.acc = [];
    this.accLen = 0;
    this.lineLen = 0;
    this.prevByte = -1;
    this.contentLines = 0;
    return all;
  }
}

/**
 * RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS
 * ext-val ] ). Read from the bytes: an SSE stream is one chunk per event, so this runs per event.
 */
function chunkSize(line: Buffer): number {
  let size = 0;
  let i = 0;
  let significant = 0; // digits from the first non-zero one: at most 13 (2^52, a safe integer); leading zeros are allowed, as llhttp allows them
  for (; i < line.length && significant <= 13; i++) {
    const b = line[i];
    const v = b >= 0x30 && b <= 0x39 ? b - 0x30 : b >= 0x61 && b <= 0x66 ? b - 0x57 : b >= 0x41 && b <= 0x46 ? b - 0x37 : -1;
    if (v < 0) break;
    if (size > 0 || v > 0) significant++;
    size = size * 16 + v;
  }
  let j = i;
  while (j < line.length && (line[j] === 0x20 || line[j] === 0x09)) j++; // BWS
  const lineEnd = (line[j] === CR && line[j + 1] === LF && j + 2 === line.length) || (line[j] === LF && j + 1 === line.length);
  if (i >= 1 && significant <= 13 && (line[j] === 0x3b || lineEnd)) return size;
  const text = line.toString('latin1').replace(/\r?\n$/, '').split(';')[0].replace(/[ \t]+$/, '');
  throw new BadHttp(`bad chunk size: ${clip(text)}`);
}

// ── head text ─────────────────────────────────────────────────────────────────────────────

/** Lines of a head / trailer block without line endings and without leading or trailing blank lines. */
function splitLines(block: Buffer): string[] {
  // Header octets beyond ASCII are rare; show them as UTF-8 when they are, byte-for-char otherwise.
  const text = block.toString(isUtf8(block) ? 'utf8' : 'latin1');
  const lines = text.split('\n');
  for (let k = 0; k < lines.length; k++) {
    let l = lines[k];
    if (l.endsWith('\r')) l = l.slice(0, -1);
    // RFC 9112 §2.2: a bare CR elsewhere is invalid.
    if (l.includes('\r')) throw new BadHttp('bare CR in head');
    lines[k] = l;
  }
  let a = 0;
  while (a < lines.length && lines[a] === '') a++;
  let b = lines.length;
  while (b > a && lines[b - 1] === '') b--;
  return lines.slice(a, b);
}

function parseFields(lines: string[], from: number): Header[] {
  const out: Header[] = [];
  for (let k = from; k < lines.length; k++) {
    const line = lines[k];
    // RFC 9112 §5.2: obs-fold is rejected (we cannot replace it: we never rewrite bytes).
    if (line[0] === ' ' || line[0] === '\t') throw new BadHttp('obs-fold in header section');
    const colon = line.indexOf(':');
    // §5.1: no whitespace between field name and colon.
    if (colon <= 0) throw new BadHttp(`bad header line: ${clip(line)}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new BadHttp(`bad header name: ${clip(name)}`);
    const value = trimOws(line, colon + 1);
    if (BAD_VALUE.test(value)) throw new BadHttp(`bad header value for ${clip(name)}`);
    out.push([name, value]);
  }
  return out;
}

/** line[from..] without leading and trailing OWS (SP / HTAB only, RFC 9110 §5.6.3). */
function trimOws(line: string, from: number): string {
  let a = from;
  let b = line.length;
  while (a < b && (line.charCodeAt(a) === 0x20 || line.charCodeAt(a) === 0x09)) a++;
  while (b > a && (line.charCodeAt(b - 1) === 0x20 || line.charCodeAt(b - 1) === 0x09)) b--;
  return line.slice(a, b);
}

/** RFC 9112 §6.3 item 5: a list of identical values is one length; differing or invalid → error. */
function contentLength(headers: Header[]): number {
  const values = headerValues(headers, 'content-length');
  if (values.length === 0) return 0;
  let len: string | undefined;
  for (const v of values)
    for (const e of v.split(',')) {
      const t = e.trim();
      if (!/^[0-9]{1,15}$/.test(t)) throw new BadHttp(`invalid content-length: ${clip(v)}`);
      if (len !== undefined && Number(len) !== Number(t)) throw new BadHttp('conflicting content-length values');
      len = t;
    }
  const n = Number(len);
  if (!Number.isSafeInteger(n)) throw new BadHttp(`invalid content-length: ${clip(String(len))}`);
  return n;
}

function clip(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 80) + '…' : s);
}
