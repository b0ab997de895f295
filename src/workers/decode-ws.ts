// Worker side of WebSocket capture, stateless: one batch of one direction's messages in, records
// out. What carries over between batches lives with the lane: a context-takeover direction's DEFLATE
// window in shared memory (deflate-window.ts), advanced in place, and whether the direction lost
// sync, which travels in the task and comes back in the result.
import zlib from 'node:zlib';
import { endianness } from 'node:os';
import type { WsBatchTask } from './tasks.js';
import type { ErrorCode, WsMessageRecord, WsOpcodeName } from '../records.js';
import type { MetricDeltas } from '../metrics.js';
import { LAZY_FROM, assignBody, binaryFields, bodyFields, decodeText, toBase64, type BodyFields } from './body.js';
import { SyncZlib } from './zlib-sync.js';
import { DeflateWindow, allocateWindow } from './deflate-window.js';
import { heldBytes } from './decoded-budget.js';

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const LITTLE_ENDIAN = endianness() === 'LE';
const OPCODES: Record<number, WsOpcodeName> = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

/** Capture errors that mean the message's payload bytes are not all here. */
const LOST: ReadonlySet<ErrorCode | undefined> = new Set<ErrorCode | undefined>(['queue_full', 'too_large', 'truncated_stream', 'worker_error']);
/** Decode-time errors counted as capture_dropped_total{reason}. */
const DROP_REASONS: ReadonlySet<string> = new Set(['queue_full', 'too_large', 'desynced', 'worker_error']);

export interface WsBatchOutcome {
  records: WsMessageRecord[];
  desynced: boolean;
  metrics: MetricDeltas;
}

/**
 * XORs client frames' payloads with their keys, in place (RFC 6455 §5.3). The key index counts from
 * each frame's first payload byte, so every frame is its own run. Bytes are processed 32 bits at a
 * time: align to a 4-byte boundary, rotate the key to that phase, then XOR whole words.
 */
export function unmask(bytes: Uint8Array, masks: number[] | undefined, copied: number): void {
  if (!masks) return;
  for (let f = 0; f + 2 < masks.length; f += 3) {
    const start = masks[f];
    const end = Math.min(copied, start + masks[f + 1]);
    const key = masks[f + 2] >>> 0;
    if (start >= end || key === 0) continue;
    const k = [key >>> 24, (key >>> 16) & 0xff, (key >>> 8) & 0xff, key & 0xff];
    let i = start;
    // leading bytes up to a word boundary of the underlying buffer
    while (i < end && ((bytes.byteOffset + i) & 3) !== 0) {
      bytes[i] ^= k[(i - start) & 3];
      i++;
    }
    const words = (end - i) >>> 2;
    if (words > 0 && LITTLE_ENDIAN) {
      const p = (i - start) & 3;
      const w = (k[p] | (k[(p + 1) & 3] << 8) | (k[(p + 2) & 3] << 16) | (k[(p + 3) & 3] << 24)) | 0;
      const u32 = new Int32Array(bytes.buffer, bytes.byteOffset + i, words);
      for (let j = 0; j < words; j++) u32[j] ^= w;
      i += words << 2;
    }
    for (; i < end; i++) bytes[i] ^= k[(i - start) & 3];
  }
}

function inc(m: Record<string, number> | undefined, k: string): Record<string, number> {
  const o = m ?? {};
  o[k] = (o[k] ?? 0) + 1;
  return o;
}

/** RFC 6455 §7.4.1/§7.4.2: codes an endpoint may send in a close frame (1004–1006 and 1015 are reserved for local use). */
function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/**
 * Inflate output bound. With context takeover the whole plaintext must be produced to know the next
 * window, even when only maxBody of it is stored; beyond this bound the direction gives up (desynced).
 */
export function inflateCap(maxBody: number): number {
  return Math.min(Math.max(2 * maxBody, 32 << 20), 1 << 30);
}

/**
 * Persistent inflaters, one per context-takeover direction this worker saw last, so a message costs
 * an inflate instead of building a zlib stream and loading a 32 KiB dictionary (measured ~30–80 µs
 * per 1 KiB message with a fresh inflateRawSync). Reuse is exact only when nothing has touched the
 * lane's window since this inflater produced it (same stamp): after a sync flush an inflater's
 * whole state is its window. Any other case (another worker decoded the last batch, a miss, an
 * error, a message that ended its DEFLATE stream) starts fresh from the window as dictionary.
 * Bounded; evicted inflaters are closed.
 */
const MAX_INFLATERS = 128;
interface CachedInflater { z: SyncZlib; stamp: string }
const inflaters = new Map<string, CachedInflater>();

/** An inflater whose state equals `window` as dictionary; null when this Node hides zlib's internals. */
function claimInflater(key: string, window: DeflateWindow, cap: number): SyncZlib | null {
  const c = inflaters.get(key);
  if (c) {
    inflaters.delete(key);
    if (c.stamp === window.stamp) return c.z;
    c.z.close();
  }
  return openInflater(window, cap);
}

function openInflater(window: DeflateWindow | null, cap: number): SyncZlib | null {
  const dictionary = window && window.length > 0 ? window.bytes() : undefined;
  const stream = zlib.createInflateRaw({ windowBits: 15, maxOutputLength: cap, dictionary });
  const z = SyncZlib.open(stream);
  if (!z) stream.close();
  return z;
}

function keepInflater(key: string, z: SyncZlib, window: DeflateWindow): void {
  inflaters.set(key, { z, stamp: window.stamp });
  if (inflaters.size > MAX_INFLATERS) {
    const [oldest, c] = inflaters.entries().next().value as [string, CachedInflater];
    inflaters.delete(oldest);
    c.z.close();
  }
}

/**
 * RFC 7692 §7.2.2 inflate of one message (tail appended); RangeError when over `cap`. A small
 * message's plaintext is a view of the inflater's scratch space, valid until its next write:
 * everything made of it (the window, the body string) is a copy, and a record never keeps bytes
 * shorter than LAZY_FROM (body.ts); bigger output is a buffer of its own.
 *
 * `ended`: the message ended its DEFLATE stream with a final block, which RFC 7692 §7.2.3.3 allows
 * as a flush; the inflater then takes no more input, so the next message needs a new one. null
 * when `z`'s stream had already ended before this message and read none of it.
 */
function inflateMessage(z: SyncZlib | null, input: Uint8Array, window: DeflateWindow | null, cap: number): { plain: Uint8Array; ended: boolean } | null {
  if (!z) {
    // a new inflater per message: a stream's end carries nothing over (but bytes after it go unseen)
    const dictionary = window && window.length > 0 ? window.bytes() : undefined;
    try {
      return { plain: zlib.inflateRawSync(input, { windowBits: 15, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: cap, dictionary }), ended: false };
    } catch (e) {
      // Over the bound the public call keeps nothing: inflated again, driven as the kept inflaters
      // are, the error carries the message's start. (Only then: a stream per message costs ~3×.)
      const again = (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? openInflater(window, cap) : null;
      if (!again) throw e;
      try {
        return inflateMessage(again, input, window, cap);
      } finally {
        again.close();
      }
    }
  }
  const r = z.write(input, zlib.constants.Z_SYNC_FLUSH, cap, LAZY_FROM);
  // (the output so far goes with the error: its start is what a record over --max-body keeps)
  if (r.overflow) throw Object.assign(new RangeError(`inflated size over ${cap} bytes`), { code: 'ERR_BUFFER_TOO_LARGE', partial: r.bytes });
  if (r.ended && r.unread === input.length) return null;
  if (r.ended && !onlyFlushAfterEnd(input, r.unread)) {
    throw new Error(`${r.unread - TAIL.length} bytes after the end of the DEFLATE stream (a final block) within the message`);
  }
  return { plain: r.bytes, ended: r.ended };
}

/**
 * After a final block a sender still appends the empty stored block of RFC 7692 §7.2.1 step 2 and
 * strips its last 4 bytes (the §7.2.3.3 example ends f3 48 cd c9 c9 07 00 | 00), so at most that
 * block's header byte (BTYPE 00) and our tail are left unread. More is data §7.2.2 cannot
 * decompress as part of the message: one DEFLATE stream ends at its final block.
 */
function onlyFlushAfterEnd(input: Uint8Array, unread: number): boolean {
  return unread <= TAIL.length || (unread === TAIL.length + 1 && (input[input.length - unread] & 0b110) === 0);
}

/** Inflate input (payload + tail) is copied here rather than into a new buffer per message (it is read synchronously). */
const INPUT_REUSE_MAX = 64 << 10;
let inputSpace = new Uint8Array(4096);

function withTail(bytes: Uint8Array): Uint8Array {
  const n = bytes.length + TAIL.length;
  if (n > inputSpace.length) {
    if (n > INPUT_REUSE_MAX) {
      const own = new Uint8Array(n);
      own.set(bytes, 0);
      own.set(TAIL, bytes.length);
      return own;
    }
    inputSpace = new Uint8Array(Math.min(INPUT_REUSE_MAX, Math.max(n, 2 * inputSpace.length)));
  }
  inputSpace.set(bytes, 0);
  inputSpace.set(TAIL, bytes.length);
  return inputSpace.subarray(0, n);
}

/** A run of a batch's records, from its message `first` on, and the decoded bytes they hold (decoded-budget.ts). */
export interface WsBatchPart {
  records: WsMessageRecord[];
  first: number;
  bytes: number;
}

/** The whole batch at once (tests, benches): its parts joined. */
export function decodeWsBatch(task: WsBatchTask, nextId: () => string): WsBatchOutcome {
  const parts = decodeWsParts(task, nextId, () => false);
  const records: WsMessageRecord[] = [];
  for (let r = parts.next(); ; r = parts.next()) {
    records.push(...r.value.records);
    if (r.done) return { records, desynced: r.value.desynced, metrics: r.value.metrics };
  }
}

/**
 * Decodes a batch a part at a time: a part ends after the record whose decoded bytes, with the
 * part's before it, make `full(bytes)` true, so the caller can commit it (and let its memory go)
 * before the rest is decoded. The last part comes as the return value, with the batch's outcome.
 * The direction's state (window, inflater, desync) carries across parts.
 */
export function* decodeWsParts(task: WsBatchTask, nextId: () => string, full: (bytes: number) => boolean): Generator<WsBatchPart, WsBatchPart & Omit<WsBatchOutcome, 'records'>> {
  const metrics: MetricDeltas = {};
  let records: WsMessageRecord[] = [];
  let first = 0;
  let partBytes = 0;
  const deflate = task.deflate;
  const takeover = !!deflate?.contextTakeover;
  // The dictionary is the sender's agreed window, shared with the lane (a task built without one,
  // e.g. by a test, gets a fresh one).
  let window: DeflateWindow | null = takeover ? new DeflateWindow(task.window ?? allocateWindow(deflate!.windowBits)) : null;
  let desynced = takeover && task.desynced;
  const cap = inflateCap(task.maxBody);
  const laneKey = `${task.origin.conn}:${task.direction}`;
  let z: SyncZlib | null = null; // this batch's persistent inflater (context takeover only)
  let kept = false;

  try {
    for (let i = 0; i < task.messages.length; i++) {
      const m = task.messages[i];
      const name = OPCODES[m.opcode] ?? 'binary'; // reserved opcodes only reach here with error bad_frame
      const control = m.opcode >= 8;
      const compressed = !control && m.rsv1 && !!deflate;
      const rec: WsMessageRecord = {
        id: nextId(),
        ts: m.ts,
        kind: control ? 'WS_CTRL' : task.direction === 'client' ? 'WS_REQ' : 'WS_RESP',
        conn: task.origin.conn,
        host: task.origin.host,
        port: task.origin.port,
        scheme: task.origin.scheme,
        path: task.origin.path,
        upgrade: task.upgrade,
        seq: m.seq,
        direction: task.direction,
        opcode: name,
        compressed,
        frames: m.frames,
        wireBytes: m.wireBytes,
        size: m.payloadBytes,
        truncated: false,
      };
      if (m.error) rec.error = m.error;
      if (m.errorDetail) rec.errorDetail = m.errorDetail;

      const offset = m.payloadOffset ?? 0;
      const copied = m.payload ? Math.max(0, Math.min(m.copiedBytes, m.payload.byteLength - offset)) : 0;
      const bytes = m.payload ? new Uint8Array(m.payload, offset, copied) : new Uint8Array(0);
      // A slab region is borrowed for this task only: what a record keeps of it must be a copy.
      const borrowed = m.payload instanceof SharedArrayBuffer;
      unmask(bytes, m.masks, copied);
      const lost = LOST.has(m.error) || (!m.payload && m.payloadBytes > 0) || copied < m.payloadBytes || m.cut === true;

      let plain: Uint8Array | null = null;
      if (lost) {
        // Not all payload bytes are here. RFC 7692 §6: only compressed messages pass through the
        // sender's LZ77 window, so losing an UNcompressed message leaves the window intact; losing a
        // compressed one on a context-takeover direction breaks every later compressed message.
        if (compressed && takeover) {
          desynced = true;
          window = null;
        }
        // a message cut by the connection's end is incomplete even when every byte seen was copied
        rec.truncated = copied < m.payloadBytes || m.error === 'truncated_stream' || m.cut === true;
      } else if (compressed && desynced) {
        rec.error ??= 'desynced';
      } else if (compressed) {
        const input = withTail(bytes);
        try {
          // RFC 7692 §7.2.2: append 00 00 ff ff and raw-inflate. The carried window is the dictionary
          // (exact: the sender's LZ77 window holds exactly this direction's earlier compressed
          // plaintext). windowBits 15 is always safe: a smaller agreed window only limits how far back
          // the sender refers, which a larger inflate window covers.
          if (window) z ??= claimInflater(laneKey, window, cap);
          let r = inflateMessage(z, input, window, cap);
          if (!r) {
            // The previous message's final block was an empty stored block whose length fields are
            // the tail, so its stream's end showed only now; its plaintext is in the window already.
            z!.close();
            z = openInflater(window!, cap);
            r = inflateMessage(z, input, window, cap)!;
          }
          plain = r.plain;
          if (r.ended) {
            // The window carries over the stream's end (the next message, a new stream, may refer
            // back into this one's plaintext): the next message starts from it. A lent `plain`
            // stays valid: nothing writes to this inflater's scratch space again.
            z?.close();
            z = null;
          }
        } catch (e) {
          z?.close(); // its state is unknown after a failure
          z = null;
          const err = e as NodeJS.ErrnoException;
          const tooBig = err.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError;
          rec.error ??= tooBig ? 'too_large' : 'inflate_failed';
          rec.errorDetail ??= tooBig ? `inflated size over ${cap} bytes` : err.message;
          rec.truncated = tooBig;
          if (!tooBig) metrics.decodeErrors = inc(metrics.decodeErrors, 'inflate_failed');
          // Over the inflate bound the message's start is still known: stored decoded and cut at
          // --max-body, as an HTTP body past it is (not the compressed bytes). Its size is unknown;
          // `size` says how far decoding went.
          else plain = (e as { partial?: Buffer }).partial ?? null;
          if (takeover) {
            desynced = true;
            window = null;
          }
        }
        if (plain && window) window.push(plain);
      } else {
        plain = borrowed ? bytes.slice() : bytes; // uncompressed: never enters the LZ77 window (RFC 7692 §6)
      }

      if (plain) {
        rec.size = plain.length;
        if (m.opcode === 8) decodeClose(rec, plain, metrics);
        else {
          const b = messageBody(m.opcode, plain, task.maxBody);
          assignBody(rec, 'body', 'bodyBase64', b);
          rec.truncated = b.truncated;
          if (b.truncated) rec.error ??= 'too_large';
          if (m.opcode === 1 && b.invalidUtf8 && !b.truncated) {
            // RFC 6455 §8.1: a text message must be valid UTF-8. (A cut at --max-body can split a
            // character, so truncated text is not judged.)
            rec.error ??= 'invalid_utf8';
            metrics.decodeErrors = inc(metrics.decodeErrors, 'invalid_utf8');
          }
        }
      } else if (copied > 0) {
        // Stored raw: what was captured, unmasked; compressed bytes stay compressed.
        if (compressed) rec.bodyBase64 = toBase64(bytes);
        else {
          // A cut copy (--max-body, the stream's end) may stop inside a character: text stays text,
          // cut before it, as a decoded message over maxBody is.
          const b = messageBody(m.opcode, borrowed ? bytes.slice() : bytes, task.maxBody, rec.truncated);
          assignBody(rec, 'body', 'bodyBase64', b);
          rec.truncated ||= b.truncated;
        }
      }

      // Whoever sets an error counts it: capture-time errors (queue_full, too_large while copying,
      // bad_frame, truncated_stream, worker_error) were counted on the main thread.
      if (rec.error && rec.error !== m.error && DROP_REASONS.has(rec.error)) metrics.dropped = inc(metrics.dropped, rec.error);
      records.push(rec);
      partBytes += heldBytes(rec);
      if (i + 1 < task.messages.length && full(partBytes)) {
        yield { records, first, bytes: partBytes };
        records = [];
        first = i + 1;
        partBytes = 0;
      }
    }
    if (z && window && !desynced) {
      keepInflater(laneKey, z, window);
      kept = true;
    }
  } finally {
    // (also when the caller stops early: an inflater left open holds zlib's memory)
    if (!kept) z?.close();
  }
  return { records, first, bytes: partBytes, desynced, metrics };
}

/**
 * Text (and ping/pong application data) as `body` when valid UTF-8; binary messages always as
 * `bodyBase64` — a binary message that happens to be valid UTF-8 is still bytes to its peers.
 */
function messageBody(opcode: number, bytes: Uint8Array, maxBody: number, cutShort = false): BodyFields {
  return opcode === 2 ? binaryFields(bytes, maxBody) : bodyFields(bytes, maxBody, { cutShort });
}

/** Close payload (RFC 6455 §5.5.1): empty, or a 2-byte code then a UTF-8 reason. */
function decodeClose(rec: WsMessageRecord, p: Uint8Array, metrics: MetricDeltas): void {
  if (p.length === 0) return;
  if (p.length === 1) {
    rec.error ??= 'bad_frame';
    rec.errorDetail ??= 'close payload of 1 byte';
    rec.bodyBase64 = toBase64(p);
    metrics.decodeErrors = inc(metrics.decodeErrors, 'bad_frame');
    return;
  }
  const code = (p[0] << 8) | p[1];
  rec.closeCode = code;
  if (!validCloseCode(code)) {
    rec.error ??= 'bad_frame';
    rec.errorDetail ??= `invalid close code ${code}`;
    metrics.decodeErrors = inc(metrics.decodeErrors, 'bad_frame');
  }
  try {
    rec.closeReason = decodeText(p.subarray(2)); // as bodies are: a leading U+FEFF is part of the reason
  } catch {
    rec.error ??= 'invalid_utf8';
    rec.errorDetail ??= 'close reason is not valid UTF-8';
    rec.bodyBase64 = toBase64(p);
    metrics.decodeErrors = inc(metrics.decodeErrors, 'invalid_utf8');
  }
}
