// Differential fuzzer for WebSocket capture. A seeded generator plays both peers of one
// connection — text (multi-byte UTF-8 split anywhere) and binary messages of 0 to ~256 KiB,
// fragmented, control frames between fragments, client frames masked, permessage-deflate with
// random negotiated parameters compressed by real zlib — and cuts each direction's bytes into
// random reads. The reads go through the real path (WsConnectionTap → CapturePool → worker →
// LMDB); the records read back must be the messages that were sent. The generator is the oracle.
//
// Corruption cases break one direction on purpose, two ways:
//  - modelled: a bad frame, invalid DEFLATE data, invalid UTF-8 or a wrongly masked frame put in
//    the sequence, whose record (and what follows it) the generator predicts exactly;
//  - blind: bytes flipped, inserted or deleted, or the stream cut, at a random offset P. Only the
//    records that ended before P are predicted (exactly); the rest must carry known error codes.
// Either way nothing may throw, hang, or keep memory once the pool has drained, and the bytes
// handed to the tap must come out of it unchanged.
import zlib from 'node:zlib';
import { isUtf8 } from 'node:buffer';
import { setImmediate as turn } from 'node:timers/promises';
import { WsConnectionTap } from '../src/io/ws-tap.js';
import { PREALLOC_MAX } from '../src/io/capture-buffer.js';
import { SyncZlib } from '../src/workers/zlib-sync.js';
import { openStore } from '../src/store/lmdb.js';
import type { CapturePool } from '../src/workers/pool.js';
import type { ErrorCode, WsMessageRecord } from '../src/records.js';

/** sfc32 seeded through splitmix32: fast, and the same sequence on every machine. */
export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next(); this.b = next(); this.c = next(); this.d = next();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** 0 ≤ n < max */
  int(max: number): number { return Math.floor((this.u32() / 2 ** 32) * max); }
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.u32() / 2 ** 32 < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]; }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const x = this.u32();
      b[i] = x;
      if (i + 1 < n) b[i + 1] = x >>> 8;
      if (i + 2 < n) b[i + 2] = x >>> 16;
      if (i + 3 < n) b[i + 3] = x >>> 24;
    }
    return b;
  }
}

/** The seed of case `i` of a run seeded `seed` (printed with any failure: `--replay` runs it alone). */
export function caseSeed(seed: number, i: number): number {
  return new Rng((seed ^ Math.imul(i + 1, 0x27d4eb2f)) >>> 0).u32();
}

// ── The wire ───────────────────────────────────────────────────────────────────────────────

interface Frame {
  fin: boolean;
  rsv: number; // RSV1..3 as the 0x70 bits of byte 0
  opcode: number;
  payload: Buffer; // unmasked
  mask: Buffer | null;
  /** the length field's form (RFC 6455 §5.2 asks for the shortest; receivers accept any) */
  len: 'short' | '16' | '64';
  /** a declared length other than the payload's (oversized-length cases) */
  declared?: number;
  /** raw 64-bit length bytes (a top bit set, past 2^53) */
  len64?: Buffer;
}

function encodeFrame(f: Frame): Buffer {
  const n = f.declared ?? f.payload.length;
  const form = f.len64 ? '64' : n > 0xffff ? '64' : n > 125 && f.len === 'short' ? '16' : f.len;
  const ext = form === '64' ? 8 : form === '16' ? 2 : 0;
  const head = Buffer.alloc(2 + ext + (f.mask ? 4 : 0));
  head[0] = (f.fin ? 0x80 : 0) | f.rsv | f.opcode;
  head[1] = (f.mask ? 0x80 : 0) | (form === '64' ? 127 : form === '16' ? 126 : n);
  if (f.len64) f.len64.copy(head, 2);
  else if (form === '64') {
    head.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    head.writeUInt32BE(n >>> 0, 6);
  } else if (form === '16') head.writeUInt16BE(n, 2);
  if (!f.mask) return Buffer.concat([head, f.payload]);
  f.mask.copy(head, 2 + ext);
  const body = Buffer.from(f.payload);
  for (let i = 0; i < body.length; i++) body[i] ^= f.mask[i & 3];
  return Buffer.concat([head, body]);
}

// ── permessage-deflate, as a sender does it ────────────────────────────────────────────────

export interface DeflateOffer {
  clientNoContextTakeover: boolean;
  serverNoContextTakeover: boolean;
  clientMaxWindowBits?: number;
  serverMaxWindowBits?: number;
}

const TAIL = Buffer.from([0, 0, 0xff, 0xff]);
const STRATEGIES = [zlib.constants.Z_DEFAULT_STRATEGY, zlib.constants.Z_FILTERED, zlib.constants.Z_HUFFMAN_ONLY, zlib.constants.Z_RLE, zlib.constants.Z_FIXED];

/** One direction's compressor (RFC 7692 §7.2.1): its own level, memory, strategy and a window within the agreed one. */
class Sender {
  private z: SyncZlib | null = null;
  /** plaintext of compressed messages, the last 32 KiB: the dictionary of a stream started after a final block */
  private window = Buffer.alloc(0);
  private readonly opts: zlib.ZlibOptions;

  constructor(private readonly rng: Rng, readonly takeover: boolean, agreedBits: number) {
    // a compressor may use a smaller window than agreed; 8 is widened to 9 by zlib for raw streams
    this.opts = { windowBits: rng.chance(0.7) ? agreedBits : rng.range(8, agreedBits), level: rng.range(0, 9), memLevel: rng.range(1, 9), strategy: rng.pick(STRATEGIES) };
  }

  /**
   * One message's payload (RFC 7692 §7.2.1). The plaintext goes in 1–3 pieces, each flushed (as a
   * sender compressing fragment by fragment does), so a payload may hold empty stored blocks.
   * `final`: 'no' ends with a sync flush and strips 00 00 ff ff; 'bare' and 'with00' end the
   * DEFLATE stream with a final block (§7.2.3.3), without or with the empty stored block's 00;
   * 'stored' ends it with a final empty stored block whose last 4 bytes are the ones stripped.
   */
  compress(plain: Buffer, final: 'no' | 'bare' | 'with00' | 'stored'): Buffer {
    if (!this.takeover) this.close();
    // after a final block the stream is over: a new one continues from the window (takeover)
    this.z ??= SyncZlib.open(zlib.createDeflateRaw({ ...this.opts, dictionary: this.takeover && this.window.length ? this.window : undefined }))!;
    const cuts = [0, ...Array.from({ length: this.rng.int(3) }, () => this.rng.int(plain.length + 1)).sort((a, b) => a - b), plain.length];
    const outs: Buffer[] = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const last = i + 2 === cuts.length;
      const flush = last && (final === 'bare' || final === 'with00') ? zlib.constants.Z_FINISH : !last && this.rng.chance(0.2) ? zlib.constants.Z_FULL_FLUSH : zlib.constants.Z_SYNC_FLUSH;
      outs.push(Buffer.from(this.z.write(plain.subarray(cuts[i], cuts[i + 1]), flush, 2 * plain.length + 4096).bytes));
    }
    const out = Buffer.concat(outs);
    let payload: Buffer;
    if (final === 'no' || final === 'stored') {
      if (out.length > 0 && !out.subarray(-4).equals(TAIL)) throw new Error('a flush did not end in 00 00 ff ff');
      if (final === 'stored') payload = Buffer.concat([out, Buffer.from([0x01])]);
      // zlib writes nothing for a flush right after a flush (an empty message): what §7.2.1 makes
      // of that is an empty stored block minus its last 4 bytes (§7.2.3.6: 0x00)
      else payload = out.length ? out.subarray(0, out.length - 4) : Buffer.from([0]);
    } else payload = final === 'with00' ? Buffer.concat([out, Buffer.from([0])]) : out;
    if (final !== 'no') this.close();
    if (this.takeover) this.window = Buffer.concat([this.window, plain]).subarray(-32768);
    return payload;
  }

  close(): void {
    this.z?.close();
    this.z = null;
  }
}

// ── What was sent, and what its record must say ────────────────────────────────────────────

const OPCODE_NAMES: Record<number, WsMessageRecord['opcode']> = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

export interface Expected {
  opcode: number;
  frames: number;
  wireBytes: number;
  compressed: boolean;
  /** offset just past the message's last frame in its direction's bytes */
  end: number;
  size: number;
  /** the bytes the record keeps, as `body` (text) or `bodyBase64` */
  stored: Buffer;
  as: 'text' | 'base64';
  truncated: boolean;
  error?: ErrorCode;
  /** modelled fatal errors and cut streams: only error, seq and opcode are predicted */
  loose?: boolean;
  /** a close frame's payload: the record has its code and reason instead of a body */
  close?: Buffer;
}

/** The things a modelled corruption can put in a sequence. */
const FATAL = ['reserved opcode', 'rsv2', 'rsv3', 'rsv1 misplaced', 'long control', 'fragmented control', 'orphan continuation', 'interleaved data', 'length top bit', 'length past 2^53'] as const;

interface DirectionPlan {
  wire: Buffer;
  expected: Expected[];
  /** blind corruption: records that ended by this offset are predicted; the rest only checked for sanity */
  exactUntil: number;
  /** no frame broke parsing: the records' wireBytes add up to every byte of `wire` */
  whole: boolean;
  what: string[];
}

/** Builds one direction's bytes and the records they must produce, in completion (= seq) order. */
class DirectionBuilder {
  private parts: Buffer[] = [];
  private at = 0;
  readonly expected: Expected[] = [];
  readonly what: string[] = [];
  private sender: Sender | null;
  private desynced = false;
  /** nothing more is sent: after a fatal frame the tap parses nothing, after a cut message nothing is sent */
  stopped = false;
  private vocabulary: string[];

  constructor(private readonly rng: Rng, readonly client: boolean, private readonly deflate: { takeover: boolean; bits: number } | null, private readonly o: CaseOptions, private readonly corrupt: boolean) {
    this.sender = deflate ? new Sender(rng, deflate.takeover, deflate.bits) : null;
    // per-direction words, so messages repeat each other (what context takeover refers back to)
    // U+FEFF: a byte order mark where a text starts is still part of it
    const alphabet = ['a', 'e', 's', 't', 'é', 'ß', '€', '中', '文', '😀', '🧪', '\u0000', '\u2028', '\ufeff', '"', '{', '}', ' ', '\n'];
    this.vocabulary = Array.from({ length: 40 }, () => Array.from({ length: rng.range(1, 12) }, () => rng.pick(alphabet)).join(''));
  }

  private mask(): Buffer | null {
    if (!this.client) return null;
    return this.rng.chance(0.02) ? Buffer.alloc(4) : this.rng.bytes(4);
  }

  private lenForm(): Frame['len'] {
    return this.rng.chance(0.9) ? 'short' : this.rng.pick(['16', '64'] as const);
  }

  private put(f: Frame): number {
    const b = encodeFrame(f);
    this.parts.push(b);
    this.at += b.length;
    return b.length;
  }

  size(): number {
    const r = this.rng.int(100);
    const max = r < 40 ? 32 : r < 75 ? 2048 : r < 93 ? 32 << 10 : 256 << 10;
    return this.rng.int(Math.min(max, this.o.maxSize) + 1);
  }

  text(bytes: number): Buffer {
    const parts: string[] = [];
    let n = 0;
    while (n < bytes) {
      const w = this.rng.chance(0.1) ? JSON.stringify({ type: 'response.output_text.delta', i: this.rng.int(1e6) }) : this.rng.pick(this.vocabulary);
      parts.push(w);
      n += Buffer.byteLength(w);
    }
    return Buffer.from(parts.join(''));
  }

  binary(bytes: number): Buffer {
    if (this.rng.chance(0.5)) return this.rng.bytes(bytes);
    // compressible: runs and repeats
    const b = Buffer.alloc(bytes);
    for (let i = 0; i < bytes;) {
      const run = Math.min(bytes - i, this.rng.range(1, 300));
      if (this.rng.chance(0.5)) b.fill(this.rng.int(256), i, i + run);
      else this.rng.bytes(run).copy(b, i);
      i += run;
    }
    return b;
  }

  /** A ping, pong or close with a valid payload (≤ 125 bytes; a close: a valid code and a UTF-8 reason). */
  control(): void {
    const opcode = this.rng.pick([8, 9, 9, 10, 10]);
    let plain: Buffer;
    if (opcode === 8) {
      plain = this.rng.chance(0.2) ? Buffer.alloc(0) : Buffer.alloc(2);
      if (plain.length) {
        plain.writeUInt16BE(this.rng.pick([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999, this.rng.range(3000, 4999)]), 0);
        let reason = this.text(this.rng.int(40));
        while (reason.length > 123) reason = reason.subarray(0, reason.length - 1);
        if (!isUtf8(reason)) reason = Buffer.from('bye');
        plain = Buffer.concat([plain, reason]);
      }
    } else plain = this.rng.chance(0.5) ? this.text(this.rng.int(126)).subarray(0, 125) : this.rng.bytes(this.rng.int(126));
    const wire = this.put({ fin: true, rsv: 0, opcode, payload: plain, mask: this.mask(), len: 'short' }); // a control frame's length is always 7-bit (§5.5)
    this.expected.push({ opcode, frames: 1, wireBytes: wire, compressed: false, end: this.at, size: plain.length, stored: opcode === 8 ? Buffer.alloc(0) : plain, as: storedAs(opcode, plain), truncated: false, close: opcode === 8 ? plain : undefined });
  }

  /** A text or binary message, maybe compressed, in 1 to many frames with control frames between them. */
  data(): void {
    const opcode = this.rng.chance(0.6) ? 1 : 2;
    const n = this.size();
    const plain = opcode === 1 ? this.text(n) : this.binary(n);
    const compressed = !!this.sender && this.rng.chance(0.85);
    let payload = plain;
    if (compressed) {
      const final = this.rng.chance(0.88) ? 'no' : this.rng.pick(['bare', 'with00', 'stored'] as const);
      payload = this.sender!.compress(plain, final);
    }
    this.frames(opcode, plain, payload, compressed);
  }

  private frames(opcode: number, plain: Buffer, payload: Buffer, compressed: boolean, invalid?: ErrorCode): void {
    const r = this.rng.int(100);
    const count = r < 60 ? 1 : r < 85 ? this.rng.range(2, 4) : r < 97 ? this.rng.range(5, 40) : this.rng.range(41, 300);
    const cuts = [0, ...Array.from({ length: count - 1 }, () => this.rng.int(payload.length + 1)).sort((a, b) => a - b), payload.length];
    let wire = 0;
    for (let f = 0; f < count; f++) {
      if (f > 0 && this.rng.chance(0.15)) this.control();
      if (f > 0 && this.corrupt && this.rng.chance(0.01)) {
        // a fatal frame between fragments ends the open message as bad_frame
        this.fatal(opcode);
        return;
      }
      wire += this.put({ fin: f === count - 1, rsv: f === 0 && compressed ? 0x40 : 0, opcode: f === 0 ? opcode : 0, payload: payload.subarray(cuts[f], cuts[f + 1]), mask: this.mask(), len: this.lenForm() });
    }
    this.expected.push({ opcode, frames: count, wireBytes: wire, compressed, end: this.at, ...this.outcome(opcode, plain, payload, compressed, invalid) });
  }

  /**
   * What the record of a data message keeps, as decode-ws.ts is documented to do: a payload over
   * maxBody is stored as copied (too_large), compressed bytes that cannot be inflated are stored
   * raw, and a lost or failed compressed message desyncs a context-takeover direction.
   * `invalid`: the message is bad on purpose (inflate_failed, invalid_utf8).
   */
  private outcome(opcode: number, plain: Buffer, payload: Buffer, compressed: boolean, invalid?: ErrorCode): Pick<Expected, 'size' | 'stored' | 'as' | 'truncated' | 'error'> {
    const max = this.o.maxBody;
    const takeover = !!this.deflate?.takeover;
    if (payload.length > max) {
      if (compressed && takeover) this.desynced = true;
      return { error: 'too_large', truncated: true, size: payload.length, ...prefix(opcode, payload, max, compressed) };
    }
    if (compressed && (this.desynced || invalid === 'inflate_failed')) {
      const error = this.desynced ? 'desynced' : 'inflate_failed';
      if (takeover) this.desynced = true;
      return { error, truncated: false, size: payload.length, stored: payload, as: 'base64' };
    }
    if (plain.length > max) return { error: 'too_large', truncated: true, size: plain.length, ...prefix(opcode, plain, max, false) };
    return { error: invalid, truncated: false, size: plain.length, stored: plain, as: storedAs(opcode, plain) };
  }

  /** A frame that ends parsing (RFC 6455 §5.2/§5.4/§5.5 violations). `open`: the opcode of the message it interrupts. */
  fatal(open?: number): void {
    const kinds = FATAL.filter((k) => (open ? k !== 'orphan continuation' : k !== 'interleaved data') && (k !== 'rsv1 misplaced' || this.deflate));
    const kind = this.rng.pick(kinds);
    const f: Frame = { fin: true, rsv: 0, opcode: 2, payload: this.rng.bytes(this.rng.int(20)), mask: this.mask(), len: 'short' };
    if (kind === 'reserved opcode') f.opcode = this.rng.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
    else if (kind === 'rsv2') f.rsv = 0x20;
    else if (kind === 'rsv3') f.rsv = 0x10;
    else if (kind === 'rsv1 misplaced') Object.assign(f, { rsv: 0x40, opcode: this.rng.pick([0, 8, 9, 10].filter((o) => o !== 0 || open)) });
    else if (kind === 'long control') Object.assign(f, { opcode: this.rng.pick([8, 9, 10]), payload: this.rng.bytes(this.rng.range(126, 300)) });
    else if (kind === 'fragmented control') Object.assign(f, { opcode: this.rng.pick([8, 9, 10]), fin: false });
    else if (kind === 'orphan continuation') f.opcode = 0;
    else if (kind === 'interleaved data') f.opcode = this.rng.pick([1, 2]);
    else if (kind === 'length top bit') f.len64 = Buffer.concat([Buffer.from([0x80 | this.rng.int(128)]), this.rng.bytes(7)]);
    else f.len64 = Buffer.concat([Buffer.from([this.rng.int(128), 0x20 | this.rng.int(0xe0)]), this.rng.bytes(6)]); // ≥ 2^53
    // 'rsv1 misplaced' without deflate is reported as RSV1 without permessage-deflate; either way fatal
    this.put(f);
    this.what.push(`fatal ${kind} at ${this.at}`);
    this.expected.push(loose(open ?? f.opcode, this.at, 'bad_frame'));
    this.stopped = true;
  }

  /** A compressed message whose DEFLATE data is invalid (block type 11): inflate_failed; a takeover direction desyncs. */
  badDeflate(): void {
    const payload = Buffer.concat([Buffer.from([0x06 | this.rng.int(2)]), this.rng.bytes(this.rng.int(100))]);
    this.what.push(`invalid deflate at ${this.at}`);
    this.frames(this.rng.pick([1, 2]), payload, payload, true, 'inflate_failed');
  }

  /** A text message that is not UTF-8: invalid_utf8, its bytes kept. */
  badUtf8(): void {
    const plain = Buffer.concat([this.text(this.rng.int(50)), Buffer.from([this.rng.pick([0xc0, 0xff, 0xed, 0x80])]), this.text(this.rng.int(50))]);
    this.what.push(`invalid utf-8 at ${this.at}`);
    const compressed = !!this.sender && this.rng.chance(0.5);
    const payload = compressed ? this.sender!.compress(plain, 'no') : plain;
    this.frames(1, plain, payload, compressed, 'invalid_utf8');
  }

  /** A client frame without a mask, or a server frame with one: flagged bad_frame, still decoded, parsing goes on. */
  wrongMask(): void {
    const plain = this.rng.bytes(this.rng.int(200));
    const wire = this.put({ fin: true, rsv: 0, opcode: 2, payload: plain, mask: this.client ? null : this.rng.bytes(4), len: 'short' });
    this.what.push(`wrong mask at ${this.at - wire}`);
    this.expected.push({ opcode: 2, frames: 1, wireBytes: wire, compressed: false, end: this.at, error: 'bad_frame', size: plain.length, stored: plain, as: 'base64', truncated: false });
  }

  /** An oversized declared length: what follows (up to ~2 MiB here) is its payload, cut by the connection's end. */
  oversized(): void {
    const declared = this.rng.chance(0.5) ? 2 ** 32 + this.rng.int(1 << 20) : this.rng.range(4 << 20, 2 ** 31);
    const rest = this.binary(this.rng.chance(0.3) ? this.rng.int(2 << 20) : this.rng.int(1024));
    this.put({ fin: true, rsv: 0, opcode: 2, payload: rest, mask: this.mask(), len: '64', declared });
    this.what.push(`oversized length ${declared} at ${this.at}`);
    this.expected.push(loose(2, Infinity, 'truncated_stream'));
    this.stopped = true; // whatever follows is its payload
  }

  /** Unfinished: a fragmented message the connection's end cuts (truncated_stream). */
  unfinished(): void {
    const payload = this.rng.bytes(this.rng.int(100));
    this.put({ fin: false, rsv: 0, opcode: 2, payload, mask: this.mask(), len: 'short' });
    this.what.push(`unfinished message at ${this.at}`);
    this.expected.push(loose(2, Infinity, 'truncated_stream'));
    this.stopped = true;
  }

  finish(): Buffer {
    this.sender?.close();
    return Buffer.concat(this.parts);
  }
}

function loose(opcode: number, end: number, error: ErrorCode): Expected {
  return { opcode, frames: 0, wireBytes: 0, compressed: false, end, size: 0, stored: Buffer.alloc(0), as: 'base64', truncated: false, error, loose: true };
}

/** Binary is base64; text and ping/pong data are text when they are UTF-8 (body.ts). */
function storedAs(opcode: number, bytes: Buffer): Expected['as'] {
  return opcode !== 2 && isUtf8(bytes) ? 'text' : 'base64';
}

/**
 * The first `max` bytes of a message stored truncated: compressed bytes raw, binary as is, text
 * cut before a character that does not fit (so it stays text).
 */
function prefix(opcode: number, bytes: Buffer, max: number, compressed: boolean): Pick<Expected, 'stored' | 'as'> {
  if (compressed || opcode !== 1) return { stored: bytes.subarray(0, max), as: 'base64' };
  let n = max;
  while (n > 0 && (bytes[n] & 0xc0) === 0x80) n--; // bytes[n] continues the character before it
  return { stored: bytes.subarray(0, n), as: 'text' };
}


// ── A case ────────────────────────────────────────────────────────────────────────────────

export interface FuzzCase {
  seed: number;
  extensionHeader: string | null;
  client: DirectionPlan;
  server: DirectionPlan;
  /** each direction's bytes, cut as reads: [direction, start, end] in delivery order */
  reads: ['client' | 'server', number, number][];
  describe: string;
}

export interface CaseOptions {
  /** largest message payload */
  maxSize: number;
  /** share of cases with a corruption, 0..1 */
  corruptRate: number;
  /** messages per direction at most */
  maxMessages: number;
  /** the pool's --max-body (at least 256: control frames and modelled bad messages stay whole) */
  maxBody: number;
}

/** 8..15, 8 (zlib's quirk) and 9 more often than the others */
function windowBits(rng: Rng): number {
  return rng.chance(0.3) ? rng.pick([8, 9]) : rng.range(8, 15);
}

export function generateCase(seed: number, o: CaseOptions): FuzzCase {
  const rng = new Rng(seed);
  let header: string | null = null;
  const params: DeflateOffer | null = rng.chance(0.6) ? {
    clientNoContextTakeover: rng.chance(0.3), serverNoContextTakeover: rng.chance(0.3),
    clientMaxWindowBits: rng.chance(0.5) ? windowBits(rng) : undefined, serverMaxWindowBits: rng.chance(0.5) ? windowBits(rng) : undefined,
  } : null;
  if (params) {
    const p = ['permessage-deflate'];
    const v = (n: number) => (rng.chance(0.2) ? `"${n}"` : String(n)); // RFC 7692 §7.1: a quoted value is the same value
    if (params.serverNoContextTakeover) p.push('server_no_context_takeover');
    if (params.clientNoContextTakeover) p.push('client_no_context_takeover');
    if (params.serverMaxWindowBits) p.push(`server_max_window_bits=${v(params.serverMaxWindowBits)}`);
    if (params.clientMaxWindowBits) p.push(`client_max_window_bits=${v(params.clientMaxWindowBits)}`);
    header = p.join(rng.pick(['; ', ';', ' ; ']));
  }
  const corrupt = rng.chance(o.corruptRate);
  const blind = corrupt && rng.chance(0.5);
  const victim = rng.chance(0.5) ? 'client' : 'server';
  const plan = (dir: 'client' | 'server'): DirectionPlan => {
    const deflate = params && { takeover: !(dir === 'client' ? params.clientNoContextTakeover : params.serverNoContextTakeover), bits: (dir === 'client' ? params.clientMaxWindowBits : params.serverMaxWindowBits) ?? 15 };
    const modelled = corrupt && !blind && dir === victim;
    const b = new DirectionBuilder(rng, dir === 'client', deflate, o, modelled);
    const count = rng.int(o.maxMessages + 1);
    for (let i = 0; i < count && !b.stopped; i++) {
      if (modelled && rng.chance(0.1)) {
        const bad = rng.int(6);
        if (bad === 0) b.fatal();
        else if (bad === 1 && deflate) b.badDeflate();
        else if (bad === 2) b.badUtf8();
        else if (bad === 3) b.wrongMask();
        else if (bad === 4) b.oversized();
        else b.unfinished();
      } else if (rng.chance(0.15)) b.control();
      else b.data();
    }
    let wire = b.finish();
    let exactUntil = Infinity;
    let whole = !b.what.some((w) => w.startsWith('fatal'));
    if (blind && dir === victim && wire.length > 0) {
      const at = rng.int(wire.length);
      const op = rng.pick(['flip', 'insert', 'delete', 'truncate', 'overwrite'] as const);
      const junk = rng.bytes(rng.range(1, 16));
      if (op === 'flip') (wire = Buffer.from(wire))[at] ^= 1 << rng.int(8);
      else if (op === 'insert') wire = Buffer.concat([wire.subarray(0, at), junk, wire.subarray(at)]);
      else if (op === 'delete') wire = Buffer.concat([wire.subarray(0, at), wire.subarray(at + junk.length)]);
      else if (op === 'truncate') wire = wire.subarray(0, at);
      else wire = Buffer.concat([wire.subarray(0, at), junk, wire.subarray(at + junk.length)]);
      b.what.push(`blind ${op} at ${at} (${junk.length} bytes)`);
      exactUntil = at;
      whole &&= op === 'truncate';
    }
    return { wire, expected: b.expected, exactUntil, whole, what: b.what };
  };
  const client = plan('client');
  const server = plan('server');
  const reads = interleave<FuzzCase['reads'][number]>(rng, cut(rng, client.wire.length).map((r) => ['client', ...r]), cut(rng, server.wire.length).map((r) => ['server', ...r]));
  const describe = `deflate ${header ?? 'off'}; ${client.expected.length}/${server.expected.length} messages, ${client.wire.length}/${server.wire.length} bytes, ${reads.length} reads${[...client.what.map((w) => ` client ${w}`), ...server.what.map((w) => ` server ${w}`)].join(';')}`;
  return { seed, extensionHeader: header, client, server, reads, describe };
}

/** A direction's bytes cut into reads as TCP delivers them: 1 byte to 64 KiB, in one of a few habits per case. */
function cut(rng: Rng, n: number): [number, number][] {
  const habit = n > 256 << 10 ? rng.int(3) + 1 : rng.int(4);
  const next = () => (habit === 0 ? rng.range(1, 16) : habit === 1 ? rng.range(1, 1500) : habit === 2 ? rng.pick([1448, 4096, 16384, 65536]) : rng.range(1, 65536));
  const out: [number, number][] = [];
  for (let at = 0; at < n;) {
    const e = Math.min(n, at + next());
    out.push([at, e]);
    at = e;
  }
  return out;
}

function interleave<T>(rng: Rng, a: T[], b: T[]): T[] {
  const out: T[] = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) out.push(j >= b.length || (i < a.length && rng.chance(0.5)) ? a[i++] : b[j++]);
  return out;
}

// ── Running and checking ───────────────────────────────────────────────────────────────────

export interface Failure { seed: number; describe: string; problem: string }

const KNOWN: ReadonlySet<string> = new Set<ErrorCode>(['bad_frame', 'inflate_failed', 'invalid_utf8', 'desynced', 'truncated_stream', 'too_large']);

/** Feeds one case through a tap on `pool`, yielding between reads as a socket would. Throws what the tap throws. */
async function feed(pool: CapturePool, c: FuzzCase, conn: string, maxBody: number, memoryBound: () => number): Promise<string | null> {
  const tap = new WsConnectionTap({
    origin: { conn, host: 'fuzz.test', port: 443, scheme: 'wss', path: '/fuzz' }, upgrade: `u-${conn}`,
    responseHeaders: c.extensionHeader ? [['Sec-WebSocket-Extensions', c.extensionHeader]] : [], pool, maxBody,
  });
  let since = 0;
  let reads = 0;
  for (const [dir, s, e] of c.reads) {
    const chunk = (dir === 'client' ? c.client : c.server).wire.subarray(s, e);
    if (dir === 'client') tap.fromClient(chunk);
    else tap.fromServer(chunk);
    if (pool.memoryBytes > memoryBound()) return `capture memory ${pool.memoryBytes} bytes over the bound ${memoryBound()}`;
    since += chunk.length;
    // the next read comes on a later turn, as from a socket (the pool's lanes post meanwhile)
    if (since >= 32 << 10 || ++reads % 64 === 0) {
      since = 0;
      await turn();
    }
  }
  tap.close();
  return null;
}

function bodyOf(r: WsMessageRecord): Buffer | null {
  return r.body !== undefined ? Buffer.from(r.body) : r.bodyBase64 !== undefined ? Buffer.from(r.bodyBase64, 'base64') : null;
}

/** What is wrong with record `r` as the capture of `e` (null: nothing). */
function mismatch(r: WsMessageRecord, e: Expected, dir: 'client' | 'server'): string | null {
  const name = OPCODE_NAMES[e.opcode] ?? 'binary';
  if (r.opcode !== name) return `opcode ${r.opcode}, sent ${name}`;
  if ((r.error ?? null) !== (e.error ?? null)) return `error ${r.error} (${r.errorDetail ?? ''}), expected ${e.error ?? 'none'}`;
  if (e.loose) return null;
  const kind = e.opcode >= 8 ? 'WS_CTRL' : dir === 'client' ? 'WS_REQ' : 'WS_RESP';
  if (r.kind !== kind || r.direction !== dir) return `kind ${r.kind}/${r.direction}`;
  if (r.compressed !== e.compressed) return `compressed ${r.compressed}, sent ${e.compressed}`;
  if (r.frames !== e.frames) return `frames ${r.frames}, sent ${e.frames}`;
  if (r.wireBytes !== e.wireBytes) return `wireBytes ${r.wireBytes}, sent ${e.wireBytes}`;
  if (r.size !== e.size) return `size ${r.size}, expected ${e.size}`;
  if (r.truncated !== e.truncated) return `truncated ${r.truncated}, expected ${e.truncated}`;
  if (e.close) {
    const code = e.close.length ? e.close.readUInt16BE(0) : undefined;
    const reason = e.close.length ? e.close.subarray(2).toString() : undefined;
    if (r.closeCode !== code || r.closeReason !== reason) return `close ${r.closeCode} ${JSON.stringify(r.closeReason)}, sent ${code} ${JSON.stringify(reason)}`;
  }
  const b = bodyOf(r) ?? Buffer.alloc(0);
  if (!b.equals(e.stored)) return `stored bytes differ (${b.length} stored, ${e.stored.length} expected)`;
  if (e.stored.length && (r.body !== undefined) !== (e.as === 'text')) return `stored as ${r.body !== undefined ? 'text' : 'base64'}, expected ${e.as}`;
  return null;
}

/** Checks one direction's records against its plan. */
function checkDirection(recs: WsMessageRecord[], p: DirectionPlan, dir: 'client' | 'server', pressure: boolean): string | null {
  for (let i = 0; i < recs.length; i++) {
    const r = recs[i];
    if (pressure ? i > 0 && r.seq <= recs[i - 1].seq : r.seq !== i) return `${dir}: seq ${r.seq} at position ${i}`;
    if (r.error && !KNOWN.has(r.error) && !(pressure && r.error === 'queue_full')) return `${dir} #${i}: error ${r.error} (${r.errorDetail ?? ''})`;
    if (r.errorDetail?.startsWith('internal')) return `${dir} #${i}: ${r.errorDetail}`;
  }
  if (pressure) return underPressure(recs, p, dir);
  const wireBytes = recs.reduce((n, r) => n + r.wireBytes, 0);
  if (p.whole ? wireBytes !== p.wire.length : wireBytes > p.wire.length) return `${dir}: records account for ${wireBytes} wire bytes of ${p.wire.length}`;
  const exact = p.expected.filter((e) => e.end <= p.exactUntil);
  if (p.exactUntil === Infinity && recs.length !== exact.length) return `${dir}: ${recs.length} records, ${exact.length} messages sent`;
  if (recs.length < exact.length) return `${dir}: ${recs.length} records, ${exact.length} messages sent before the corruption`;
  for (let i = 0; i < exact.length; i++) {
    const m = mismatch(recs[i], exact[i], dir);
    if (m) return `${dir} #${i}: ${m}`;
  }
  return null;
}

/**
 * Over the capture memory bound a message may be recorded without its payload (queue_full) or,
 * far over it, not at all; after a compressed one, later compressed messages may be desynced.
 * Every other record is exact.
 */
function underPressure(recs: WsMessageRecord[], p: DirectionPlan, dir: 'client' | 'server'): string | null {
  const bySeq = new Map(recs.map((r) => [r.seq, r]));
  if (recs.length && recs[recs.length - 1].seq >= p.expected.length) return `${dir}: seq ${recs[recs.length - 1].seq} of ${p.expected.length} messages`;
  let lost = false; // a compressed message's bytes are gone: later compressed ones may not inflate
  for (const [i, e] of p.expected.entries()) {
    const r = bySeq.get(i);
    if (!r || r.error === 'queue_full') {
      lost ||= e.compressed;
      continue;
    }
    if (lost && e.compressed && r.error === 'desynced') continue;
    const m = mismatch(r, e, dir);
    if (m) return `${dir} #${i}: ${m}`;
  }
  return null;
}

export interface RunStats { cases: number; messages: number; bytes: number; errors: Record<string, number> }

/**
 * Runs `cases` concurrently on `pool` (one connection each), then checks every record in the
 * pool's store. `maxBody` is the pool's.
 */
export async function runCases(pool: CapturePool, dataDir: string, cases: FuzzCase[], stats: RunStats, pressure = false, drainTimeoutMs = 60_000): Promise<Failure[]> {
  const maxBody = pool.opts.maxBody;
  const failures: Failure[] = [];
  const fail = (c: FuzzCase, problem: string) => failures.push({ seed: c.seed, describe: c.describe, problem });
  const copies = cases.map((c) => [Buffer.from(c.client.wire), Buffer.from(c.server.wire)]);
  const conns = cases.map((c) => `fuzz-${c.seed.toString(16)}-${Math.random().toString(36).slice(2, 8)}`);
  // Bytes in flight are bounded by what was read (the copies) plus one preallocation per open
  // capture (PREALLOC_MAX, for a header alone) and per-item overhead; far past that is a leak.
  const pushed = cases.reduce((n, c) => n + c.client.wire.length + c.server.wire.length, 0);
  // Under a small --max-capture-memory: 1/8 over it, plus a message per direction (pool.ts).
  const largest = (c: FuzzCase) => Math.max(0, ...[...c.client.expected, ...c.server.expected].map((e) => e.wireBytes));
  const pressed = (pool.opts.maxCaptureMemory * 9) / 8 + cases.reduce((n, c) => n + 2 * (largest(c) + PREALLOC_MAX), 0);
  const bound = () => (pressure ? pressed : 2 * pushed + 4 * cases.length * PREALLOC_MAX + (1 << 20));
  await Promise.all(cases.map(async (c, i) => {
    try {
      const p = await feed(pool, c, conns[i], maxBody, bound);
      if (p) fail(c, p);
    } catch (e) {
      fail(c, `the tap threw: ${(e as Error).stack}`);
    }
  }));
  let timer: NodeJS.Timeout | undefined;
  const drained = await Promise.race([pool.drain().then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), drainTimeoutMs)))]);
  clearTimeout(timer);
  if (!drained) {
    for (const c of cases) fail(c, `the pool did not drain in ${drainTimeoutMs} ms (hang?)`);
    return failures;
  }
  if (pool.memoryBytes !== 0 || pool.queueDepth !== 0) failures.push({ seed: cases[0]?.seed ?? 0, describe: `a group of ${cases.length} cases`, problem: `after drain: ${pool.memoryBytes} capture bytes held, ${pool.queueDepth} items outstanding` });
  const store = openStore(dataDir, { readOnly: true });
  try {
    cases.forEach((c, i) => {
      if (!copies[i][0].equals(c.client.wire) || !copies[i][1].equals(c.server.wire)) fail(c, 'the tap altered the bytes it was handed');
      const recs = store.wsMessages(conns[i]).sort((a, b) => a.seq - b.seq);
      for (const dir of ['client', 'server'] as const) {
        const problem = checkDirection(recs.filter((r) => r.direction === dir), c[dir], dir, pressure);
        if (problem) fail(c, problem);
      }
      for (const r of recs) if (r.error) stats.errors[r.error] = (stats.errors[r.error] ?? 0) + 1;
      stats.cases++;
      stats.messages += recs.length;
      stats.bytes += c.client.wire.length + c.server.wire.length;
    });
  } finally {
    await store.close();
  }
  return failures;
}
