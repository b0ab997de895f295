// A transaction with its bodies as JSON, a piece at a time, for GET /api/transactions/:id. Bodies
// run to --max-body (16 MiB) each and a response can hold three (request, response and its parsed
// SSE events): made into one string with JSON.stringify on the forwarding thread, one request
// stalled every proxied connection for over a second. Here each piece is about PIECE characters of
// JSON, and the writer waits for the socket to drain. Between pieces the writers take turns, one
// piece per event-loop turn among all of them (each writer yielding on its own, 20 readers of a
// 16 MiB body made forwarding wait 20 pieces a turn: 345 ms at the median), and only a few write
// at once, as each holds a body (100 slow readers held 2 GB).
import type { ServerResponse } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import { unpack, unpackMultiple } from 'msgpackr';
import type { TransactionRecord } from '../records.js';
import type { StoredBody } from '../store/store.js';

const PIECE = 256 << 10;
/** Answers written at once; others wait for a place before their first byte. */
export const MAX_WRITERS = 8;
/** A reader that takes no byte for this long is cut: it holds a place and a body. */
const STALLED_READER_MS = 60_000;
const BASE64_FIELDS: ReadonlySet<string> = new Set(['bodyBase64', 'reqBodyBase64', 'respBodyBase64']);

/** A string in slices of about PIECE characters, never between the halves of a surrogate pair. */
function* slices(s: string): Generator<string> {
  for (let i = 0; i < s.length;) {
    let end = Math.min(s.length, i + PIECE);
    const last = s.charCodeAt(end - 1);
    if (end < s.length && last >= 0xd800 && last <= 0xdbff) end++;
    yield s.slice(i, end);
    i = end;
  }
}

/** A JSON string literal's contents (no quotes) for `s`, as JSON.stringify writes it. */
const escaped = (s: string) => JSON.stringify(s).slice(1, -1);

/**
 * The msgpack array header at the start of `b`: its element count and where the first element
 * starts, or undefined for anything else.
 */
function arrayHead(b: Uint8Array): { count: number; at: number } | undefined {
  const t = b[0];
  if (t >= 0x90 && t <= 0x9f) return { count: t & 0x0f, at: 1 };
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (t === 0xdc && b.length >= 3) return { count: view.getUint16(1), at: 3 };
  if (t === 0xdd && b.length >= 5) return { count: view.getUint32(1), at: 5 };
  return undefined;
}

/**
 * A response's SSE events as a JSON array, in pieces. Stored, they are one msgpack array (packed
 * without records, so each element stands alone): unpacking it whole took ~170 ms for 100,000
 * events on the forwarding thread, so the elements are read a piece's worth at a time.
 */
function* eventsValue(v: StoredBody): Generator<string> {
  const head = v instanceof Uint8Array ? arrayHead(v) : undefined;
  if (!head) { // inline (older stores) or not an array: whole
    const events = (v instanceof Uint8Array ? unpack(v) : v) as unknown[];
    yield JSON.stringify(events) ?? 'null';
    return;
  }
  const b = v as Uint8Array;
  let piece = '[';
  let i = 0;
  let pos = head.at;
  while (i < head.count) {
    let stopped = false;
    unpackMultiple(b.subarray(pos), (event: unknown, _start?: number, end = 0) => {
      piece += (i++ ? ',' : '') + (JSON.stringify(event) ?? 'null');
      if (piece.length < PIECE && i < head.count) return true;
      pos += end;
      stopped = true;
      return false;
    });
    if (!stopped) break; // fewer elements than the header says: what there was
    if (i < head.count) { yield piece; piece = ''; }
  }
  yield piece + ']';
}

/** The JSON value of one stored body field, in pieces (the same text JSON.stringify(unpackBody(f, v)) makes). */
function* bodyValue(field: string, v: StoredBody): Generator<string> {
  if (field === 'respEvents') {
    yield* eventsValue(v);
    return;
  }
  if (!(v instanceof Uint8Array) && typeof v !== 'string') { // not a shape the store writes: whole
    yield JSON.stringify(v) ?? 'null';
    return;
  }
  yield '"';
  if (typeof v === 'string') {
    for (const s of slices(v)) yield escaped(s);
  } else {
    const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (BASE64_FIELDS.has(field)) {
      const step = PIECE - (PIECE % 3); // whole 3-byte groups: the pieces' base64 joins into the whole's
      for (let i = 0; i < b.length; i += step) yield b.toString('base64', i, Math.min(b.length, i + step));
    } else {
      const dec = new StringDecoder('utf8'); // as Buffer#toString: keeps a BOM, U+FFFD for bad bytes
      for (let i = 0; i < b.length; i += PIECE) yield escaped(dec.write(b.subarray(i, i + PIECE)));
      yield escaped(dec.end());
    }
  }
  yield '"';
}

/** The record's JSON: its metadata, then each body field. */
export function* transactionJson(meta: TransactionRecord, bodies: [string, () => StoredBody][]): Generator<string> {
  const head = JSON.stringify(meta);
  yield head.slice(0, -1);
  let comma = head !== '{}';
  for (const [f, read] of bodies) {
    yield `${comma ? ',' : ''}${JSON.stringify(f)}:`;
    comma = true;
    yield* bodyValue(f, read()); // read here: one body in memory at a time
  }
  yield '}';
}

/**
 * `head`'s JSON with one more field, an array made an element at a time (`value` maps each as it is
 * written), then `more`: pieces of further fields, each piece list starting with its comma.
 */
export function* jsonWithArray<T>(head: object, field: string, items: readonly T[], value: (item: T, i: number) => unknown, more?: Iterable<string>): Generator<string> {
  const h = JSON.stringify(head);
  yield `${h.slice(0, -1)}${h === '{}' ? '' : ','}${JSON.stringify(field)}:[`;
  for (let i = 0; i < items.length; i++) yield (i ? ',' : '') + JSON.stringify(value(items[i], i));
  yield ']';
  if (more) yield* more;
  yield '}';
}

/**
 * Sends JSON pieces as a chunked 200 response: between pieces the event loop runs, and while the
 * socket's buffer is full nothing more is made. A client that goes away ends it. `bodies`: the
 * answer reads stored bodies (up to --max-body each) as it goes, so it needs one of the MAX_WRITERS
 * places (a listing page or a HEAD holds no body, and must not wait behind slow readers of them).
 */
export async function sendJsonPieces(res: ServerResponse, head: boolean, pieces: Iterable<string>, bodies = true): Promise<void> {
  const place = bodies && !head;
  if (place && (writers >= MAX_WRITERS || waitingWriters.length > 0)) {
    await new Promise<void>((resolve) => waitingWriters.push(resolve));
    if (res.destroyed) return letNextWriterIn(false);
  }
  if (place) writers++;
  try {
    await apiTurn(); // (the first piece too: one turn started every writer let in together)
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    if (head) { res.end(); return; }
    let made = 0;
    for (const piece of pieces) {
      if (res.destroyed) return;
      made += piece.length;
      if (!res.write(piece) && !(await drained(res))) {
        res.destroy();
        return;
      }
      // A reader as fast as loopback drains the socket within the write: 'drain' then comes on
      // process.nextTick, which never lets the event loop (timers, other sockets) run. So the turn
      // is given up here, whether or not the write had to wait.
      if (made >= PIECE) {
        await apiTurn();
        made = 0;
      }
    }
    if (!res.destroyed) res.end();
  } finally {
    if (place) letNextWriterIn(true);
  }
}

let writers = 0;
const waitingWriters: (() => void)[] = [];

function letNextWriterIn(wasWriting: boolean): void {
  if (wasWriting) writers--;
  const next = waitingWriters.shift();
  if (next) next();
}

/** True once `res` wants more; false when its reader took nothing for STALLED_READER_MS (or went away). */
function drained(res: ServerResponse): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => { clearTimeout(timer); res.off('drain', onDrain); res.off('close', onClose); resolve(ok); };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), STALLED_READER_MS);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

// One piece of API work per event-loop turn among all requests: a queue served from setImmediate,
// one a turn, so forwarding's I/O runs between any two.
const turnQueue: (() => void)[] = [];
let turnScheduled = false;

export function apiTurn(): Promise<void> {
  return new Promise<void>((resolve) => {
    turnQueue.push(resolve);
    if (!turnScheduled) {
      turnScheduled = true;
      setImmediate(serveTurn);
    }
  });
}

function serveTurn(): void {
  const next = turnQueue.shift();
  if (turnQueue.length > 0) setImmediate(serveTurn);
  else turnScheduled = false;
  next?.();
}
