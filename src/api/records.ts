// Shapes the API serves: a transaction without its bodies (listings, SSE), looked up the cheap way
// when the store can (metadata only) and stripped otherwise.
import type { TransactionRecord } from '../records.js';
import type { Store } from '../store/store.js';

const BODY_FIELDS = ['body', 'bodyBase64', 'reqBody', 'reqBodyBase64', 'respBody', 'respBodyBase64', 'respEvents'] as const;

export function transactionMeta(store: Store, id: string): TransactionRecord | undefined {
  const s = store as Store & { getTransactionMeta?: (id: string) => TransactionRecord | undefined };
  if (s.getTransactionMeta) return s.getTransactionMeta(id);
  const r = store.getTransaction(id) as (TransactionRecord & Record<string, unknown>) | undefined;
  if (r) for (const f of BODY_FIELDS) delete r[f];
  return r;
}

