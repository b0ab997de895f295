// Conversations as users see them (API, CLI): the assembler's internal per-connection objects are
// skipped and its private `_…` state is removed. Paging still returns `limit` public items.
import type { Conversation } from '../records.js';
import type { Page, Store } from '../store/store.js';
import { isInternalConversation, publicConversation, type StoredConversation } from '../workers/assemble.js';

/** About the length of v's JSON text, without making it (and without recursion: captured tool arguments nest deep). */
export function jsonSizeEstimate(v: unknown): number {
  let n = 0;
  const stack: unknown[] = [v];
  while (stack.length) {
    const x = stack.pop();
    if (typeof x === 'string') n += x.length + 2;
    else if (Array.isArray(x)) { n += 1 + x.length; for (const e of x) stack.push(e); }
    else if (x !== null && typeof x === 'object') for (const [k, e] of Object.entries(x)) { n += k.length + 4; stack.push(e); }
    else n += 6;
  }
  return n;
}

/**
 * `maxBytes` ends a page early once its conversations' JSON would pass that size (`next` goes on
 * from there); the first conversation of a page is listed whatever its size.
 */
export function listPublicConversations(store: Store, q: { client?: string; limit?: number; after?: string; maxBytes?: number }): Page<Conversation> {
  const limit = q.limit ?? 100;
  const items: Conversation[] = [];
  let left = q.maxBytes ?? Infinity;
  let taken = 0;
  const fits = q.maxBytes === undefined ? undefined : (c: Conversation): boolean => {
    if (isInternalConversation(c)) return true; // not listed
    left -= jsonSizeEstimate(publicConversation(c as StoredConversation));
    return taken++ === 0 || left >= 0;
  };
  // Only as many as the page still needs: the store's cursor is then the page's.
  for (let after = q.after; ;) {
    const page = store.listConversations({ client: q.client, after, limit: limit - items.length, fits, listedOnly: true });
    for (const c of page.items) if (!isInternalConversation(c)) items.push(publicConversation(c as StoredConversation));
    if (!page.next || items.length === limit || left < 0) return { items, next: page.next };
    after = page.next;
  }
}

export function getPublicConversation(store: Store, id: string): Conversation | undefined {
  const c = store.getConversation(id);
  return c && !isInternalConversation(c) ? publicConversation(c as StoredConversation) : undefined;
}
