// How often one worker re-assembles a codex WebSocket connection while it streams, and what it
// remembers in between. Both are worker-local shortcuts, never the truth: the store holds every
// record and the connection's state, so any worker can assemble any batch and get the same result.
//
// Pacing: a streamed response is hundreds of `*.delta` messages and each assembly reads and rewrites
// the connection's whole state, so a socket's delta batches are folded at most every
// WS_ASSEMBLE_INTERVAL_MS, and all sockets' live views together get at most LIVE_SHARE of the
// worker's time (a credit that refills with the clock and that every assembly folding server
// records spends). Long sessions and many streaming sockets then cost a bounded share of capture
// instead of one that grows with the session; their live views just update less often.
//
// Memory: the server records a worker has seen but not yet folded (skipped delta batches, or a
// ping after the last event). When they continue the state's seq mark without a gap, the next
// assembly folds them from here instead of reading them back from the store — a read that cost as
// much as writing them. Any gap (another worker took a batch, the budget ran out) falls back to the
// store.
import type { WsMessageRecord } from '../records.js';
import { bodyBytes } from '../store/body-bytes.js';

export const WS_ASSEMBLE_INTERVAL_MS = 250;
const LIVE_SHARE = 0.1;
const CREDIT_MS = 50;
const MAX_PACED_CONNS = 4096;
/** Body characters kept per worker across all connections (bytes for a body not yet made a string; a string takes up to twice its length). */
const MEMORY_BUDGET = 16 << 20;

const paced = new Map<string, number>(); // conn → when its last paced assembly started
let credit = CREDIT_MS;
let creditAt = 0;

function refill(now: number): void {
  if (now <= creditAt) return; // assemblies overlap (they await the store): time is counted once
  credit = Math.min(CREDIT_MS, credit + (now - creditAt) * LIVE_SHARE);
  creditAt = now;
}
/** per connection: the records, each with the weight it was counted with (so forgetting it subtracts the same), and their sum */
const unfolded = new Map<string, { records: { record: WsMessageRecord; weight: number }[]; chars: number }>();
let unfoldedChars = 0;

/** Milliseconds until a delta-only batch of `conn` may be assembled again (≤ 0: now). */
export function assemblyDueIn(conn: string, now: number): number {
  refill(now);
  const own = (paced.get(conn) ?? -Infinity) + WS_ASSEMBLE_INTERVAL_MS - now;
  return Math.max(own, credit >= 0 ? 0 : -credit / LIVE_SHARE);
}

/** An assembly of `conn` that folded server records started at `at` and took `cost` ms. */
export function noteAssembly(conn: string, at: number, cost: number): void {
  refill(at + cost);
  credit -= cost;
  paced.delete(conn); // re-inserted last: the map's order is oldest first for shedding
  paced.set(conn, at);
  if (paced.size > MAX_PACED_CONNS) {
    for (const [c, t] of paced) {
      if (paced.size <= MAX_PACED_CONNS / 2 || at - t < WS_ASSEMBLE_INTERVAL_MS) break;
      paced.delete(c);
    }
  }
}

/**
 * A record's weight against MEMORY_BUDGET. A body still held as bytes (body-bytes.ts) is weighed by
 * its byte length: reading the field only to count it would make its string here, where skipped
 * batches are merely remembered (measured: a 64 KiB message's whole decode, per message).
 */
function weight(r: WsMessageRecord): number {
  return 64 + size(r, 'body') + size(r, 'bodyBase64');
}

function size(r: WsMessageRecord, field: 'body' | 'bodyBase64'): number {
  return bodyBytes(r, field)?.length ?? r[field]?.length ?? 0;
}

/** Remembers a batch's server records of `conn` until an assembly folds them (within the budget; over it, the connection's memory is dropped). */
export function rememberUnfolded(conn: string, records: readonly WsMessageRecord[]): void {
  let u = unfolded.get(conn);
  for (const r of records) {
    if (r.direction !== 'server') continue;
    const n = weight(r);
    if (unfoldedChars + n > MEMORY_BUDGET) { forgetUnfolded(conn); return; }
    if (!u) unfolded.set(conn, (u = { records: [], chars: 0 }));
    u.records.push({ record: r, weight: n });
    u.chars += n;
    unfoldedChars += n;
  }
}

export function forgetUnfolded(conn: string): void {
  const u = unfolded.get(conn);
  if (!u) return;
  unfoldedChars -= u.chars;
  unfolded.delete(conn);
}

/**
 * The remembered server records past `mark` that are not in `batchIds`, when the remembered ones
 * run on from mark + 1 without a gap; null when the store must be asked.
 */
export function unfoldedAfter(conn: string, mark: number, batchIds: ReadonlySet<string>): WsMessageRecord[] | null {
  const past = (unfolded.get(conn)?.records ?? []).map((e) => e.record).filter((r) => r.seq > mark).sort((a, b) => a.seq - b.seq);
  if (past.length === 0) return null;
  for (let i = 0; i < past.length; i++) if (past[i].seq !== mark + 1 + i) return null;
  return past.filter((r) => !batchIds.has(r.id));
}

/** After an assembly: what the state's new mark covers is forgotten. */
export function foldedUpTo(conn: string, mark: number): void {
  const u = unfolded.get(conn);
  if (!u) return;
  const keep = u.records.filter((e) => e.record.seq > mark);
  if (keep.length === 0) { forgetUnfolded(conn); return; }
  const kept = keep.reduce((n, e) => n + e.weight, 0);
  unfoldedChars -= u.chars - kept;
  u.records = keep;
  u.chars = kept;
}
