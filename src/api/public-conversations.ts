// Conversations as users see them (API, CLI): the assembler's internal per-connection objects are
// skipped and its private `_…` state is removed. Paging still returns `limit` public items.
import type { Conversation } from '../records.js';
import type { Page, Store } from '../store/store.js';
import { isInternalConversation, publicConversation, type StoredConversation } from '../workers/assemble.js';

export function listPublicConversations(store: Store, q: { client?: string; limit?: number; after?: string }): Page<Conversation> {
  const limit = q.limit ?? 100;
  const items: Conversation[] = [];
  // Only as many as the page still needs: the store's cursor is then the page's.
  for (let after = q.after; ;) {
    const page = store.listConversations({ ...q, after, limit: limit - items.length });
    for (const c of page.items) if (!isInternalConversation(c)) items.push(publicConversation(c as StoredConversation));
    if (!page.next || items.length === limit) return { items, next: page.next };
    after = page.next;
  }
}

export function getPublicConversation(store: Store, id: string): Conversation | undefined {
  const c = store.getConversation(id);
  return c && !isInternalConversation(c) ? publicConversation(c as StoredConversation) : undefined;
}
