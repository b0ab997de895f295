// Shapes the API serves: a transaction without its bodies (listings, SSE), looked up the cheap way
// when the store can (metadata only) and stripped otherwise.
import type { TransactionRecord } from '../records.js';
import type { Store } from '../store/store.js';
import type { StoredBody } from '../store/lmdb.js';

const BODY_FIELDS = ['body', 'bodyBase64', 'reqBody', 'reqBodyBase64', 'respBody', 'respBodyBase64', 'respEvents'] as const;

export function transactionMeta(store: Store, id: string): TransactionRecord | undefined {
  const s = store as Store & { getTransactionMeta?: (id: string) => TransactionRecord | undefined };
  if (s.getTransactionMeta) return s.getTransactionMeta(id);
  const r = store.getTransaction(id) as (TransactionRecord & Record<string, unknown>) | undefined;
  if (r) for (const f of BODY_FIELDS) delete r[f];
  return r;
}


/** A transaction's metadata and body fields apart, bodies as stored when the store can (the API encodes them a piece at a time). */
export function transactionParts(store: Store, id: string): { meta: TransactionRecord; bodies: [string, StoredBody][] } | undefined {
  const s = store as Store & { getTransactionParts?: (id: string) => { meta: TransactionRecord; bodies: [string, StoredBody][] } | undefined };
  if (s.getTransactionParts) return s.getTransactionParts(id);
  const r = store.getTransaction(id) as (TransactionRecord & Record<string, unknown>) | undefined;
  if (!r) return undefined;
  const bodies: [string, StoredBody][] = [];
  for (const f of BODY_FIELDS) if (r[f] !== undefined) { bodies.push([f, r[f]]); delete r[f]; }
  return { meta: r, bodies };
}
