// Conversations as users see them (API, CLI): the assembler's internal per-connection objects are
// skipped and its private `_…` state is removed. Paging still returns `limit` public items.
import type { Conversation } from '../records.js';
import type { Page, Store } from '../store/store.js';
import { isInternalConversation, publicConversation, type StoredConversation } from '../workers/assemble.js';

export function listPublicConversations(store: Store, q: { client?: string; limit?: number; after?: string }): Page<Conversation> {
  const limit = q.limit ?? 100;
  const items: Conversation[] = [];
  let after = q.after;
  for (;;) {
    const page = store.listConversations({ ...q, after, limit });
    for (const c of page.items) {
      if (isInternalConversation(c)) continue;
      items.push(publicConversation(c as StoredConversation));
      if (items.length === limit) return { items, next: c.id };
    }
    if (!page.next) return { items, next: null };
    after = page.next;
  }
}

export function getPublicConversation(store: Store, id: string): Conversation | undefined {
  const c = store.getConversation(id);
  return c && !isInternalConversation(c) ? publicConversation(c as StoredConversation) : undefined;
}
