// Conversation assembly for codex over WebSocket (the Responses API on wss://…/v1/responses). A
// socket's messages are folded into its connection state (an internal object, dissect/openai-ws.ts),
// at a pace: streamed events are assembled at most every few hundred ms (ws-pace.ts), milestones at
// once. Each session the socket carried gives a line of turns, folded into the session's
// conversation with the lines of its other sockets (foldWsLine): codex reconnects and re-sends.
import type { ClientName, WsMessageRecord } from '../records.js';
import type { MetricDeltas } from '../metrics.js';
import type { Store } from '../store/store.js';
import { detectClient, isOpenaiWsPath, type DissectRule } from './dissect/index.js';
import { NO_SESSION_KEY, WsLineTurn, deriveWs, foldHistory, foldWsRecord, newConnState, type WsConnState, type WsLine } from './dissect/openai-ws.js';
import { lastSystemSig, type LineTurn } from './dissect/history-line.js';
import { utf8Head } from '../store/body-bytes.js';
import { assemblyDueIn, foldedUpTo, forgetUnfolded, noteAssembly, rememberUnfolded, unfoldedAfter } from './ws-pace.js';
import {
  betterClient, conversationByKey, conversationId, finishTurns, internalObject, lastAssistant, takeFresh,
  type AssembleOptions, type StoredConversation, type WsSocketLine,
} from './conversation-state.js';

/**
 * One socket's records of a batch (`server`: every server record of it in the batch, for the
 * pacing's memory): the number of conversations written, or undefined when the pacing skipped it.
 */
export async function assembleSocket(store: Store, conn: string, list: WsMessageRecord[], server: WsMessageRecord[], opts: AssembleOptions, bad: () => void): Promise<number | undefined> {
  if (!opts.throttle) return assembleWs(store, conn, list, opts, bad);
  rememberUnfolded(conn, server);
  if (throttled(store, conn, list)) return undefined;
  const assemble = () => assembleWs(store, conn, list, opts, bad);
  // only assemblies that fold server records set the pace: a skip needs a server mark to catch up from
  return list.some((r) => r.direction === 'server') ? pacedAssembly(conn, assemble) : assemble();
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

// Cheap look at a message before parsing it: codex's events and requests all start with a type.
const RESPONSES_TYPE = /"type"\s*:\s*"(response\.|error")/;

export function looksLikeOpenaiWs(r: WsMessageRecord, rules: DissectRule[]): boolean {
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
      if (foldOrPass(s, r) === 'bad') bads++;
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
 * A record the fold throws on is counted as bad and passed over (its seq is marked before anything
 * can throw). Thrown on, the state's transaction would be aborted, and every later assembly would
 * read the same record back from the store past the marks and stop at it again: the socket's
 * conversation would never move on. No record is known to throw; this keeps a future one from
 * freezing a session.
 */
function foldOrPass(s: WsConnState, r: WsMessageRecord): ReturnType<typeof foldWsRecord> {
  try {
    return foldWsRecord(s, r);
  } catch {
    return 'bad';
  }
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
