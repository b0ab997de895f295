// codex's Responses API over WebSocket. A client message (`response.create`) that names the response
// it continues (previous_response_id) carries only the NEW input items; one that does not carries
// the whole history (codex sends that when the request does not extend the last one: another
// model, effort or tools, a compaction, no completed response), and it is folded into the line by
// message prefix, like an HTTP request (history-line.ts). The server streams one event per message. The
// two directions are separate ordered streams that different workers may assemble in either order,
// so this module keeps a per-connection state (stored, folded atomically by direction) and derives
// turns from it deterministically: requests
// and responses are merged by (ts, client-before-server, seq) — a response cannot start before the
// request that caused it was read — and each response belongs to the request it follows.
import { isDeepStrictEqual } from 'node:util';
import type { ClientName, Turn, WsMessageRecord } from '../../records.js';
import { isObj, msgKey, parseJson, str, type Msg } from './blocks.js';
import { continueLine, lastSystemSig, superseded, type LineTurn } from './history-line.js';
import { foldEvent, foldReply, inputMessages, newFold, responsesSession, type ResponseFold } from './openai-responses.js';

/**
 * `prev`: the previous_response_id the request continues (then `msgs` are only the new items).
 * `sysOf`: its first message, the instructions, is that of the earlier request at this index of
 * `requests` (and left out of `msgs`): codex repeats them with every request, and the state is
 * rewritten at every assembly.
 */
export interface WsRequest { seq: number; ts: number; id: string; pck: string; prev?: string; model?: string; msgs: Msg[]; sysOf?: number; prewarm?: boolean; /** a sub-agent's parent thread (its session key) */ parent?: string }
export interface WsResponse { seq: number; ts: number; lastTs: number; firstId: string; lastId: string; fold: ResponseFold }

/** Everything assembled so far about one codex WebSocket connection. */
export interface WsConnState {
  conn: string;
  client?: ClientName;
  requests: WsRequest[]; // client direction, wire order
  responses: WsResponse[]; // server direction, wire order
  /** highest seq folded per direction: re-delivered records are ignored */
  clientSeq: number;
  serverSeq: number;
  closedTs?: number;
}

/** The session key of a request with no prompt_cache_key. */
export const NO_SESSION_KEY = 'default';

export function newConnState(conn: string): WsConnState {
  return { conn, requests: [], responses: [], clientSeq: -1, serverSeq: -1 };
}

const SETTLES: ReadonlySet<string> = new Set(['error', 'response.completed', 'response.failed', 'response.incomplete']);

/** A client message is a codex request when it says so. */
export function isResponseCreate(body: unknown): body is Record<string, any> {
  return isObj(body) && body.type === 'response.create';
}

/**
 * Folds one record of the connection into the state. Returns 'bad' for a text message that is not
 * JSON (counted by the caller), else whether it was used.
 */
export function foldWsRecord(s: WsConnState, r: WsMessageRecord): 'used' | 'ignored' | 'bad' {
  const client = r.direction === 'client';
  if (r.seq <= (client ? s.clientSeq : s.serverSeq)) return 'ignored';
  if (client) s.clientSeq = r.seq; else s.serverSeq = r.seq;
  if (r.opcode === 'close') { s.closedTs = Math.min(s.closedTs ?? r.ts, r.ts); return 'used'; }
  if (r.opcode !== 'text' || r.body === undefined) return 'ignored';
  const msg = parseJson(r.body);
  if (!isObj(msg)) return 'bad';
  if (client) {
    if (!isResponseCreate(msg)) return 'ignored';
    const meta = isObj(msg.client_metadata) ? msg.client_metadata : {};
    if (meta['x-codex-turn-metadata'] !== undefined && (!s.client || s.client === 'generic')) s.client = 'codex';
    const session = responsesSession(msg);
    const req: WsRequest = { seq: r.seq, ts: r.ts, id: r.id, pck: session?.id ?? NO_SESSION_KEY, msgs: inputMessages(msg.input, msg.instructions) };
    if (session?.parent) req.parent = session.parent;
    if (str(msg.previous_response_id)) req.prev = msg.previous_response_id;
    if (str(msg.model)) req.model = msg.model;
    if (msg.generate === false) req.prewarm = true;
    const last = s.requests.length - 1;
    const of = last < 0 ? undefined : s.requests[last].sysOf ?? last;
    if (of !== undefined && req.msgs[0]?.role === 'system' && s.requests[of].msgs[0]?.role === 'system' && isDeepStrictEqual(req.msgs[0], s.requests[of].msgs[0])) {
      req.msgs = req.msgs.slice(1);
      req.sysOf = of;
    }
    s.requests.push(req);
    return 'used';
  }
  const type = str(msg.type) ?? '';
  let cur = s.responses[s.responses.length - 1];
  const open = cur && !cur.fold.ended;
  // A new response starts a new entry (a response that was still open is then known to have been
  // abandoned: foldReply marks it 'aborted'); with none open, so does an event that settles one (a
  // failure, an error such as a rate limit). A mid-stream event with no response open belongs to no
  // turn: its response.created was not captured, or the socket only looks like the Responses API.
  if (type === 'response.created' || (!open && SETTLES.has(type))) {
    cur = { seq: r.seq, ts: r.ts, lastTs: r.ts, firstId: r.id, lastId: r.id, fold: newFold() };
    s.responses.push(cur);
  } else if (!open) return 'ignored';
  foldEvent(cur.fold, msg);
  cur.lastId = r.id;
  cur.lastTs = r.ts;
  return 'used';
}

export interface WsConversation { pck: string; model?: string; parent?: string; startedTs: number; updatedTs: number; turns: Turn[] }

/** A line of codex turns, and the signature of the last instructions shown in it. */
export interface WsLine { turns: LineTurn[]; sys?: string }

/**
 * A codex turn in a line. Instructions are optional: a whole history carries them apart (from
 * `instructions`, ahead of everything), so they are matched on their own; so is a cut reply, which
 * codex does not send back, and a turn a rewritten history superseded. The signature is built when first read: a line that only ever grows
 * by new items (the usual socket) reads none but its instructions'. It is msgKey, not the hashed
 * msgSig: lines are compared in memory only, and a session over several sockets compares each
 * update's whole re-sent history with the line before it.
 */
export class WsLineTurn implements LineTurn {
  readonly optional: boolean;
  private s?: string;
  constructor(readonly turn: Turn) { this.optional = turn.role === 'system' || turn.incomplete !== undefined || turn.superseded === true; }
  get sig(): string { return (this.s ??= msgKey(this.turn.role, this.turn.blocks)); }
}

/** Appends turns, leaving out instructions equal to the last ones shown: codex repeats `instructions` on every request. */
export function appendTurns(l: WsLine, add: readonly LineTurn[]): void {
  for (const t of add) {
    if (t.turn.role === 'system') { if (t.sig === l.sys) continue; l.sys = t.sig; }
    l.turns.push(t);
  }
}

/**
 * A whole history folded into the line: what the line already has stays (with its sources), only
 * what is new is appended. A history rewritten after a common start cuts the line there (as for
 * HTTP); one with nothing in common is still this session's, so it is appended whole.
 */
export function foldHistory(l: WsLine, history: readonly LineTurn[]): void {
  const lead = history[0]?.turn.role === 'system' ? history[0] : undefined;
  const rest = lead ? history.slice(1) : history;
  const at: number[] = [];
  const c = continueLine(l.turns, rest, undefined, at);
  let line = c?.line ?? l.turns;
  // A socket's line folded as a history (foldWsLine) carries the turns its own later requests
  // superseded: the line's turns they match are superseded too, or an earlier socket's copies of
  // them would stay shown as part of what the model is sent.
  for (let j = 0; c && j < c.from; j++) {
    if (!rest[j].turn.superseded || line[at[j]].turn.superseded) continue;
    if (line === l.turns) line = line.slice();
    line[at[j]] = superseded(line[at[j]]);
  }
  if (line !== l.turns) { l.turns = line; l.sys = lastSystemSig(line); }
  appendTurns(l, lead ? [lead, ...rest.slice(c?.from ?? 0)] : rest.slice(c?.from ?? 0));
}

/** The conversations of one connection, one per prompt_cache_key, derived from the state alone. */
export function deriveWs(s: WsConnState): WsConversation[] {
  type E = { ts: number; dir: 0 | 1; seq: number; req?: WsRequest; resp?: WsResponse; i: number };
  const entries: E[] = [
    ...s.requests.map((req, i) => ({ ts: req.ts, dir: 0 as const, seq: req.seq, req, i })),
    ...s.responses.map((resp, i) => ({ ts: resp.ts, dir: 1 as const, seq: resp.seq, resp, i })),
  ].sort((a, b) => a.ts - b.ts || a.dir - b.dir || a.seq - b.seq);
  const convs = new Map<string, Omit<WsConversation, 'turns'> & { line: WsLine }>();
  let cur: (Omit<WsConversation, 'turns'> & { line: WsLine }) | undefined;
  for (const e of entries) {
    if (e.req) {
      const req = e.req;
      cur = convs.get(req.pck);
      if (!cur) { cur = { pck: req.pck, startedTs: req.ts, updatedTs: req.ts, line: { turns: [] } }; convs.set(req.pck, cur); }
      if (req.model) cur.model = req.model;
      if (req.parent) cur.parent = req.parent;
      cur.updatedTs = Math.max(cur.updatedTs, req.ts);
      const msgs = req.sysOf === undefined ? req.msgs : [s.requests[req.sysOf].msgs[0], ...req.msgs];
      const add = msgs.map((m) => new WsLineTurn({ role: m.role, blocks: m.blocks, source: [req.id] }));
      if (req.prev) appendTurns(cur.line, add); else foldHistory(cur.line, add);
    } else if (e.resp && cur) {
      const resp = e.resp;
      const superseded = e.i < s.responses.length - 1;
      const reply = foldReply(resp.fold, superseded || s.closedTs !== undefined);
      if (reply.blocks.length === 0 && !reply.incomplete && !reply.streaming) continue; // pre-warm (generate:false) answer
      const t: Turn = { role: 'assistant', blocks: reply.blocks, source: resp.firstId === resp.lastId ? [resp.firstId] : [resp.firstId, resp.lastId] };
      if (reply.usage) t.usage = reply.usage;
      if (reply.responseId) t.responseId = reply.responseId;
      if (reply.model) { t.model = reply.model; cur.model ??= reply.model; }
      if (reply.incomplete) t.incomplete = reply.incomplete;
      if (reply.error) t.error = reply.error;
      cur.line.turns.push(new WsLineTurn(t));
      cur.updatedTs = Math.max(cur.updatedTs, resp.lastTs ?? resp.ts);
    }
    // a response before any request of this connection is known stays in the state until it is
  }
  return [...convs.values()].map(({ line, ...c }) => ({ ...c, turns: line.turns.map((t) => t.turn) }));
}
