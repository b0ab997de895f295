// What conversation assembly keeps in the store (a StoredConversation: the public Conversation plus
// the private `_` fields it is derived from), and the helpers its HTTP and WebSocket paths share.
import type { ClientName, Conversation, Provider, Turn } from '../records.js';
import type { Store } from '../store/store.js';
import { hash, type Msg, type Reply } from './dissect/blocks.js';
import type { DissectRule } from './dissect/index.js';
import type { WsConnState } from './dissect/openai-ws.js';

/** One request/response as kept in a conversation's state: history as message signatures. */
export interface StoredExchange {
  id: string;
  ts: number;
  /** the whole history in memory; in the store, only what follows `shares` (see storedHttpState) */
  hist: string[];
  /** the history begins with the first `keep` signatures of the earlier exchange `of` */
  shares?: { of: string; keep: number };
  prev?: string;
  model?: string;
  reply?: Reply;
}

export interface HttpState {
  /** message content by signature, from the earliest exchange that carried it */
  msgs: Record<string, { from: string; ts: number; msg: Msg }>;
  exchanges: StoredExchange[]; // sorted by (ts, id)
}


/** One socket's line of a codex session, as its session's conversation keeps it. */
export interface WsSocketLine {
  /** version of the connection state it was derived from: a later state replaces it */
  v: number;
  startedTs: number;
  updatedTs: number;
  client: ClientName;
  model?: string;
  /** the session key of the thread that started this one (a codex sub-agent) */
  parent?: string;
  /**
   * The socket's turns: handed to foldWsLine, not stored (the socket's connection state holds
   * them). Conversations written before the checkpoints below stored them for every socket of a
   * session seen on more than one.
   */
  turns?: Turn[];
  /**
   * Checkpoint: the session's line before this socket's line was folded in (the fold of the
   * earlier sockets' lines) — its first `base` turns are those of the next socket's checkpoint (of
   * the conversation's turns, for the last socket), then `rest`: what a later socket cut away.
   * Absent: none.
   */
  base?: number;
  rest?: Turn[];
}

/** What the store holds: a Conversation plus private state (stripped by publicConversation). */
export interface StoredConversation extends Conversation {
  _http?: HttpState;
  _ws?: WsConnState;
  /** a codex session's lines, by connection */
  _lines?: Record<string, WsSocketLine>;
  /** version of a WebSocket connection state */
  _v?: number;
  /** response-id pointer: the conversation key that response belongs to */
  _target?: string;
}

export interface AssembleOptions {
  rules?: DissectRule[];
  /** rebuild: keys not yet in this set start from scratch (and are added) */
  fresh?: Set<string>;
  /** live capture: a socket streaming deltas is re-assembled at the pace ws-pace.ts sets */
  throttle?: boolean;
}

/**
 * Conversation ids are derived from the assembly key, so a rebuild (or another worker) gives the
 * same id; the store keeps the id a conversation was created with.
 */
export function conversationId(key: string): string {
  return hash('conversation:' + key);
}

/** A conversation (or a connection's internal state) by its assembly key; synchronous, so it can be read inside another key's updateConversation. */
export function conversationByKey(store: Store, key: string): StoredConversation | undefined {
  return store.getConversationByKey(key) as StoredConversation | undefined;
}

/** The API / export shape: private assembly state removed. */
export function publicConversation(c: StoredConversation): Conversation {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(c)) if (!k.startsWith('_')) out[k] = v;
  return out as unknown as Conversation;
}

export function isInternalConversation(c: Conversation): boolean {
  return c.internal === true;
}

export const betterClient = (a: ClientName | undefined, b: ClientName | undefined): ClientName => (a && a !== 'generic' ? a : b ?? a ?? 'generic');

/** In a rebuild, whether `key` starts from scratch (the first time it is met). */
export function takeFresh(opts: AssembleOptions, key: string): boolean {
  if (!opts.fresh || opts.fresh.has(key)) return false;
  opts.fresh.add(key);
  return true;
}

/** Tool results carry the name of the call they answer. Copies blocks (turns may share stored ones). */
export function finishTurns(turns: Turn[]): Turn[] {
  const names = new Map<string, string>();
  return turns.map((t) => ({
    ...t,
    blocks: t.blocks.map((b) => {
      if (b.type === 'tool_call') names.set(b.callId, b.name);
      if (b.type === 'tool_result' && !b.name && names.has(b.callId)) return { ...b, name: names.get(b.callId) };
      return b;
    }),
  }));
}

export function lastAssistant(turns: Turn[]): Turn | undefined {
  for (let i = turns.length - 1; i >= 0; i--) if (turns[i].role === 'assistant' && !turns[i].superseded) return turns[i];
  return undefined;
}

/** Assembler bookkeeping under its own key (a connection's state, a response-id pointer): listings skip it. */
export function internalObject(key: string, provider: Provider, ts: number, extra: Partial<StoredConversation>): StoredConversation {
  return { id: conversationId(key), key, client: 'generic', provider, startedTs: ts, updatedTs: ts, turns: [], internal: true, ...extra };
}
