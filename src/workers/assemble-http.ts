// Conversation assembly for HTTP APIs (Anthropic Messages, OpenAI Chat Completions and Responses,
// Gemini): every request re-sends the history, so a conversation's exchanges are folded into a main
// line by message-prefix matching (foldExchanges), and a Claude Code sub-agent's into a line of its
// own under the call that started it (foldSession). A Responses chain without prompt_cache_key is
// followed through pointer objects (resolveChain).
import type { Block, HttpTransaction, Subagent, Turn } from '../records.js';
import type { Store } from '../store/store.js';
import { isObj, msgSig, type Exchange, type Reply } from './dissect/blocks.js';
import { detectClient } from './dissect/index.js';
import { continueLine, lastSystemSig, type LineTurn } from './dissect/history-line.js';
import {
  betterClient, conversationByKey, conversationId, finishTurns, internalObject, lastAssistant, takeFresh,
  type AssembleOptions, type HttpState, type StoredConversation, type StoredExchange,
} from './conversation-state.js';

/** One conversation's exchanges of a batch folded into it (`wrote` once it is written), then the response-id pointers a chain needs. */
export async function assembleExchanges(store: Store, key: string, list: { ex: Exchange; tx: HttpTransaction }[], opts: AssembleOptions, wrote: () => void): Promise<void> {
  const fresh = takeFresh(opts, key); // decided outside the callback: a store may run it more than once
  await store.updateConversation(key, (old) => foldHttp(fresh ? undefined : (old as StoredConversation | undefined), key, list));
  wrote();
  await writePointers(store, key, list, opts);
}

function before(a: { ts: number; id: string }, b: { ts: number; id: string }): boolean {
  return a.ts < b.ts || (a.ts === b.ts && a.id < b.id);
}

function foldHttp(old: StoredConversation | undefined, key: string, list: { ex: Exchange; tx: HttpTransaction }[]): StoredConversation {
  const st: HttpState = old?._http ? loadedHttpState(old._http) : { msgs: {}, exchanges: [] };
  let client = old?.client;
  let parent = old?.parent;
  const added: StoredExchange[] = [];
  for (const { ex, tx } of list) {
    client = betterClient(client, detectClient(tx.reqHeaders));
    if (ex.parentKey) parent = conversationId(ex.parentKey);
    if (st.exchanges.some((e) => e.id === tx.id)) continue; // re-delivered
    const e: StoredExchange = { id: tx.id, ts: tx.ts, hist: [] };
    for (const msg of ex.history) {
      const sig = msgSig(msg.role, msg.blocks);
      e.hist.push(sig);
      const have = st.msgs[sig];
      // the content of the earliest exchange wins, whatever order the workers ran in
      if (!have || before(e, { ts: have.ts, id: have.from })) st.msgs[sig] = { from: e.id, ts: e.ts, msg };
    }
    if (ex.previousResponseId) e.prev = ex.previousResponseId;
    if (ex.model) e.model = ex.model;
    if (ex.reply) e.reply = ex.reply;
    st.exchanges.push(e);
    added.push(e);
  }
  st.exchanges.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
  for (const e of added) shareHistory(st.exchanges, e);
  const provider = list[0].ex.provider;
  const session = foldSession(st);
  const first = st.exchanges[0], last = st.exchanges[st.exchanges.length - 1];
  const conv: StoredConversation = {
    id: old?.id ?? conversationId(key),
    key,
    client: client ?? 'generic',
    provider: old?.provider ?? provider,
    model: session.model ?? old?.model,
    startedTs: first.ts,
    updatedTs: last.ts,
    turns: session.turns,
    ...(session.subagents.length ? { subagents: session.subagents } : {}),
    ...(parent ? { parent } : {}),
    _http: storedHttpState(st),
  };
  const inc = lastAssistant(conv.turns)?.incomplete;
  if (inc) conv.incomplete = inc;
  return conv;
}

// Every request of a session re-sends its history, so storing each exchange's history whole made a
// session's state grow with the square of its length (400 requests of a Claude Code session: 4.1
// MB, packed and written again at every request). In the store an exchange's history is the part
// of an earlier exchange's it begins with plus its own tail; the fold sees whole histories.

/** How many earlier exchanges a new one's history is matched against: a main line's previous request is among the last few, between side calls and sub-agents. */
const SHARE_CANDIDATES = 8;

/** Points e's history at the earlier exchange (by (ts, id)) it shares the longest start with. Bases are always earlier, so the chain expands in order. */
function shareHistory(sorted: StoredExchange[], e: StoredExchange): void {
  const at = sorted.indexOf(e);
  let best: { of: string; keep: number } | undefined;
  for (let j = at - 1; j >= 0 && j >= at - SHARE_CANDIDATES; j--) {
    const h = sorted[j].hist;
    let k = 0;
    while (k < h.length && k < e.hist.length && h[k] === e.hist[k]) k++;
    if (k > (best?.keep ?? 0)) best = { of: sorted[j].id, keep: k };
  }
  if (best) e.shares = best;
}

/** The state as stored: each history without the start it shares. */
function storedHttpState(st: HttpState): HttpState {
  return { msgs: st.msgs, exchanges: st.exchanges.map((e) => (e.shares ? { ...e, hist: e.hist.slice(e.shares.keep) } : e)) };
}

/** The stored state with whole histories (states stored before `shares` hold them whole already). */
function loadedHttpState(stored: HttpState): HttpState {
  const whole = new Map<string, string[]>();
  const exchanges = stored.exchanges.map((e) => {
    const base = e.shares && whole.get(e.shares.of);
    const x = base ? { ...e, hist: base.slice(0, e.shares!.keep).concat(e.hist) } : e;
    whole.set(x.id, x.hist);
    return x;
  });
  return { msgs: stored.msgs, exchanges };
}

/**
 * Claude Code's Agent tool starts a sub-agent whose requests carry the session's id, on a model of
 * its own, its first user message the call's `prompt`. Its exchanges are not the session's main
 * line, however long its history grows: they are the call's sub-agent. A later request of the
 * parent re-sends the call in its history, so it is never taken for the sub-agent, even when the
 * prompt repeats the user's words.
 * A fork (subagent_type "fork") inherits the parent's history instead: its requests re-send it up to
 * the call, then the call's result with the directive, which ends with the prompt; its line is shown
 * from there on (foldSession cuts what it inherited).
 * Exchange id → the call, and whether it is a fork's.
 */
function subagentExchanges(st: HttpState): Map<string, { callId: string; fork: boolean }> {
  // prompt → the earliest call with it, and the signature of the message that made it
  const calls = new Map<string, { callId: string; sig: string; at: { ts: number; id: string } }>();
  const prompts = new Map<string, string>(); // call id → its prompt
  const note = (sig: string, blocks: Block[], at: { ts: number; id: string }) => {
    for (const b of blocks) {
      if (b.type !== 'tool_call' || !isObj(b.arguments) || typeof b.arguments.prompt !== 'string') continue;
      const prompt = b.arguments.prompt.trim();
      const had = calls.get(prompt);
      if (!had || before(at, had.at)) calls.set(prompt, { callId: b.callId, sig, at });
      prompts.set(b.callId, prompt);
    }
  };
  for (const e of st.exchanges) if (e.reply) note(msgSig('assistant', e.reply.blocks), e.reply.blocks, e);
  for (const [sig, { from, ts, msg }] of Object.entries(st.msgs)) if (msg.role === 'assistant') note(sig, msg.blocks, { ts, id: from });
  const out = new Map<string, { callId: string; fork: boolean }>();
  if (calls.size === 0) return out;
  // Each history's fork message (null: none), by exchange. A history that begins with an earlier
  // one's (e.shares) is searched past that start only, unless the earlier one's is in it: searching
  // every history whole at every update was the square of the session's length.
  const forks = new Map<string, { at: number; callId: string } | null>();
  for (const e of st.exchanges) {
    const userSig = e.hist.find((sig) => st.msgs[sig]?.msg.role === 'user');
    const firstUser = userSig === undefined ? undefined : st.msgs[userSig].msg;
    for (const b of firstUser?.blocks ?? []) {
      const call = b.type === 'text' && !b.scaffolding ? calls.get(b.text.trim()) : undefined;
      if (call && before(call.at, e) && !e.hist.includes(call.sig)) { out.set(e.id, { callId: call.callId, fork: false }); break; }
    }
    const base = e.shares ? forks.get(e.shares.of) : undefined;
    const fork = base && base.at < e.shares!.keep ? base : forkedBy(st.msgs, e.hist, base === undefined ? 0 : e.shares!.keep, prompts);
    forks.set(e.id, fork ?? null);
    if (fork && !out.has(e.id)) out.set(e.id, { callId: fork.callId, fork: true });
  }
  return out;
}

/** The call a fork's history was forked by, and where: the first message from `from` on with that call's result and a text ending with its prompt. */
function forkedBy(msgs: HttpState['msgs'], hist: string[], from: number, prompts: Map<string, string>): { at: number; callId: string } | undefined {
  for (let at = from; at < hist.length; at++) {
    const m = msgs[hist[at]]?.msg;
    if (!m || m.role === 'assistant') continue;
    for (const b of m.blocks) {
      const prompt = b.type === 'tool_result' ? prompts.get(b.callId) : undefined;
      if (prompt !== undefined && m.blocks.some((t) => t.type === 'text' && !t.scaffolding && t.text.trimEnd().endsWith(prompt))) return { at, callId: (b as { callId: string }).callId };
    }
  }
  return undefined;
}

/** The model of a line: the one of its exchange with the longest history (Claude Code's side calls use a small model). */
function lineModel(exchanges: StoredExchange[]): string | undefined {
  let best: StoredExchange | undefined;
  for (const e of exchanges) if (!best || e.hist.length >= best.hist.length) best = e;
  return best?.model ?? best?.reply?.model;
}

/** The session's main line and its sub-agents' lines, each by foldExchanges, tool results named. */
function foldSession(st: HttpState): { model?: string; turns: Turn[]; subagents: Subagent[] } {
  const sub = subagentExchanges(st);
  const main = sub.size ? st.exchanges.filter((e) => !sub.has(e.id)) : st.exchanges;
  const model = lineModel(main);
  const byCall = new Map<string, { fork: boolean; list: StoredExchange[] }>();
  for (const e of st.exchanges) {
    const s = sub.get(e.id);
    if (!s) continue;
    const line = byCall.get(s.callId);
    if (line) line.list.push(e);
    else byCall.set(s.callId, { fork: s.fork, list: [e] });
  }
  const subagents: Subagent[] = [];
  for (const [callId, { fork, list }] of byCall) {
    const m = lineModel(list);
    let turns = foldExchanges(st, list, m);
    if (fork) turns = turns.slice(turns.findIndex((t) => t.blocks.some((b) => b.type === 'tool_call' && b.callId === callId)) + 1);
    subagents.push({ callId, ...(m ? { model: m } : {}), turns: finishTurns(turns) });
  }
  return { model, turns: finishTurns(foldExchanges(st, main, model)), subagents };
}

/**
 * Folds exchanges (oldest first) into one line of turns. Each request history continues the line
 * (incomplete replies in it are optional — a client may or may not send a cut reply back) as
 * continueLine says: extended, a reply retried, or rebased where the history was rewritten (same
 * model); a history with nothing in common, or on another model (title/quota calls), is a side
 * call, not shown.
 * previous_response_id requests carry only new items: R = T + new items.
 */
function foldExchanges(st: HttpState, exchanges: StoredExchange[], model: string | undefined): Turn[] {
  let T: LineTurn[] = [];
  let sys: string | undefined; // lastSystemSig(T), kept as the line grows
  // The line's index of each message of the last history R folded into it whole, and the signature
  // of the reply after them when it is not optional: the line's other turns are optional. A history
  // that begins with part of that one (e.shares, as the next request of a session does), or a
  // previous_response_id request's (the line and new items), is matched from there: matching it
  // from the start again made a session's every update go over every history, the square of its
  // length (800 requests: 44 ms of a 100 ms assembly).
  let last: { id: string; own: boolean; at: number[]; reply?: string } | undefined;
  for (const e of exchanges) {
    const emodel = e.model ?? e.reply?.model;
    if (model && emodel && emodel !== model) continue;
    let skip = 0, hist: string[];
    if (e.prev) {
      const items = newItems(e.hist, sys);
      if (last) { skip = last.at.length; hist = last.reply ? [last.reply, ...items] : items; } else hist = [...T.filter((t) => !t.optional).map((t) => t.sig), ...items];
    } else {
      skip = last?.own && e.shares?.of === last.id ? e.shares.keep : 0;
      hist = skip ? e.hist.slice(skip) : e.hist;
    }
    const R = hist.map((sig) => ({ sig }));
    // (with a skip the history continues the line, so `last` is replaced: its places are reused)
    const at = skip ? last!.at : [];
    at.length = skip;
    const c = continueLine(T, R, skip ? { i: at[skip - 1] + 1, j: skip } : undefined, at);
    if (!c) continue;
    if (c.line !== T) sys = lastSystemSig(c.line);
    T = c.line;
    let whole = true;
    for (const { sig } of R.slice(c.from - skip)) {
      const msg = st.msgs[sig]?.msg;
      if (!msg) { whole = false; continue; }
      at.push(T.length);
      T.push({ turn: { role: msg.role, blocks: msg.blocks, source: [e.id] }, sig, optional: false });
      if (msg.role === 'system') sys = sig;
    }
    let reply: string | undefined;
    if (e.reply) {
      const t = replyTurn(e.reply, [e.id]);
      T.push({ turn: t, sig: msgSig('assistant', e.reply.blocks), optional: !!t.incomplete });
      if (!t.incomplete) reply = T[T.length - 1].sig;
    }
    last = whole ? { id: e.id, own: !e.prev, at, reply } : undefined;
  }
  return T.map((t) => t.turn);
}

/**
 * A previous_response_id request's history past the line: its input items, without the
 * instructions when they are the line's last ones (`sys`) — the API does not carry `instructions`
 * over to the next response, so clients send them again with every request.
 */
function newItems(hist: string[], sys: string | undefined): string[] {
  return hist.length && hist[0] === sys ? hist.slice(1) : hist;
}

function replyTurn(r: Reply, source: string[]): Turn {
  const t: Turn = { role: 'assistant', blocks: r.blocks, source };
  if (r.usage) t.usage = r.usage;
  if (r.responseId) t.responseId = r.responseId;
  if (r.model) t.model = r.model;
  if (r.incomplete) t.incomplete = r.incomplete;
  if (r.error) t.error = r.error;
  return t;
}

// Responses over HTTP without prompt_cache_key: follow previous_response_id through pointer objects.
function pointerKey(responseId: string): string { return 'openai-responses:resp:' + responseId; }

/** Keys from prompt_cache_key need no pointers: the next request carries the same key. */
export function needsPointer(ex: Exchange): boolean {
  return ex.provider === 'openai-responses' && (ex.key.includes(':prefix:') || ex.key.includes(':chain:'));
}

export async function resolveChain(store: Store, prev: string): Promise<string> {
  const p = conversationByKey(store, pointerKey(prev));
  return p?._target ?? 'openai-responses:chain:' + prev;
}

async function writePointers(store: Store, key: string, list: { ex: Exchange; tx: HttpTransaction }[], opts: AssembleOptions): Promise<void> {
  for (const { ex, tx } of list) {
    const rid = ex.reply?.responseId;
    if (!rid || !needsPointer(ex)) continue;
    const pk = pointerKey(rid);
    takeFresh(opts, pk);
    await store.updateConversation(pk, () => internalObject(pk, 'openai-responses', tx.ts, { _target: key }));
  }
}
