// `greytap export`: streams stored transactions as JSON Lines (one record with bodies per line, the
// same shape as the API) or as one HAR 1.2 document. Pages through the store by id cursor and waits
// for 'drain' whenever the output pushes back, so memory stays at one page whatever the store size
// (plus, for a HAR WebSocket entry, its connection's message metadata: bodies are read one by one).
// Runs against a read-only open of the environment while `serve` keeps writing (LMDB readers see
// a consistent snapshot per page).
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import type { HttpTransaction, RecordKind, TransactionRecord, WsMessageRecord } from '../records.js';
import type { Store } from './store.js';
import { harCreator, harEntry, harWsMessage } from './har.js';

export interface ExportOptions {
  format: 'jsonl' | 'har';
  kind?: RecordKind;
  host?: string;
  since?: number;
}

const PAGE = 500;

function version(): string {
  try {
    return JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** The output closed before the export was written (its reader went away: `greytap export | head`). */
export class OutputClosedError extends Error {
  constructor() { super('export output closed'); }
}

async function write(out: NodeJS.WritableStream, s: string): Promise<void> {
  // A closed output takes no more: writing on would wait for a 'close' that has been and gone.
  if ((out as { destroyed?: boolean }).destroyed) throw new OutputClosedError();
  if (out.write(s)) return;
  // Whichever comes first, both listeners go: a race of two once() left the loser registered at
  // every pushback, growing with the export.
  const ac = new AbortController();
  let closed = false;
  try {
    await Promise.race([once(out, 'drain', { signal: ac.signal }), once(out, 'close', { signal: ac.signal }).then(() => { closed = true; })]);
  } finally {
    ac.abort();
  }
  if (closed) throw new OutputClosedError();
}

/** Every matching transaction (with bodies), oldest first. */
function* transactions(store: Store, q: { kind?: RecordKind; host?: string; since?: number }): Generator<TransactionRecord> {
  let after: string | undefined;
  for (;;) {
    const page = store.listTransactions({ ...q, after, limit: PAGE });
    for (const meta of page.items) {
      const r = store.getTransaction(meta.id);
      if (r) yield r; // removed by retention between the page and the read: skip
    }
    if (!page.next) return;
    after = page.next;
  }
}

/** Resolves with the number of records (jsonl) or entries (har) written; rejects with OutputClosedError when `out` closes first. */
export async function exportRecords(store: Store, opts: ExportOptions, out: NodeJS.WritableStream): Promise<number> {
  const q = { kind: opts.kind, host: opts.host, since: opts.since };
  let n = 0;
  if (opts.format === 'jsonl') {
    for (const r of transactions(store, q)) {
      await write(out, JSON.stringify(r) + '\n');
      n++;
    }
    return n;
  }
  if (opts.format !== 'har') throw new Error(`unknown export format "${String(opts.format)}" (jsonl or har)`);
  // HAR holds HTTP transactions only; WebSocket messages ride on their 101 entry.
  await write(out, `{"log":{"version":"1.2","creator":${JSON.stringify(harCreator(version()))},"pages":[],"entries":[`);
  if (opts.kind === undefined || opts.kind === 'HTTP') {
    for (const r of transactions(store, { ...q, kind: 'HTTP' })) {
      const tx = r as HttpTransaction;
      const sep = n++ ? ',\n' : '\n';
      if (tx.status !== 101) { await write(out, sep + JSON.stringify(harEntry(tx))); continue; }
      await writeWsEntry(store, tx, sep, out);
    }
  }
  await write(out, '\n]}}\n');
  return n;
}

/**
 * A 101 entry with its messages written one at a time, each body read as it is written: a long
 * session's messages (64 KiB each in the bench's (c)) never sit in memory together.
 */
async function writeWsEntry(store: Store, tx: HttpTransaction, sep: string, out: NodeJS.WritableStream): Promise<void> {
  const { _webSocketMessages: _none, ...entry } = harEntry(tx);
  await write(out, sep + JSON.stringify(entry).slice(0, -1) + ',"_webSocketMessages":[');
  let i = 0;
  for (const meta of store.wsMessages(tx.conn, { bodies: false })) {
    if (meta.upgrade !== tx.id) continue;
    const m = store.getTransaction(meta.id) as WsMessageRecord | undefined;
    if (m) await write(out, (i++ ? ',' : '') + JSON.stringify(harWsMessage(m))); // gone: removed by retention meanwhile
  }
  await write(out, ']}');
}
