// Captured records → Conversations, inside the pool workers after each committed batch: the entry
// points, which hand each conversation's records to its path —
//   assemble-http.ts  HTTP APIs re-send the history on every request: exchanges are folded into a
//                     main line by message-prefix matching; a Claude Code sub-agent's into a line of
//                     its own under the call that started it;
//   assemble-ws.ts    codex over WebSocket mostly sends only new items: a socket's records are folded
//                     into its connection state, at the live pace, and each session's line into the
//                     session's conversation across its sockets;
//   conversation-state.ts  what both keep in the store, and what they share.
//
// Workers are stateless and share the pool, so every bit of assembly state lives in the store and
// is changed only through store.updateConversation (an atomic read-modify-write). Each conversation
// stores what it was built from (private `_http` exchanges, or for codex's WebSocket the version of
// the line each socket of the session gave, `_lines`, each line derived from that socket's `_ws`
// state in an internal object, where it stays) and its `turns` are DERIVED from that by a pure
// function, never patched in place. Folding a record is idempotent (exchanges by transaction id,
// WebSocket directions by seq high-water mark) and the derivation sorts by wire keys, so the result
// does not depend on which worker ran first, on the order of the two WebSocket directions, or on a
// re-delivered batch — and a rebuild equals the live result.
// Bad data (non-JSON, unknown shapes) is skipped and counted, never thrown.
import type { HttpTransaction, TransactionRecord, WsMessageRecord } from '../records.js';
import type { MetricDeltas } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { Exchange } from './dissect/blocks.js';
import { dissectHttp, type DissectRule } from './dissect/index.js';
import { isInternalConversation, type AssembleOptions } from './conversation-state.js';
import { assembleExchanges, needsPointer, resolveChain } from './assemble-http.js';
import { assembleSocket, looksLikeOpenaiWs } from './assemble-ws.js';

// What the rest of greytap reads of the assembly (the API, the CLI, the workers, tests and benches).
export { conversationByKey, conversationId, isInternalConversation, publicConversation, type AssembleOptions, type StoredConversation } from './conversation-state.js';
export { connectionEnded, finishTrailingAssemblies } from './assemble-ws.js';

let defaultRules: DissectRule[] = [];
/** Endpoint rules for every later assembly in this thread: a capture worker's --dissect-rules (workerData). */
export function setDissectRules(rules: DissectRule[]): void { defaultRules = rules; }

// ── entry points ─────────────────────────────────────────────────────────────────────────────

export async function assembleRecords(store: Store, records: TransactionRecord[], opts: AssembleOptions = {}): Promise<MetricDeltas> {
  const m: MetricDeltas = { decodeErrors: {}, storeRecords: {} };
  const bad = (n = 1) => { m.decodeErrors!.dissect_failed = (m.decodeErrors!.dissect_failed ?? 0) + n; };
  const failed = () => { m.decodeErrors!.assemble_failed = (m.decodeErrors!.assemble_failed ?? 0) + 1; };
  const wrote = (n = 1) => { m.storeRecords!.CONVERSATION = (m.storeRecords!.CONVERSATION ?? 0) + n; };
  const rules = opts.rules ?? defaultRules;

  const wsByConn = new Map<string, WsMessageRecord[]>();
  const serverByConn = new Map<string, WsMessageRecord[]>(); // every server record, for the pacing's memory
  const httpByKey = new Map<string, { ex: Exchange; tx: HttpTransaction }[]>();
  const chained = new Map<string, string>(); // response id → key, for chains inside this batch (rebuild batches)
  for (const r of records) {
    try {
      if (r.kind === 'HTTP') {
        const d = dissectHttp(r, rules);
        if (d.bad) bad();
        if (!d.exchange) continue;
        const ex = d.exchange;
        if (!ex.key) ex.key = chained.get(ex.previousResponseId!) ?? (await resolveChain(store, ex.previousResponseId!));
        if (ex.reply?.responseId && needsPointer(ex)) chained.set(ex.reply.responseId, ex.key);
        const list = httpByKey.get(d.exchange.key) ?? [];
        list.push({ ex: d.exchange, tx: r });
        httpByKey.set(d.exchange.key, list);
      } else {
        if (r.direction === 'server') {
          const seen = serverByConn.get(r.conn);
          if (seen) seen.push(r); else serverByConn.set(r.conn, [r]);
        }
        if (looksLikeOpenaiWs(r, rules)) {
          const list = wsByConn.get(r.conn) ?? [];
          list.push(r);
          wsByConn.set(r.conn, list);
        }
      }
    } catch { bad(); }
  }

  for (const [key, list] of httpByKey) {
    try { await assembleExchanges(store, key, list, opts, wrote); } catch { failed(); }
  }
  for (const [conn, list] of wsByConn) {
    try {
      const n = await assembleSocket(store, conn, list, serverByConn.get(conn) ?? [], opts, bad);
      if (n !== undefined) wrote(n);
    } catch { failed(); }
  }
  if (!Object.keys(m.decodeErrors!).length) delete m.decodeErrors;
  return m;
}

/** Deletes every conversation and reassembles from the stored transactions in id order. Returns the number of conversations. */
export async function rebuildConversations(store: Store, opts: { rules?: DissectRule[] } = {}): Promise<number> {
  const keys: string[] = [];
  for (let after: string | undefined; ;) {
    const page = store.listConversations({ limit: 1000, after });
    for (const c of page.items) keys.push(c.key);
    if (!page.next || page.items.length === 0) break;
    after = page.next;
  }
  await store.deleteConversations(keys); // (updateConversation's fn returning undefined changes nothing)
  const fresh = new Set<string>();
  let batch: TransactionRecord[] = [];
  for (let after: string | undefined; ;) {
    const page = store.listTransactions({ limit: 1000, after });
    for (const t of page.items) {
      const full = store.getTransaction(t.id);
      if (full) batch.push(full);
      if (batch.length >= 500) { await assembleRecords(store, batch, { rules: opts.rules, fresh }); batch = []; }
    }
    if (!page.next || page.items.length === 0) break;
    after = page.next;
  }
  if (batch.length) await assembleRecords(store, batch, { rules: opts.rules, fresh });
  let n = 0;
  for (let after: string | undefined; ;) {
    const page = store.listConversations({ limit: 1000, after });
    n += page.items.filter((c) => !isInternalConversation(c)).length;
    if (!page.next || page.items.length === 0) break;
    after = page.next;
  }
  return n;
}
