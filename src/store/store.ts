// The store's contract, used by workers (writes), the API and the CLI (reads). Implemented over
// LMDB in lmdb.ts. Several threads and processes may open the same data dir: LMDB serialises
// writers and gives readers consistent snapshots.
import type { Conversation, ConnectionRecord, RecordKind, TransactionRecord, WsMessageRecord } from '../records.js';

export interface TransactionQuery {
  kind?: RecordKind;
  host?: string;
  conn?: string;
  after?: string; // cursor: an id; returns records with larger ids
  before?: string; // cursor: an id; returns the newest `limit` records with smaller ids (still oldest first); `next` then pages further back
  since?: number; // ms since epoch
  limit?: number; // default 100, max 1000
}

export interface Page<T> { items: T[]; next: string | null }

/**
 * A body field as the store holds it: bytes (UTF-8 text, the decoded bytes of a base64 field, or
 * msgpack of respEvents) or, inline and in older stores, the value itself (text, base64 text,
 * the respEvents array). The LMDB store's unpackBody makes the API's value of either.
 */
export type StoredBody = unknown;

/**
 * A conversation listing's cursor (`next`, given back as `after`): `<updatedTs>-<id>`, the place of
 * the page's last item in recency order, not the item, so the next page starts there even if that
 * conversation has been updated since.
 */
export const CONVERSATION_CURSOR_RE = /^(\d+(?:\.\d+)?)-(.+)$/s;

/**
 * Records read from the store one at a time, as they are iterated (again on each iteration): a
 * catch-up over a long backlog holds one record's body at a time, not the whole backlog's.
 */
export interface LazyRecords<T> extends Iterable<T> { readonly length: number }

export interface Store {
  /**
   * Commits records (assigning nothing: ids are set by the caller). Resolves when durable. The
   * records are written as they are at the end of the caller's event turn: they must not change
   * before that.
   */
  putTransactions(records: TransactionRecord[]): Promise<void>;
  putConnection(record: ConnectionRecord): Promise<void>;
  getTransaction(id: string): TransactionRecord | undefined;
  /** One transaction without any body field (what listings and SSE events carry). */
  getTransactionMeta(id: string): TransactionRecord | undefined;
  /**
   * One transaction's metadata, and its body fields each read when called (a 16 MiB body is read
   * only when the API comes to write it), as stored (see StoredBody).
   */
  getTransactionParts(id: string): { meta: TransactionRecord; bodies: [field: string, read: () => StoredBody][] } | undefined;
  listTransactions(q: TransactionQuery): Page<TransactionRecord>; // bodies omitted
  getConnection(id: string): ConnectionRecord | undefined;
  /** Wire order: by direction seq, interleaved by ts. `bodies: false`: metadata only (no body is read); `limit`: the first n by id. */
  wsMessages(connId: string, opts?: { limit?: number; bodies?: boolean }): WsMessageRecord[];
  /**
   * Up to `max` of a connection's WebSocket records with ids after `after` (id order, not wire
   * order: see wireOrder), metadata only unless `bodies`; `next` (the last id read) while more may
   * follow. For readers that give the event loop back between pages.
   */
  wsMessagesFrom(connId: string, after: string | undefined, max: number, bodies: boolean): { records: WsMessageRecord[]; next?: string };
  /** A connection's WebSocket records past the given per-direction seq marks, each direction in seq order (client first), loaded as iterated; ids in `known` are skipped (the caller has them); a mark of Infinity skips that direction. */
  wsMessagesAfter(connId: string, marks: { client: number; server: number }, known?: ReadonlySet<string>): LazyRecords<WsMessageRecord>;
  /** Atomic read-modify-write of one conversation by its assembly key (safe across threads). */
  updateConversation(key: string, fn: (c: Conversation | undefined) => Conversation | undefined): Promise<Conversation | undefined>;
  getConversation(id: string): Conversation | undefined;
  /** Removes the conversations (and internal assembly objects) stored under these keys; resolves with how many there were. */
  deleteConversations(keys: string[]): Promise<number>;
  /** By its assembly key (what updateConversation is given). */
  getConversationByKey(key: string): Conversation | undefined;
  /**
   * Most recently updated first. Paging goes on from `after`'s place: a conversation updated
   * between pages moves to the front, so it is listed at most once per pass (not at all if it moved
   * from a later page); every other one, exactly once. `fits`, when given, sees each conversation
   * before it is taken: one it refuses ends the page there (`next` resumes at it), unless the page
   * is still empty (then it is taken, so paging moves on). `listedOnly`: leaves out the assembler's
   * internal objects (`internal: true`), unread where the store can tell them apart.
   */
  listConversations(q: { client?: string; limit?: number; after?: string; fits?: (c: Conversation) => boolean; listedOnly?: boolean }): Page<Conversation>;
  /** Size of the LMDB data file on disk (the store_bytes gauge); it never shrinks. */
  sizeBytes(): number;
  /** Bytes held by live pages of every table: what `--retention SIZE` bounds (the store_live_bytes gauge). */
  dataBytes(): number;
  close(): Promise<void>;
}

/**
 * A connection's WebSocket records in wire order: each direction by its seq, the two directions
 * interleaved by ts (the time the message's last byte was read); a merge keeps each direction's
 * seq order even if ts ties.
 */
export function wireOrder(records: readonly WsMessageRecord[]): WsMessageRecord[] {
  const c = records.filter((r) => r.direction !== 'server').sort((a, b) => a.seq - b.seq);
  const s = records.filter((r) => r.direction === 'server').sort((a, b) => a.seq - b.seq);
  const out: WsMessageRecord[] = [];
  let i = 0, j = 0;
  while (i < c.length || j < s.length) {
    if (j >= s.length || (i < c.length && (c[i].ts < s[j].ts || (c[i].ts === s[j].ts && c[i].id < s[j].id)))) out.push(c[i++]);
    else out.push(s[j++]);
  }
  return out;
}
