// The Store over one LMDB environment at <dataDir>/db (lmdb-js, msgpackr values, ordered-binary keys).
//
// Layout (sub-databases):
//   transactions  id → metadata (small bodies inline; big ones moved to `bodies`)
//   bodies        [id, field] → the body's bytes (UTF-8 text, decoded base64, msgpack SSE events),
//                 written as they are (format 2; earlier stores: msgpack values) — listing never reads these
//   connections   id → ConnectionRecord
//   conversations id → Conversation;  convKeys  key → id
//   convByUpdated [updatedTs, id] → listed;  convByClientUpdated [client, updatedTs, id] → listed
//                 (recency, the order of retention and of listings: conversation ids are hashes of
//                 their keys, so they do not sort by age; convByClient [client, id] of earlier
//                 stores is emptied on their first read-write open)
//   byConn        [conn, id] → kind                        (every record; 1 in earlier stores)
//   byHost / byKind   [value, id] → 1                      (HTTP records; WebSocket ones in earlier stores)
//   wsConns       conn → { first, last, hosts }            (connections that carried WebSocket messages:
//                 bounds of their record ids, updated once per connection per commit; retention
//                 removes it with its connection record)
//   wsConnBuckets [bucket, conn] → 1                      (each ~17.5-minute bucket of ids a wsConns
//                 entry's bounds span; written as the bounds widen, removed with the entry)
//
// A WebSocket message is two B-tree puts (record, byConn): `?host=`/`?kind=` reach messages through
// wsConns and each connection's byConn range, merged in id order with the HTTP indexes (merge-ids.ts);
// a connection's range is opened only if its id bounds overlap the page. Host and kind entries per
// message were half of capture's index work on the echo workloads (bench/NOTES.md). The buckets let
// a page find its connections without reading every connection ever stored: it reads the buckets
// from its cursor on, one at a time, as far as it gets.
//
// Records and connection records written in one event turn are committed together, by ONE
// synchronous write transaction on the calling thread at the end of that turn (see TurnBatch): a
// record and its index entries appear (and survive kill -9) together, and a batch costs one await.
// Synchronous on purpose: the writers are the capture workers, which run at capture priority, so
// the B-tree inserts, page writes and sync of capture happen at that priority too — lmdb-js's
// asynchronous writes ran them on libuv threads at the forwarding thread's priority, behind a
// thread hand-off and a promise per put. Retention removes transactions with lmdb-js's async puts.
// Async `transaction(cb)` is deliberately not used: on this platform its callback was never
// invoked (lmdb 3.5.6, Node 20.20), so read-modify-write uses `transactionSync`, which holds LMDB's
// single writer lock across threads and processes (conversation updates, and retention's removals
// that must re-check under that lock what a concurrent writer may have changed).
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { open, type Database, type Key, type RootDatabase } from 'lmdb';
import type { Conversation, ConnectionRecord, TransactionRecord, WsMessageRecord } from '../records.js';
import { CONVERSATION_CURSOR_RE, wireOrder, type LazyRecords, type Page, type Store, type StoredBody, type TransactionQuery } from './store.js';
import { ID_RE, adjacentId, idAt, nextId } from './ids.js';
import { redactHeaders, redactPath, redactText } from './redact.js';
import { bodyBytes } from './body-bytes.js';
import { mergeIds, type IdSource, type SourceGroup } from './merge-ids.js';
import { pack, unpack } from 'msgpackr';

export interface StoreOptions {
  readOnly?: boolean;
  /** No store there is an error, not a new empty one (read-only implies it): a mistyped --data-dir of `conversations --rebuild`. */
  mustExist?: boolean;
  /** Kept for the caller's convenience (serve passes it on to startRetention); the store itself does not sweep. */
  retention?: { maxAgeMs: number | null; maxBytes: number | null };
  /** Extra header-name substrings to redact (config `redactHeaders`). */
  redact?: string[];
  /** Index entries one listing page may examine (default LIST_SCAN_BUDGET; tests set it small). */
  listScanBudget?: number;
}

/**
 * A filtered page that matches little (`?kind=WS_CTRL`, a host's WebSocket messages of one kind)
 * reads index entries until it has its page: linearly in the store (~0.3 µs an entry, 117 ms at
 * 400k records), on the API's thread, which forwards too. Past this many, the page ends early with
 * a cursor where the scan stopped; the next page goes on from there.
 */
export const LIST_SCAN_BUDGET = 50_000;

/** A rejected write: map or disk full, closed store, read-only store. Callers count it as `store_error`. */
export class StoreError extends Error {
  readonly code = 'store_error' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
  }
}

/**
 * The store file's memory map, made this large from the start: address space only (the file still
 * grows page by page as it fills). lmdb-js otherwise starts at 128 KiB and maps the file anew at
 * twice the size each time it fills, leaving the older maps in place, and RSS counts a resident
 * page once for every map it was read through: a store held at a 64 MiB retention bound had 10
 * maps, 247 MiB of RSS over a 100 MiB file (104 MiB with one map). A store past this still grows
 * its map that way.
 */
export const MAP_BYTES = 8 * 2 ** 30;

/** Records removed, by table (a retention pass's report). */
export interface PurgeResult { transactions: number; connections: number; conversations: number }

/** What retention needs beyond the Store contract. */
export interface LmdbStore extends Store {
  readonly path: string;
  /** Removes up to `max` transactions with id < beforeId (oldest first), with bodies and index entries;
   *  a WebSocket upgrade (101) stays while its connection has later records. */
  purgeTransactions(beforeId: string, max: number): Promise<number>;
  /** Removes connections with id < beforeId that no stored transaction references and that ended (or, never
   *  closed, started) before `beforeTs`, with their wsConns entries and buckets. */
  purgeConnections(beforeId: string, beforeTs: number, max: number): Promise<number>;
  /** Removes up to `max` conversations not updated since `beforeTs` (least recently updated first). */
  purgeConversations(beforeTs: number, max: number): Promise<number>;
  /** Messages of a connection in wire order; `limit` caps how many are read, `bodies: false` skips bodies. */
  wsMessages(connId: string, opts?: { limit?: number; bodies?: boolean }): WsMessageRecord[];
  /** The oldest stored transaction retention would remove next (a 101 kept for its socket's later records is passed over), if any. */
  oldestRemovableId(): string | undefined;
  /** The newest stored transaction id, if any. */
  newestTransactionId(): string | undefined;
}

/** Bodies bigger than this (UTF-16 units / serialized chars) go to `bodies`, keeping metadata pages dense. */
export const BODY_APART_THRESHOLD = 4096;
/** A record's body fields, as stored apart from its metadata when big. */
export const BODY_FIELDS = ['body', 'bodyBase64', 'reqBody', 'reqBodyBase64', 'respBody', 'respBodyBase64', 'respEvents'] as const;
type BodyField = (typeof BODY_FIELDS)[number];
const BODY_FIELD_SET: ReadonlySet<string> = new Set(BODY_FIELDS);
/** Index values are clipped so a hostile Host header can never exceed LMDB's key size (4026 bytes at 8 KiB pages). */
const MAX_INDEX_VALUE = 512;
const END = '\uffff';

/** A connection's byConn entries, in id order (from id `from` on, inclusive) or newest first. */
function connRange(conn: string, newestFirst: boolean, from = ''): { start: string[]; end: string[]; reverse?: boolean } {
  return newestFirst ? { start: [conn, END], end: [conn, ''], reverse: true } : { start: [conn, from], end: [conn, END] };
}
export const DEFAULT_LIMIT = 100;
/** A root key naming the layout: 2 = uncompressed values. Absent in earlier (LZ4-compressed) stores. */
const FORMAT_KEY = 'greytap:format';
const FORMAT = 2;
export const MAX_LIMIT = 1000;

interface Dbs {
  root: RootDatabase;
  tx: Database;
  bodies: Database;
  conns: Database;
  convs: Database;
  convKeys: Database;
  /** Absent only when opened read-only on a store written before them (listings then sort in memory). */
  convByUpdated?: Database;
  convByClientUpdated?: Database;
  byHost: Database;
  byConn: Database;
  byKind: Database;
  /** Absent only when opened read-only on a store written before they existed (lmdb-js cannot create them then). */
  wsConns?: Database;
  wsConnBuckets?: Database;
}

/** A wsConns value: bounds (not exact: retention may have removed the oldest) of a connection's WebSocket record ids. */
interface WsConnSpan { first: string; last: string; hosts: string[] }

/** Record ids are 16 hex digits of milliseconds << 12 (ids.ts); ids are bucketed by their first 8 (2^20 ms, ~17.5 min). */
const BUCKET_RE = /^[0-9a-f]{8}/;
/** The bucket of an id or cursor (`fallback` for a cursor that is not an id's prefix, e.g. the empty floor). */
function bucketOf(id: string, fallback = 0): number {
  return BUCKET_RE.test(id) ? parseInt(id.slice(0, 8), 16) : fallback;
}
function bucketPrefix(b: number): string {
  return b.toString(16).padStart(8, '0');
}
/** The buckets in [first, last]'s that [had.first, had.last]'s do not cover (all of them when `had` is absent). */
function* newBuckets(span: { first: string; last: string }, had?: { first: string; last: string }): Generator<number> {
  const lo = had ? bucketOf(had.first) : Infinity, hi = had ? bucketOf(had.last) : -Infinity;
  for (let b = bucketOf(span.first); b <= bucketOf(span.last); b++) if (b < lo || b > hi) yield b;
}

// One open environment per path per thread: lmdb-js shares the native env across threads, and a
// second open() in the same thread would only duplicate handles. Reference-counted for close().
const cache = new Map<string, { store: LmdbStoreImpl; refs: number }>();

export function openStore(dataDir: string, opts: StoreOptions = {}): LmdbStore {
  const path = resolve(dataDir, 'db');
  const hit = cache.get(path);
  // A read-write handle serves read-only callers too; a read-only one cannot serve writers.
  if (hit && (opts.readOnly || !hit.store.readOnly)) {
    hit.refs++;
    return handle(hit.store, path);
  }
  const store = new LmdbStoreImpl(path, opts);
  if (!hit) cache.set(path, { store, refs: 1 });
  else return store; // a writer next to a cached reader: not cached, closes on its own
  return handle(store, path);
}

/** A handle whose close() releases one reference; the env closes with the last one. */
function handle(store: LmdbStoreImpl, path: string): LmdbStore {
  let closed = false;
  return Object.assign(Object.create(store) as LmdbStore, {
    close: async () => {
      if (closed) return;
      closed = true;
      const c = cache.get(path);
      if (c && c.store === store && --c.refs === 0) {
        cache.delete(path);
        await store.close();
      }
    },
  });
}

function isEmpty(db: Database): boolean {
  for (const _ of db.getKeys({ limit: 1 })) return false;
  return true;
}

function clip(v: string): string {
  return v.length > MAX_INDEX_VALUE ? v.slice(0, MAX_INDEX_VALUE) : v;
}

/** LMDB's largest key at 8 KiB pages (lmdb-js refuses 4027 bytes). */
const MAX_KEY_BYTES = 4026;

/**
 * A conversation key as convKeys holds it. Keys carry strings from the wire (a session id, a
 * previous_response_id) and one past LMDB's key size failed every update of its conversation: such
 * a key is held as its start and a hash of the whole. Every key that fits stays itself, so stores
 * written before keep finding their conversations (a key of up to a third of the bound in
 * characters fits whatever they are: 3 UTF-8 bytes a UTF-16 unit at most).
 */
function convKey(key: string): string {
  if (key.length <= MAX_KEY_BYTES / 3 || Buffer.byteLength(key) <= MAX_KEY_BYTES) return key;
  return `${key.slice(0, MAX_INDEX_VALUE)}\u0000${createHash('sha256').update(key).digest('hex')}`;
}

/** A conversation's place in recency order (a listing's cursor is the last item's place). */
type Place = [updatedTs: number, id: string];
const byUpdated = (c: Conversation): Key[] => [c.updatedTs, c.id];
const byClientUpdated = (c: Conversation): Key[] => [clip(c.client), c.updatedTs, c.id];
// A recency entry's value: 0 for the assembler's internal objects (a codex socket's state, about its
// conversation's size and updated with it), so a listing skips them without unpacking them; 1 for
// the rest, and for every entry an earlier version wrote.
const listed = (c: Conversation): number => (c.internal ? 0 : 1);

const cursorOf = ([ts, id]: Place): string => `${ts}-${id}`; // (CONVERSATION_CURSOR_RE reads it back)

function cursorPlace(cursor: string): Place {
  const m = CONVERSATION_CURSOR_RE.exec(cursor);
  if (!m) throw new RangeError(`not a conversation listing's cursor: "${cursor}"`);
  return [Number(m[1]), m[2]];
}

/** The recency indexes' order, for a store without them (hex ids: string order is their key order). */
function comparePlaces(a: Place, b: Place): number {
  return a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
}

// Big bodies are stored as the bytes the decoders hand over (store/body-bytes.ts), so those are
// never made into a string and back, and base64 bodies as their decoded bytes (a quarter smaller).
// A small text body is already a string (the assembler reads it): msgpack writes its UTF-8 straight
// into the page, the same bytes a Buffer of it would hold, without making that Buffer first
// (3.5 µs of the store's ~19 per 1 KiB WebSocket record in bench/store.ts). Both read back as text.
const BASE64_FIELDS = new Set<string>(['bodyBase64', 'reqBodyBase64', 'respBodyBase64']);

/** A body field's value as stored: bytes, text, or respEvents' structure (msgpack packs it). */
function packBody(r: object, f: BodyField): unknown {
  const bytes = bodyBytes(r, f);
  if (bytes) return bytes;
  const v = (r as Record<string, unknown>)[f];
  return typeof v === 'string' && BASE64_FIELDS.has(f) ? Buffer.from(v, 'base64') : v;
}

/** The bodies sub-database of a format-2 store holds bytes: text and respEvents become bytes there. */
function apartBytes(f: BodyField, v: unknown): unknown {
  if (f === 'respEvents') return pack(v);
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

/**
 * A WebSocket record that goes in as it is (the common small text message: no undefined members, no
 * lazy, base64 or big body) is stored as the caller's object: copying it field by field into a new
 * one cost another ~3 µs of the store's time per record, and the copies' varying shapes slowed
 * msgpack down too.
 */
function storableAsIs(r: TransactionRecord): boolean {
  if (r.kind === 'HTTP') return false; // headers are redacted into the copy
  const src = r as unknown as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!BODY_FIELD_SET.has(k)) {
      if (src[k] === undefined) return false;
    } else if (BASE64_FIELDS.has(k) || k === 'respEvents' || bodyBytes(r, k)) {
      return false; // (checked before reading the field: a lazy one would make its string)
    } else {
      const v = src[k];
      if (typeof v !== 'string' || packedLength(v) > BODY_APART_THRESHOLD) return false; // (would go apart)
    }
  }
  return true;
}

function unpackBody(f: string, v: StoredBody): unknown {
  if (!(v instanceof Uint8Array)) return v;
  if (f === 'respEvents') return unpack(v);
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return BASE64_FIELDS.has(f) ? b.toString('base64') : b.toString('utf8');
}

function packedLength(v: unknown): number {
  if (v instanceof Uint8Array || typeof v === 'string') return v.length;
  if (Array.isArray(v)) return v.reduce((n: number, e: { data?: string }) => n + (e?.data?.length ?? 0) + 16, 0);
  return 0;
}

/** Per connection, the id bounds and hosts of a batch's WebSocket records. */
function wsSpans(metas: TransactionRecord[]): Map<string, WsConnSpan> {
  const spans = new Map<string, WsConnSpan>();
  for (const m of metas) {
    if (m.kind === 'HTTP') continue;
    const host = clip(m.host);
    const s = spans.get(m.conn);
    if (!s) spans.set(m.conn, { first: m.id, last: m.id, hosts: [host] });
    else {
      if (m.id < s.first) s.first = m.id;
      if (m.id > s.last) s.last = m.id;
      if (!s.hosts.includes(host)) s.hosts.push(host);
    }
  }
  return spans;
}

/**
 * The writes queued in one event turn, run as one synchronous transaction in a microtask at the end
 * of it. The capture worker's batch tasks queue all their parts' records in one turn (their
 * synchronous decode runs before their first await), so a task is one commit, as it was with
 * lmdb-js's event-turn batching. One failing commit fails every write of that turn, as it did there.
 */
class TurnBatch {
  private writes: (() => void)[] = [];
  private settle: { resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(private readonly transact: (writes: () => void) => void, private readonly wrap: (e: unknown) => StoreError) {}

  add(write: () => void): Promise<void> {
    if (this.writes.length === 0) queueMicrotask(() => this.commit());
    this.writes.push(write);
    return new Promise((resolve, reject) => this.settle.push({ resolve, reject }));
  }

  private commit(): void {
    const writes = this.writes.splice(0);
    const settle = this.settle.splice(0);
    try {
      this.transact(() => { for (const w of writes) w(); });
    } catch (e) {
      const err = this.wrap(e);
      for (const s of settle) s.reject(err);
      return;
    }
    for (const s of settle) s.resolve();
  }
}

class LmdbStoreImpl implements LmdbStore {
  readonly path: string;
  readonly readOnly: boolean;
  private readonly d: Dbs;
  private readonly redact: string[];
  private readonly scanBudget: number;
  /** format 2: the bodies sub-database holds bytes as they are (else msgpack values) */
  private readonly rawBodies: boolean;
  private readonly turn: TurnBatch;

  constructor(path: string, opts: StoreOptions) {
    this.path = path;
    this.readOnly = !!opts.readOnly;
    this.redact = opts.redact ?? [];
    this.scanBudget = opts.listScanBudget ?? LIST_SCAN_BUDGET;
    if (this.readOnly || opts.mustExist) {
      try { statSync(join(path, 'data.mdb')); } catch { throw new StoreError(`no store at ${path} (has greytap serve run with this --data-dir?)`); }
    }
    // pageSize 8192: FIELD-NOTES measured 411 MB → 274 MB for 200 MB of records (default pages).
    // Values are not compressed: lmdb-js compresses each value above 1 KB with LZ4 after loading its
    // dictionary, on a thread-pool thread (a wake-up per put); profiled under WebSocket load that was
    // the largest native cost of capture, for 25% less disk (205 MB) that retention bounds anyway.
    // Stores written by earlier versions (no format marker, data present) keep reading compressed.
    const root = open(path, { pageSize: 8192, maxDbs: 16, readOnly: this.readOnly, mapSize: MAP_BYTES });
    // (the root's keys are the sub-database names, plus the marker)
    const names = new Set(root.getKeys());
    const legacy = !names.has(FORMAT_KEY) && names.has('transactions');
    if (!legacy && !this.readOnly && !names.has(FORMAT_KEY)) root.putSync(FORMAT_KEY, FORMAT);
    const sub = (name: string) => root.openDB({ name, compression: legacy });
    this.rawBodies = !legacy;
    this.turn = new TurnBatch((writes) => root.transactionSync(writes), (e) => this.wrap(e));
    this.d = {
      root,
      tx: sub('transactions'),
      // raw bytes: a multi-MiB body is handed to LMDB as it is instead of copied into msgpack
      bodies: legacy ? sub('bodies') : root.openDB({ name: 'bodies', encoding: 'binary' }),
      conns: sub('connections'),
      convs: sub('conversations'),
      convKeys: sub('convKeys'),
      convByUpdated: sub('convByUpdated'),
      convByClientUpdated: sub('convByClientUpdated'),
      byHost: sub('byHost'),
      byConn: sub('byConn'),
      byKind: sub('byKind'),
      wsConns: sub('wsConns'),
      wsConnBuckets: sub('wsConnBuckets'),
    };
    if (!this.readOnly) {
      // Derived indexes a store written before them gets once, on its first read-write open.
      this.backfill(this.d.wsConns!, this.d.wsConnBuckets!, (conn, span) => Array.from(newBuckets(span as WsConnSpan), (b) => [b, conn]));
      this.backfill(this.d.convs, this.d.convByUpdated!, (_, c) => [byUpdated(c as Conversation)], (c) => listed(c as Conversation));
      this.backfill(this.d.convs, this.d.convByClientUpdated!, (_, c) => [byClientUpdated(c as Conversation)], (c) => listed(c as Conversation));
      if (names.has('convByClient')) {
        const replaced = sub('convByClient'); // by convByClientUpdated: nothing reads it, its pages go back to the free list
        if (!isEmpty(replaced)) replaced.clearSync();
      }
    }
  }

  /** Fills `index` (keys → valueOf, 1 unless given) from every entry of `from`, unless it already holds entries or there is nothing to index. */
  private backfill(from: Database, index: Database, keysOf: (key: string, value: unknown) => Key[][], valueOf: (value: unknown) => number = () => 1): void {
    if (isEmpty(from) || !isEmpty(index)) return;
    this.d.root.transactionSync(() => {
      for (const { key, value } of from.getRange({})) for (const k of keysOf(key as string, value)) index.putSync(k, valueOf(value));
    });
  }

  // ── writes ─────────────────────────────────────────────────────────────────────────────────

  private writable(): void {
    if (this.readOnly) throw new StoreError('store opened read-only');
  }

  /**
   * Runs `queue` (synchronous puts/removes: one event turn = one LMDB transaction) and awaits the
   * commit. Unconditional writes of one batch share one promise; a Set keeps the await to one per
   * distinct promise, so none can reject unobserved if lmdb-js splits the batch.
   */
  private async commit(queue: (w: (p: Promise<unknown>) => void) => void): Promise<void> {
    const pending = new Set<Promise<unknown>>();
    try {
      this.writable();
      queue((p) => { pending.add(p); });
    } catch (e) {
      for (const p of pending) p.catch(() => {});
      throw this.wrap(e);
    }
    try {
      await Promise.all(pending);
    } catch (e) {
      throw this.wrap(e);
    }
  }

  private wrap(e: unknown): StoreError {
    return e instanceof StoreError ? e : new StoreError(`store write failed: ${(e as Error)?.message ?? e}`, { cause: e });
  }

  // async without an await: the writes are queued in the caller's turn, and a throw rejects
  async putTransactions(records: TransactionRecord[]): Promise<void> {
    if (records.length === 0) return;
    this.writable();
    let prepared: ReturnType<LmdbStoreImpl['prepare']>[];
    try {
      // Everything that can throw (redaction, body split) happens before the first put, so a batch
      // is either queued whole or not at all.
      prepared = records.map((r) => this.prepare(r));
    } catch (e) {
      throw this.wrap(e);
    }
    const { tx, bodies, byHost, byConn, byKind } = this.d;
    const spans = wsSpans(prepared.map((p) => p.meta));
    return this.turn.add(() => {
      for (const { meta, apart } of prepared) {
        const id = meta.id;
        for (const [f, v] of apart) bodies.putSync([id, f], v as Buffer);
        tx.putSync(id, meta);
        byConn.putSync([meta.conn, id], meta.kind);
        if (meta.kind === 'HTTP') {
          byHost.putSync([clip(meta.host), id], 1);
          byKind.putSync([meta.kind, id], 1);
        }
      }
      for (const [conn, span] of spans) this.widenWsSpan(conn, span);
    });
  }

  /** Inside a write transaction: widens the connection's wsConns entry to cover `span`. */
  private widenWsSpan(conn: string, span: WsConnSpan): void {
    const wsConns = this.d.wsConns!, wsConnBuckets = this.d.wsConnBuckets!; // writing: created on open
    const cur = wsConns.get(conn) as WsConnSpan | undefined; // (read-only here: `span` is what widens)
    if (cur) {
      if (cur.first < span.first) span.first = cur.first;
      if (cur.last > span.last) span.last = cur.last; // another writer thread may have committed later ids first
      for (const h of cur.hosts) if (!span.hosts.includes(h)) span.hosts.push(h);
    } else {
      // A new entry starts at the connection's oldest record, not this batch's: records committed
      // before it (an earlier version's, or any an entry removed too early covered) stay reachable.
      const first = this.recordIdAt(conn, 'oldest');
      if (first !== undefined && first < span.first) span.first = first;
    }
    wsConns.putSync(conn, span);
    for (const b of newBuckets(span, cur)) wsConnBuckets.putSync([b, conn], 1);
  }

  private prepare(r: TransactionRecord): { meta: TransactionRecord; apart: [BodyField, unknown][] } {
    if (typeof r?.id !== 'string' || !r.id || r.id.length > 64) throw new StoreError('record id missing or longer than 64 characters');
    if (typeof r.conn !== 'string' || r.conn.length > MAX_INDEX_VALUE) throw new StoreError(`record ${r.id}: conn missing or too long`);
    if (typeof r.host !== 'string' || typeof r.kind !== 'string') throw new StoreError(`record ${r.id}: host or kind missing`);
    if (r.kind !== 'HTTP' && !ID_RE.test(r.id)) throw new StoreError(`record ${r.id}: a WebSocket record's id must be 16 hex digits (its connection is indexed by the id's time)`);
    if (storableAsIs(r)) return { meta: r, apart: [] };
    // Copied field by field: body fields are taken as bytes (packBody), never read as strings.
    const meta = {} as TransactionRecord & Record<string, unknown>;
    const src = r as unknown as Record<string, unknown>;
    for (const k of Object.keys(r)) {
      // msgpack keeps `undefined` members; JSON (the API) would drop them — store what the API shows.
      if (!BODY_FIELD_SET.has(k) && src[k] !== undefined) meta[k] = src[k];
    }
    if (meta.kind === 'HTTP') {
      meta.reqHeaders = redactHeaders(meta.reqHeaders ?? [], this.redact);
      meta.respHeaders = redactHeaders(meta.respHeaders ?? [], this.redact);
      meta.path = redactPath(meta.path ?? '', this.redact);
      if (typeof meta.errorDetail === 'string') meta.errorDetail = redactText(meta.errorDetail, this.redact);
    }
    const apart: [BodyField, unknown][] = [];
    for (const f of BODY_FIELDS) {
      if (!Object.prototype.hasOwnProperty.call(r, f)) continue;
      const v = packBody(r, f);
      if (v === undefined) continue;
      if (packedLength(v) > BODY_APART_THRESHOLD) apart.push([f, this.rawBodies ? apartBytes(f, v) : v]);
      else meta[f] = v;
    }
    return { meta, apart };
  }

  async putConnection(record: ConnectionRecord): Promise<void> {
    this.writable();
    return this.turn.add(() => { this.d.conns.putSync(record.id, record); });
  }

  updateConversation(key: string, fn: (c: Conversation | undefined) => Conversation | undefined): Promise<Conversation | undefined> {
    let fnError: { e: unknown } | undefined;
    try {
      this.writable();
      const { root, convs, convKeys } = this.d;
      const storedKey = convKey(key);
      const convByUpdated = this.d.convByUpdated!, convByClientUpdated = this.d.convByClientUpdated!; // writing: created on open
      // transactionSync holds LMDB's writer lock from the read to the write: updates from other
      // threads/processes serialise, so none is lost. (It blocks this thread while another writer
      // commits — fine in workers, where conversations are assembled.)
      const result = root.transactionSync(() => {
        const id = convKeys.get(storedKey) as string | undefined;
        const cur = id === undefined ? undefined : (convs.get(id) as Conversation | undefined);
        let next: Conversation | undefined;
        try { next = fn(cur); } catch (e) { fnError = { e }; throw e; } // before any write: nothing to undo
        if (next === undefined) return undefined;
        // A new conversation gets nextId() unless fn chose an id (imports, tests).
        const c: Conversation = { ...next, id: cur?.id ?? id ?? (next.id || nextId()), key };
        convs.put(c.id, c);
        if (id !== c.id) convKeys.put(storedKey, c.id);
        if (cur?.updatedTs !== c.updatedTs || cur.client !== c.client) {
          if (cur) {
            convByUpdated.remove(byUpdated(cur));
            convByClientUpdated.remove(byClientUpdated(cur));
          }
          convByUpdated.put(byUpdated(c), listed(c));
          convByClientUpdated.put(byClientUpdated(c), listed(c));
        }
        return c;
      });
      return Promise.resolve(result);
    } catch (e) {
      // fn's own exceptions are the caller's bug, not a store failure: pass them through as thrown
      return Promise.reject(fnError ? fnError.e : this.wrap(e));
    }
  }

  // ── reads ──────────────────────────────────────────────────────────────────────────────────

  getTransaction(id: string): TransactionRecord | undefined {
    const meta = this.d.tx.get(id) as (TransactionRecord & Record<string, unknown>) | undefined;
    if (!meta) return undefined;
    for (const f of BODY_FIELDS) if (meta[f] !== undefined) meta[f] = unpackBody(f, meta[f]);
    for (const { key, value } of this.d.bodies.getRange({ start: [id], end: [id, END] })) {
      const f = (key as [string, string])[1];
      meta[f] = unpackBody(f, value);
    }
    return meta;
  }

  getTransactionParts(id: string): { meta: TransactionRecord; bodies: [string, () => StoredBody][] } | undefined {
    const meta = this.d.tx.get(id) as (TransactionRecord & Record<string, unknown>) | undefined;
    if (!meta) return undefined;
    const bodies: [string, () => StoredBody][] = [];
    for (const f of BODY_FIELDS) if (meta[f] !== undefined) { const v = meta[f]; bodies.push([f, () => v]); delete meta[f]; }
    for (const key of this.d.bodies.getKeys({ start: [id], end: [id, END] })) bodies.push([(key as [string, string])[1], () => this.d.bodies.get(key)]);
    return { meta, bodies };
  }

  /** Metadata only: inline small bodies are stripped too, so every listed record has the same shape. */
  getTransactionMeta(id: string): TransactionRecord | undefined {
    const meta = this.d.tx.get(id) as (TransactionRecord & Record<string, unknown>) | undefined;
    if (!meta) return undefined;
    for (const f of BODY_FIELDS) delete meta[f];
    return meta;
  }

  listTransactions(q: TransactionQuery): Page<TransactionRecord> {
    const limit = Math.min(Math.max(1, Math.floor(q.limit ?? DEFAULT_LIMIT)), MAX_LIMIT);
    const backward = q.before !== undefined;
    // Ids are allocated no earlier than their record's ts (ids.ts), so `since` bounds the id range.
    const floor = q.since !== undefined ? idAt(q.since) : '';
    const lo = q.after !== undefined && q.after > floor ? q.after : floor;
    const items: TransactionRecord[] = [];
    let more = false;
    let stoppedAt: string | undefined;
    // The index ranges are merged in id order; filters the ranges do not imply are checked on the metadata.
    const budget = { left: this.scanBudget };
    const { sources, groups } = this.idSources(q, lo, backward, budget);
    for (const id of mergeIds(sources, backward, groups)) {
      if (id === q.after || id === q.before) continue; // cursors are exclusive
      // Out of budget: every id before this one in scan order has been examined (the merge yields
      // in order, and the sources let everything through once the budget is spent), so the next
      // page starts here.
      // (An exclusive cursor that resumes at this id; an imported record's id has none: the scan goes on.)
      if (budget.left <= 0 && (stoppedAt = adjacentId(id, backward ? 1 : -1)) !== undefined) break;
      const r = this.getTransactionMeta(id);
      // (a record retention just removed leaves its index entry for a moment)
      const match = r !== undefined && (q.kind === undefined || r.kind === q.kind) && (q.host === undefined || r.host === q.host)
        && (q.conn === undefined || r.conn === q.conn) && (q.since === undefined || r.ts >= q.since);
      if (!match) { budget.left--; continue; } // what is read and shown is the page; what is read and skipped is the budget's
      if (items.length === limit) { more = true; break; }
      items.push(r);
    }
    if (backward) items.reverse();
    if (stoppedAt !== undefined) return { items, next: stoppedAt };
    const edge = backward ? items[0] : items[items.length - 1];
    return { items, next: more && edge ? edge.id : null };
  }

  /** The id ranges (each in scan order, from the cursor on) that hold every record the query can match.
   *  Both bounds are inclusive (`since`'s floor is an id a record can have); the caller skips the cursors. */
  private idSources(q: TransactionQuery, lo: string, backward: boolean, budget: { left: number }): { sources: IdSource[]; groups?: Iterable<SourceGroup> } {
    const { tx, byConn, byHost, byKind } = this.d;
    const hi = q.before!;
    // `from`: a source's bound; its range starts there too, so a wrong bound could lose ids, never disorder the merge
    const range = (idx: Database, val: string, keep?: (v: unknown) => boolean, from?: string): Iterable<string> =>
      (backward
        ? idx.getRange({ start: [val, from !== undefined && from < hi ? from : hi], end: [val, lo], reverse: true, inclusiveEnd: true })
        : idx.getRange({ start: [val, from !== undefined && from > lo ? from : lo], end: [val, END] }))
        // entries a value filter skips count against the page's budget; spent, they pass (see listTransactions)
        .filter(({ value }) => !keep || --budget.left <= 0 || keep(value))
        .map(({ key }) => (key as [string, string])[1]);
    const ofKind = q.kind === undefined ? undefined : (v: unknown) => v === q.kind || v === 1; // 1: written before byConn held kinds
    if (q.conn !== undefined) return { sources: [{ open: () => range(byConn, q.conn!, ofKind) }] };
    if (q.host === undefined && q.kind === undefined) {
      return { sources: [{ open: () => (backward ? tx.getKeys({ start: hi, end: lo || undefined, reverse: true, inclusiveEnd: true }) : tx.getKeys({ start: lo || undefined })).map((k) => k as string) }] };
    }
    // HTTP records (and WebSocket records of earlier stores) are in byHost and byKind.
    const sources: IdSource[] = [{ open: () => (q.host !== undefined && (q.kind === undefined || q.kind === 'HTTP') ? range(byHost, clip(q.host)) : range(byKind, q.kind!)) }];
    if (q.kind === 'HTTP') return { sources };
    const isWs = ofKind ?? ((v: unknown) => v !== 'HTTP');
    const host = q.host === undefined ? undefined : clip(q.host);
    const source = (conn: string, span: WsConnSpan | undefined): IdSource | null => {
      if (!span || (host !== undefined && !span.hosts.includes(host))) return null;
      if (span.last < lo || (backward && span.first > hi)) return null; // none of its ids is on the page's side of the cursors
      const from = backward ? span.last : span.first;
      return { from, open: () => range(byConn, conn, isWs, from) };
    };
    return { sources, groups: this.wsConnGroups(lo, hi, backward, source) };
  }

  /**
   * The WebSocket connections a page may reach, one id bucket at a time in scan order from the
   * cursor on (mergeIds reads a group only when the page gets that far). A connection spanning
   * several buckets comes with the first of them the scan meets.
   */
  private *wsConnGroups(lo: string, hi: string, backward: boolean, source: (conn: string, span: WsConnSpan | undefined) => IdSource | null): Generator<SourceGroup> {
    const { wsConns, wsConnBuckets } = this.d;
    if (!wsConns) return; // a store from before wsConns: its WebSocket records are in byHost and byKind
    if (!wsConnBuckets || isEmpty(wsConnBuckets)) {
      // read-only, on a store no version with buckets has written to: every connection, as one group
      const sources = Array.from(wsConns.getRange({}), ({ key, value }) => source(key as string, value as WsConnSpan)).filter((s) => s !== null);
      yield { until: backward ? '' : END, sources };
      return;
    }
    const keys = backward
      ? wsConnBuckets.getKeys({ start: [bucketOf(hi, 0xffffffff), END], end: [bucketOf(lo)], reverse: true })
      : wsConnBuckets.getKeys({ start: [bucketOf(lo)] });
    const seen = new Set<string>();
    let group: SourceGroup | undefined;
    let bucket = -1;
    for (const key of keys) {
      const [b, conn] = key as [number, string];
      if (b !== bucket) {
        if (group) yield group;
        bucket = b;
        // backward: later buckets hold only smaller ids; forward: only ids past this prefix
        group = { until: backward ? bucketPrefix(b) : bucketPrefix(b) + END, sources: [] };
      }
      if (seen.has(conn)) continue;
      seen.add(conn);
      const s = source(conn, wsConns.get(conn) as WsConnSpan | undefined);
      if (s) group!.sources.push(s);
    }
    if (group) yield group;
  }

  getConnection(id: string): ConnectionRecord | undefined {
    return this.d.conns.get(id) as ConnectionRecord | undefined;
  }

  /**
   * Ids of a connection's records that may be WebSocket messages, in id order (or newest first).
   * The byConn value is the record's kind, so HTTP exchanges are skipped unread; stores from before
   * it held kinds (value 1) yield every id, and the caller's read of the record decides. `after`
   * (id order only): the ids past it.
   */
  private *wsIdsOf(connId: string, newestFirst: boolean, after?: string): Generator<string> {
    for (const { key, value } of this.d.byConn.getRange(connRange(connId, newestFirst, after))) {
      const id = (key as [string, string])[1];
      if (value !== 'HTTP' && id !== after) yield id;
    }
  }

  wsMessages(connId: string, opts: { limit?: number; bodies?: boolean } = {}): WsMessageRecord[] {
    return wireOrder(this.wsMessagesFrom(connId, undefined, opts.limit ?? Infinity, opts.bodies !== false).records);
  }

  wsMessagesFrom(connId: string, after: string | undefined, max: number, bodies: boolean): { records: WsMessageRecord[]; next?: string } {
    const records: WsMessageRecord[] = [];
    let last: string | undefined;
    for (const id of this.wsIdsOf(connId, false, after)) {
      if (records.length >= max) return { records, next: last };
      last = id;
      // each message is read once (it was read twice, the first time whole only to learn its kind)
      const r = bodies ? this.getTransaction(id) : this.getTransactionMeta(id);
      if (r && r.kind !== 'HTTP') records.push(r);
    }
    return { records };
  }

  wsMessagesAfter(connId: string, marks: { client: number; server: number }, known?: ReadonlySet<string>): LazyRecords<WsMessageRecord> {
    // Newest first: a direction's records are committed in seq order (one task in flight per
    // direction), so each direction's scan stops at its first record at or below the mark. The
    // scan keeps ids only: a worker whose pacing left thousands of 64 KiB messages unfolded read
    // them all into one array (264 MB of heap measured, most of the fold's time in GC).
    const out = { client: [] as string[], server: [] as string[] };
    const done = { client: marks.client === Infinity, server: marks.server === Infinity };
    for (const id of this.wsIdsOf(connId, true)) {
      const meta = this.d.tx.get(id) as TransactionRecord | undefined;
      if (!meta || meta.kind === 'HTTP') continue;
      const dir = meta.direction;
      if (done[dir]) continue;
      if (meta.seq <= marks[dir]) { done[dir] = true; if (done.client && done.server) break; continue; }
      if (!known?.has(meta.id)) out[dir].push(meta.id);
    }
    const ids = [...out.client.reverse(), ...out.server.reverse()];
    const load = (id: string) => this.getTransaction(id) as WsMessageRecord | undefined;
    return {
      length: ids.length,
      *[Symbol.iterator]() {
        for (const id of ids) {
          const r = load(id);
          if (r) yield r; // removed since the scan (retention): nothing to fold
        }
      },
    };
  }

  getConversation(id: string): Conversation | undefined {
    return this.d.convs.get(id) as Conversation | undefined;
  }

  getConversationByKey(key: string): Conversation | undefined {
    const id = this.d.convKeys.get(convKey(key)) as string | undefined;
    return id === undefined ? undefined : this.getConversation(id);
  }

  listConversations(q: { client?: string; limit?: number; after?: string; fits?: (c: Conversation) => boolean; listedOnly?: boolean }): Page<Conversation> {
    const limit = Math.min(Math.max(1, Math.floor(q.limit ?? DEFAULT_LIMIT)), MAX_LIMIT);
    const items: Conversation[] = [];
    let last: Place | undefined;
    for (const [place, c] of this.byRecency(q.client, q.after === undefined ? undefined : cursorPlace(q.after), q.listedOnly === true)) {
      if (items.length === limit || (q.fits && !q.fits(c) && items.length > 0)) return { items, next: cursorOf(last!) };
      items.push(c);
      last = place;
    }
    return { items, next: null };
  }

  /** The listing's conversations at their places, most recently updated first, from just past `after`. */
  private *byRecency(client: string | undefined, after: Place | undefined, listedOnly: boolean): Generator<[Place, Conversation]> {
    const [index, keyOf, prefix] = client === undefined
      ? [this.d.convByUpdated, byUpdated, []]
      : [this.d.convByClientUpdated, byClientUpdated, [clip(client)]];
    const places = index
      // (strings sort after numbers: [...prefix, END] is past every place under the prefix)
      ? index.getRange({ start: [...prefix, ...(after ?? [END])], end: prefix.length ? prefix : undefined, reverse: true, exclusiveStart: after !== undefined })
        .filter(({ value }) => !listedOnly || value !== 0)
        .map(({ key }) => (key as Key[]).slice(-2) as Place)
      : this.sortedPlaces(after);
    for (const [ts, id] of places) {
      const c = this.getConversation(id);
      if (!c || (client !== undefined && c.client !== client)) continue; // (clipped clients share entries; sortedPlaces has every client's)
      // An entry an earlier version did not move when it updated the conversation: listed there
      // unless the conversation has its own entry too.
      if (c.updatedTs !== ts && index?.doesExist(keyOf(c))) continue;
      yield [[ts, id], c];
    }
  }

  /**
   * Every conversation's place past `after`, most recent first, sorted here on each page: for a
   * store opened read-only that no version with the recency indexes has opened read-write.
   */
  private sortedPlaces(after: Place | undefined): Place[] {
    return Array.from(this.d.convs.getRange({}), ({ key, value }) => [(value as Conversation).updatedTs, key as string] as Place)
      .filter((p) => !after || comparePlaces(p, after) < 0)
      .sort((a, b) => comparePlaces(b, a));
  }

  oldestRemovableId(): string | undefined {
    for (const { key, value } of this.d.tx.getRange({})) if (!this.keptUpgrade(key as string, value as TransactionRecord)) return key as string;
    return undefined;
  }

  /**
   * A 101 outlives its age while its socket's messages do: they name it (`upgrade`), HAR export
   * writes them only under its entry, the dashboard links to it. It goes after the last of them.
   */
  private keptUpgrade(id: string, r: TransactionRecord): boolean {
    return r.kind === 'HTTP' && r.status === 101 && (this.recordIdAt(r.conn, 'newest') ?? '') > id;
  }

  newestTransactionId(): string | undefined {
    for (const k of this.d.tx.getKeys({ limit: 1, reverse: true })) return k as string;
    return undefined;
  }

  // ── size and retention ─────────────────────────────────────────────────────────────────────

  sizeBytes(): number {
    try { return statSync(join(this.path, 'data.mdb')).size; } catch { return 0; }
  }

  dataBytes(): number {
    let pages = 0;
    for (const db of Object.values(this.d) as (Database | undefined)[]) {
      if (!db) continue;
      const s = db.getStats() as { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number; pageSize: number };
      pages += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    }
    return pages * 8192;
  }

  async purgeTransactions(beforeId: string, max: number): Promise<number> {
    const { tx, bodies, byHost, byConn, byKind } = this.d;
    const victims: { id: string; r: TransactionRecord }[] = [];
    for (const { key, value } of tx.getRange({ end: beforeId })) {
      if (victims.length === max) break;
      const id = key as string, r = value as TransactionRecord;
      // Skipped, not waited on: the scan goes on to the next oldest record, so a size bound still
      // makes progress past a long-lived socket's 101 (which goes in the first batch after its last message).
      if (this.keptUpgrade(id, r)) continue;
      victims.push({ id, r });
    }
    if (victims.length === 0) return 0;
    // Bodies stored apart, found in one pass over the victims' span of ids (a lookup per record
    // was a third of a removal's CPU); a kept 101 inside the span keeps its own.
    const ids = new Set(victims.map((v) => v.id));
    const bodyKeys = Array.from(bodies.getKeys({ start: [victims[0].id], end: [victims[victims.length - 1].id, END] })).filter((k) => ids.has((k as [string, string])[0]));
    // lmdb-js's async removes: a libuv thread runs the batch natively, holding LMDB's writer lock
    // (which capture's commits wait for) as briefly as it can. Synchronous removes on retention's
    // thread held it 2–3 times as long idle, and, that thread being at --capture-nice and
    // preempted with the lock held, 2–3 s on a loaded host, where capture's commits stalled.
    await this.commit((w) => {
      for (const k of bodyKeys) w(bodies.remove(k));
      for (const { id, r } of victims) {
        w(byHost.remove([clip(r.host), id]));
        w(byConn.remove([r.conn, id]));
        w(byKind.remove([r.kind, id]));
        w(tx.remove(id));
      }
    });
    return victims.length;
  }

  async purgeConnections(beforeId: string, beforeTs: number, max: number): Promise<number> {
    const { conns } = this.d;
    const wsConns = this.d.wsConns!, wsConnBuckets = this.d.wsConnBuckets!; // writing: created on open
    // An open connection (no endTs) older than the cutoff goes too: after a crash it never gets its
    // close record, and if it is still open its close rewrites it.
    const stale = (id: string, c: ConnectionRecord | undefined) => c !== undefined && (c.endTs ?? c.startTs ?? c.ts) < beforeTs && !this.hasRecords(id);
    const victims: string[] = [];
    for (const { key, value } of conns.getRange({ end: beforeId, limit: max * 4 })) {
      if (stale(key as string, value as ConnectionRecord)) victims.push(key as string);
      if (victims.length >= max) break;
    }
    return this.purgeLocked(victims, (id) => {
      // Checked again under the lock, which capture's commits take too: a connection still open
      // either committed a record before this (and stays) or commits after it, when its writer,
      // finding no wsConns entry, starts a new one at that record. Its entry and buckets go with it
      // either way; nothing would find them again once its connection record is gone.
      if (!stale(id, conns.get(id) as ConnectionRecord | undefined)) return false;
      conns.removeSync(id);
      const span = wsConns.get(id) as WsConnSpan | undefined;
      if (span) {
        wsConns.removeSync(id);
        for (const b of newBuckets(span)) wsConnBuckets.removeSync([b, id]);
      }
      return true;
    });
  }

  private hasRecords(conn: string): boolean {
    return this.recordIdAt(conn, 'oldest') !== undefined;
  }

  /** The smallest or largest id among a connection's records (its first or last byConn entry). */
  private recordIdAt(conn: string, end: 'oldest' | 'newest'): string | undefined {
    for (const k of this.d.byConn.getKeys({ ...connRange(conn, end === 'newest'), limit: 1 })) return (k as [string, string])[1];
    return undefined;
  }

  async purgeConversations(beforeTs: number, max: number): Promise<number> {
    const { convs } = this.d;
    const convByUpdated = this.d.convByUpdated!; // writing: created on open
    const aged = Array.from(convByUpdated.getKeys({ end: [beforeTs], limit: max }), (k) => k as [number, string]);
    return this.purgeLocked(aged, ([ts, id]) => {
      const c = convs.get(id) as Conversation | undefined;
      convByUpdated.removeSync([ts, id]);
      if (c?.updatedTs !== ts) {
        // Updated since the scan (its entry has moved on already), or an earlier version updated it
        // without moving the entry: it stays, indexed where it is now.
        if (c) convByUpdated.putSync(byUpdated(c), listed(c));
        return false;
      }
      this.removeConversationSync(c);
      return true;
    });
  }

  async deleteConversations(keys: string[]): Promise<number> {
    return this.purgeLocked(keys, (key) => {
      const id = this.d.convKeys.get(convKey(key)) as string | undefined;
      const c = id === undefined ? undefined : (this.d.convs.get(id) as Conversation | undefined);
      if (!c) return false;
      this.d.convByUpdated!.removeSync(byUpdated(c)); // writing: created on open
      this.removeConversationSync(c);
      return true;
    });
  }

  /** A conversation and its entries but the one in convByUpdated (the caller's: retention's scan holds its own). */
  private removeConversationSync(c: Conversation): void {
    const storedKey = convKey(c.key);
    if (this.d.convKeys.get(storedKey) === c.id) this.d.convKeys.removeSync(storedKey);
    this.d.convByClientUpdated!.removeSync(byClientUpdated(c));
    this.d.convs.removeSync(c.id);
  }

  /**
   * Removes, in one write transaction under LMDB's writer lock, each victim `remove` still finds
   * removable there; resolves with how many it removed. The victims were chosen outside the lock
   * (the scan holds no writer up), so a capture or assembly commit may have revived one since: an
   * async remove would then delete what was just written. Synchronous on the calling thread, as
   * updateConversation's: async `transaction(cb)` never runs its callback here (see the top).
   */
  private async purgeLocked<T>(victims: T[], remove: (v: T) => boolean): Promise<number> {
    if (victims.length === 0) return 0;
    this.writable();
    try {
      return this.d.root.transactionSync(() => victims.filter(remove).length);
    } catch (e) {
      throw this.wrap(e);
    }
  }

  async close(): Promise<void> {
    await this.d.root.close();
  }
}
