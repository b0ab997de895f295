// Captured records → Conversations, inside the pool workers after each committed batch.
//
// Workers are stateless and share the pool, so every bit of assembly state lives in the store and
// is changed only through store.updateConversation (an atomic read-modify-write). The model:
//   • Each conversation stores what it was built from (private `_http` exchanges, or for codex's
//     WebSocket the version of the line each socket of the session gave, `_lines`, each line derived
//     from that socket's `_ws` state in an internal object, where it stays) and its `turns` are
//     DERIVED from that by a pure function, never patched in place (a session over several sockets
//     keeps checkpoints of that fold, so an update folds again only from the socket that changed —
//     see foldWsLine). Folding a record is idempotent
//     (exchanges by transaction id, WebSocket directions by seq high-water mark) and the derivation
//     sorts by wire keys, so the result does not depend on which worker ran first, on the order of
//     the two WebSocket directions, or on a re-delivered batch — and a rebuild equals the live result.
//   • HTTP APIs re-send the history on every request: exchanges are folded into a main line by
//     message-prefix matching (see foldExchanges); a Claude Code sub-agent's into a line of its
//     own under the call that started it (see foldSession). codex over WebSocket mostly sends
//     only new items: turns are requests and responses merged in wire order, a request that
//     re-sends the whole history folded by the same prefix matching (see dissect/openai-ws.ts,
//     dissect/history-line.ts).
// Bad data (non-JSON, unknown shapes) is skipped and counted, never thrown.
import type { Block, ClientName, Conversation, HttpTransaction, Provider, Subagent, TransactionRecord, Turn, WsMessageRecord } from '../records.js';
import type { MetricDeltas } from '../metrics.js';
import type { Store } from '../store/store.js';
import { hash, isObj, msgSig, type Exchange, type Msg, type Reply } from './dissect/blocks.js';
import { detectClient, dissectHttp, isOpenaiWsPath, type DissectRule } from './dissect/index.js';
import { NO_SESSION_KEY, WsLineTurn, deriveWs, foldHistory, foldWsRecord, newConnState, type WsConnState, type WsLine } from './dissect/openai-ws.js';
import { continueLine, lastSystemSig, type LineTurn } from './dissect/history-line.js';
import { utf8Head } from '../store/body-bytes.js';
import { assemblyDueIn, foldedUpTo, forgetUnfolded, noteAssembly, rememberUnfolded, unfoldedAfter } from './ws-pace.js';

/** One request/response as kept in a conversation's state: history as message signatures. */
interface StoredExchange {
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

interface HttpState {
  /** message content by signature, from the earliest exchange that carried it */
  msgs: Record<string, { from: string; ts: number; msg: Msg }>;
  exchanges: StoredExchange[]; // sorted by (ts, id)
}

/** One socket's line of a codex session, as its session's conversation keeps it. */
interface WsSocketLine {
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

// A batch of nothing but streamed events (`*.delta`, and the items and parts added and done between
// a response's start and end) is not assembled when its socket was assembled moments ago
// (ws-pace.ts says how long "moments" is); the next assembly folds the skipped records, from this
// worker's memory or the store (the state's seq marks say what was folded). Milestones (requests,
// response.created/done/completed/failed/incomplete, error, close) are always assembled, and a
// trailing timer catches the last skipped batch of a burst.
const trailingWsAssembly = new Map<string, { timer: NodeJS.Timeout; run: () => void }>();
/** trailing assemblies started and not yet finished */
const trailingRunning = new Set<Promise<unknown>>();
const DELTA_EVENT = /"type"\s*:\s*"[a-z_.]*delta"/;
const LEADING_TYPE = /^\s*\{\s*"type"\s*:\s*"([a-z_.]*)"/;
const MILESTONE_EVENTS: ReadonlySet<string> = new Set(['response.created', 'response.done', 'response.completed', 'response.failed', 'response.incomplete', 'error']);
const CREATE_REQUEST = /"type"\s*:\s*"response\.create"/;

/** Each direction in seq order (the order foldWsRecord needs), client first. */
function bySeq(a: WsMessageRecord, b: WsMessageRecord): number {
  return a.direction === b.direction ? a.seq - b.seq : a.direction === 'client' ? -1 : 1;
}

/** Two record sequences, each already in bySeq order, as one (`a` first on ties, as a stable sort of a then b); `a` is read as it goes. */
function* mergeBySeq(a: Iterable<WsMessageRecord>, b: readonly WsMessageRecord[]): Generator<WsMessageRecord> {
  let j = 0;
  for (const r of a) {
    while (j < b.length && bySeq(b[j], r) < 0) yield b[j++];
    yield r;
  }
  while (j < b.length) yield b[j++];
}

/**
 * How much of a message's text the pacing tests read: the event or request type leads its JSON
 * (codex serialises `type` first). A request whose type came later would only be folded with the
 * next batch that is assembled, never lost.
 */
const TYPE_HEAD = 512;

/** A record that changes no conversation: a client text message that is not a request (foldWsRecord ignores it). */
function isInert(r: WsMessageRecord): boolean {
  if (r.direction !== 'client' || r.opcode !== 'text') return false;
  const head = utf8Head(r, 'body', TYPE_HEAD);
  return head !== undefined && !CREATE_REQUEST.test(head);
}

/**
 * A streamed event that is no milestone. Every assembly rewrites the connection's whole state, and
 * a response's items and parts added and done (a dozen events per response) were each assembled at
 * once, outside the pacing: a codex session paid a dozen rewrites of its state per request.
 * An event whose type does not lead its JSON is taken for a milestone.
 */
function isStreamed(r: WsMessageRecord): boolean {
  if (r.direction !== 'server' || r.opcode !== 'text') return false;
  const head = utf8Head(r, 'body', TYPE_HEAD);
  if (head === undefined) return false;
  const type = LEADING_TYPE.exec(head)?.[1];
  return type !== undefined ? !MILESTONE_EVENTS.has(type) : DELTA_EVENT.test(head);
}

function throttled(store: Store, conn: string, list: WsMessageRecord[]): boolean {
  if (list.every(isInert)) return true;
  const now = performance.now();
  if (!list.every((r) => isStreamed(r) || isInert(r)) || assemblyDueIn(conn, now) <= 0) return false;
  if (!trailingWsAssembly.has(conn)) {
    const run = () => {
      trailingWsAssembly.delete(conn);
      const p = pacedAssembly(conn, () => assembleWs(store, conn, [], {}, () => {})).catch(() => { /* the next batch or the connection end folds it */ });
      trailingRunning.add(p);
      void p.finally(() => trailingRunning.delete(p));
    };
    const timer = setTimeout(run, Math.max(1, assemblyDueIn(conn, now)));
    timer.unref();
    trailingWsAssembly.set(conn, { timer, run });
  }
  return true;
}

/**
 * Runs the trailing assemblies now instead of at their timers, and resolves when every one this
 * thread started has finished: the pool is closing (capture-worker exit, worker.ts), and a worker
 * must not be terminated while one of them is inside a write transaction.
 */
export async function finishTrailingAssemblies(): Promise<void> {
  for (const { timer, run } of [...trailingWsAssembly.values()]) {
    clearTimeout(timer);
    run();
  }
  await Promise.all(trailingRunning);
}

/** Runs an assembly of `conn` and notes its cost for the pacing. */
async function pacedAssembly<T>(conn: string, run: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await run();
  } finally {
    noteAssembly(conn, t0, performance.now() - t0);
  }
}

let defaultRules: DissectRule[] = [];
/** Endpoint rules for every later assembly in this thread: a capture worker's --dissect-rules (workerData). */
export function setDissectRules(rules: DissectRule[]): void { defaultRules = rules; }

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

const betterClient = (a: ClientName | undefined, b: ClientName | undefined): ClientName => (a && a !== 'generic' ? a : b ?? a ?? 'generic');

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
    try {
      const fresh = takeFresh(opts, key); // decided outside the callback: a store may run it more than once
      await store.updateConversation(key, (old) => foldHttp(fresh ? undefined : (old as StoredConversation | undefined), key, list));
      wrote();
      await writePointers(store, key, list, opts);
    } catch { failed(); }
  }
  for (const [conn, list] of wsByConn) {
    if (!opts.throttle) {
      try { wrote(await assembleWs(store, conn, list, opts, bad)); } catch { failed(); }
      continue;
    }
    rememberUnfolded(conn, serverByConn.get(conn) ?? []);
    if (throttled(store, conn, list)) continue;
    const assemble = () => assembleWs(store, conn, list, opts, bad);
    // only assemblies that fold server records set the pace: a skip needs a server mark to catch up from
    try { wrote(await (list.some((r) => r.direction === 'server') ? pacedAssembly(conn, assemble) : assemble())); } catch { failed(); }
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

function takeFresh(opts: AssembleOptions, key: string): boolean {
  if (!opts.fresh || opts.fresh.has(key)) return false;
  opts.fresh.add(key);
  return true;
}

// ── HTTP: exchanges folded into a main line ─────────────────────────────────────────────────

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

/** Tool results carry the name of the call they answer. Copies blocks (turns may share stored ones). */
function finishTurns(turns: Turn[]): Turn[] {
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

function lastAssistant(turns: Turn[]): Turn | undefined {
  for (let i = turns.length - 1; i >= 0; i--) if (turns[i].role === 'assistant' && !turns[i].superseded) return turns[i];
  return undefined;
}

// Responses over HTTP without prompt_cache_key: follow previous_response_id through pointer objects.
function pointerKey(responseId: string): string { return 'openai-responses:resp:' + responseId; }

/** Keys from prompt_cache_key need no pointers: the next request carries the same key. */
function needsPointer(ex: Exchange): boolean {
  return ex.provider === 'openai-responses' && (ex.key.includes(':prefix:') || ex.key.includes(':chain:'));
}

async function resolveChain(store: Store, prev: string): Promise<string> {
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

function internalObject(key: string, provider: Provider, ts: number, extra: Partial<StoredConversation>): StoredConversation {
  return { id: conversationId(key), key, client: 'generic', provider, startedTs: ts, updatedTs: ts, turns: [], internal: true, ...extra };
}

// ── codex over WebSocket ─────────────────────────────────────────────────────────────────────

// Cheap look at a message before parsing it: codex's events and requests all start with a type.
const RESPONSES_TYPE = /"type"\s*:\s*"(response\.|error")/;

function looksLikeOpenaiWs(r: WsMessageRecord, rules: DissectRule[]): boolean {
  if (r.opcode === 'close') return isOpenaiWsPath(r.path, rules, r.host);
  if (r.opcode !== 'text') return false;
  const head = utf8Head(r, 'body', TYPE_HEAD);
  if (head === undefined) return false;
  return isOpenaiWsPath(r.path, rules, r.host) || RESPONSES_TYPE.test(head);
}

/**
 * The connection ended (its final Connection record is committed). A socket that died without a
 * close frame (killed agent, reset) would otherwise leave its last response "streaming" forever.
 */
export async function connectionEnded(store: Store, conn: string, endTs: number): Promise<MetricDeltas> {
  if (!conversationByKey(store, 'openai-ws:' + conn)) { forgetUnfolded(conn); return {}; }
  const n = await assembleWs(store, conn, [], {}, () => {}, endTs);
  forgetUnfolded(conn);
  return n ? { storeRecords: { CONVERSATION: n } } : {};
}

async function assembleWs(store: Store, conn: string, records: WsMessageRecord[], opts: AssembleOptions, bad: () => void, endedAt?: number): Promise<number> {
  const key = 'openai-ws:' + conn;
  // The end of the connection counts as a close: from the end hook, or from the stored connection
  // record when it was committed first (and in a rebuild, which sees no end hook).
  const closedAt = endedAt ?? store.getConnection(conn)?.endTs;
  // The 101 transaction holds the agent's headers (committed before its messages, normally).
  const up = records[0]?.upgrade ? store.getTransaction(records[0].upgrade) : undefined;
  const headersClient: ClientName = up && up.kind === 'HTTP' ? detectClient(up.reqHeaders) : 'generic';
  let bads = 0;
  const freshConn = takeFresh(opts, key);
  const batchIds = new Set(records.map((r) => r.id));
  const stored = (await store.updateConversation(key, (old) => {
    const prev = freshConn ? undefined : (old as StoredConversation | undefined);
    const s: WsConnState = prev?._ws ? prev._ws : newConnState(conn);
    bads = 0;
    // Records past the state's marks that earlier (throttled) batches left unfolded, then this
    // batch (already among them once committed; folding is idempotent by seq).
    // Only server delta batches are ever skipped, so only the server direction can lag its mark.
    const missed = unfoldedAfter(conn, s.serverSeq, batchIds) ?? store.wsMessagesAfter(conn, { client: Infinity, server: s.serverSeq }, batchIds);
    const folded = missed.length ? mergeBySeq(missed, [...records].sort(bySeq)) : records;
    let firstTs: number | undefined, lastTs = -Infinity;
    for (const r of folded) {
      firstTs ??= r.ts;
      if (r.ts > lastTs) lastTs = r.ts;
      if (foldWsRecord(s, r) === 'bad') bads++;
    }
    // Nothing folded and nothing known: no state to keep. Once records were folded the state is
    // kept even with no turns (a socket that only looks like the Responses API), so its seq marks
    // spare the next assembly a catch-up read from the connection's first record.
    if (firstTs === undefined && !prev) return undefined;
    if (closedAt !== undefined && s.closedTs === undefined) s.closedTs = closedAt;
    s.client = betterClient(headersClient, s.client);
    const ts = firstTs === undefined ? closedAt ?? prev?.updatedTs ?? Date.now() : lastTs;
    return internalObject(key, 'openai-ws', prev?.startedTs ?? firstTs ?? ts, { updatedTs: Math.max(prev?.updatedTs ?? 0, ts), client: s.client ?? 'generic', _ws: s, _v: (prev?._v ?? 0) + 1 });
  })) as StoredConversation | undefined;
  for (let i = 0; i < bads; i++) bad();
  if (stored?._ws) foldedUpTo(conn, stored._ws.serverSeq);
  if (!stored?._ws) return 0;
  let n = 0;
  for (const [pck, line] of socketLines(stored)) {
    const ckey = wsConversationKey(conn, pck);
    const fresh = takeFresh(opts, ckey);
    const read = (c: string) => { const st = conversationByKey(store, 'openai-ws:' + c); return st ? socketLines(st).get(pck) : undefined; };
    await store.updateConversation(ckey, (old) => foldWsLine(fresh ? undefined : (old as StoredConversation | undefined), ckey, conn, line, read));
    n++;
  }
  return n + 1;
}

/**
 * A codex session's conversation key. prompt_cache_key is codex's session id, the same on every
 * socket the session opens: codex reconnects (the 60-minute connection limit, a network drop, an
 * idle close) and re-sends the whole history on the new socket, which is still the same
 * conversation. Requests with no key are one session per socket.
 */
function wsConversationKey(conn: string, pck: string): string {
  return pck === NO_SESSION_KEY ? `openai-ws:${conn}:${pck}` : `openai-ws:${pck}`;
}

/** A socket's lines, one per session it carried, derived from its stored connection state alone. */
function socketLines(stored: StoredConversation): Map<string, WsSocketLine> {
  const out = new Map<string, WsSocketLine>();
  if (!stored._ws) return out;
  for (const d of deriveWs(stored._ws)) {
    const line: WsSocketLine = { v: stored._v ?? 0, startedTs: d.startedTs, updatedTs: d.updatedTs, client: stored._ws.client ?? 'generic', turns: finishTurns(d.turns) };
    if (d.model) line.model = d.model;
    if (d.parent) line.parent = d.parent;
    out.set(d.pck, line);
  }
  return out;
}

/** The sockets of a session in the order their lines are folded: by start, then connection id. */
function socketOrder(lines: Record<string, WsSocketLine>): string[] {
  return Object.keys(lines).sort((a, b) => lines[a].startedTs - lines[b].startedTs || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * A socket's line into its session's conversation. Two workers may derive from successive states
 * of a socket: the later state (higher version) wins. `read` gives another socket's line, from its
 * stored connection state, when the fold has to go over it again.
 *
 * The conversation is the fold of its sockets' lines in the order the sockets started: a new socket
 * re-sends the whole history, so each line is folded like a whole history (foldHistory) — what an
 * earlier socket showed stays, only what is new is added. The result depends only on the lines,
 * not on the order they were folded in, so a rebuild equals the live result.
 *
 * Only the lines from the changed one on are folded again, onto the checkpoint of the sockets
 * before it (see WsSocketLine.base): the usual update, of the last socket, folds that socket's
 * line alone and reads nothing else; a late update of an earlier socket (its close, a lagging
 * direction) reads the later sockets' lines from their connection states. Every line's turns stay
 * in its socket's connection state, so the conversation holds the session's turns once, whatever
 * number of sockets re-sent them.
 */
function foldWsLine(old: StoredConversation | undefined, key: string, conn: string, line: WsSocketLine, read: (conn: string) => WsSocketLine | undefined): StoredConversation | undefined {
  if (old && (old._lines?.[conn]?.v ?? -1) >= line.v) return old;
  const before = old?._lines ?? {};
  const oldOrder = socketOrder(before);
  // earlier conversations stored every line's turns and no checkpoints: folded again from them
  const legacy = oldOrder.some((c) => before[c].turns);
  // what is known of each line's turns (null: its socket's state is gone, as in a rebuild)
  const known = new Map<string, WsSocketLine | null>([[conn, line]]);
  let lines: Record<string, WsSocketLine>, order: string[], s: number;
  for (;;) {
    lines = { ...before };
    for (const [c, l] of known) if (l) lines[c] = l; else delete lines[c];
    order = socketOrder(lines);
    // the first position whose line, or whose earlier lines, changed: the checkpoints before it hold
    s = 0;
    if (!legacy) while (s < order.length && order[s] === oldOrder[s] && !known.has(order[s])) s++;
    const missing = order.slice(s).filter((c) => !known.has(c));
    if (!missing.length) break;
    for (const c of missing) known.set(c, (legacy ? before[c] : read(c)) ?? null);
  }
  // the old checkpoints as lines of turns, sharing turn objects with the conversation's turns
  const shown: LineTurn[] = oldOrder.length ? (old?.turns ?? []).map((t) => new WsLineTurn(t)) : [];
  const oldCps: LineTurn[][] = [];
  for (let i = oldOrder.length - 1, next = shown; i >= 0; i--) {
    const l = before[oldOrder[i]];
    next = oldCps[i] = [...next.slice(0, l.base ?? 0), ...(l.rest ?? []).map((t) => new WsLineTurn(t))];
  }
  const cps: LineTurn[][] = oldCps.slice(0, s);
  const turns = s < oldOrder.length ? oldCps[s] : shown;
  const folded: WsLine = { turns, sys: lastSystemSig(turns) };
  for (let i = s; i < order.length; i++) {
    cps.push(folded.turns.slice());
    foldHistory(folded, lines[order[i]].turns!.map((t) => new WsLineTurn(t)));
  }
  // each checkpoint as what it shares with the next one (the last: with the conversation's turns)
  const stored: Record<string, WsSocketLine> = {};
  for (let i = order.length - 1, next = folded.turns; i >= 0; i--) {
    const cp = cps[i];
    let m = 0;
    while (m < cp.length && m < next.length && cp[m] === next[m]) m++;
    const { turns: _t, base: _b, rest: _r, ...meta } = lines[order[i]];
    const l: WsSocketLine = meta;
    if (m) l.base = m;
    if (m < cp.length) l.rest = cp.slice(m).map((t) => t.turn);
    stored[order[i]] = l;
    next = cp;
  }
  let client: ClientName | undefined, model: string | undefined, parent: string | undefined;
  for (const c of order) {
    client = betterClient(client, lines[c].client);
    model = lines[c].model ?? model;
    parent = lines[c].parent ?? parent;
  }
  const conv: StoredConversation = {
    id: old?.id ?? conversationId(key), key, client: client ?? 'generic', provider: 'openai-ws',
    startedTs: Math.min(...order.map((c) => lines[c].startedTs)), updatedTs: Math.max(...order.map((c) => lines[c].updatedTs)),
    turns: finishTurns(folded.turns.map((t) => t.turn)),
    _lines: Object.fromEntries(order.map((c) => [c, stored[c]])),
  };
  if (model) conv.model = model;
  if (parent) conv.parent = conversationId(wsConversationKey(conn, parent));
  const inc = lastAssistant(conv.turns)?.incomplete;
  if (inc) conv.incomplete = inc;
  return conv;
}
