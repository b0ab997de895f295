// The HTTP API's routes (DESIGN.md "HTTP API"). Read-only: GET and HEAD only. Query parameters are
// validated strictly — an unknown or malformed one is a 400 with the reason, so a typo never
// silently returns unfiltered data.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import type { Gauge, Registry } from 'prom-client';
import type { ConnectionRecord, Conversation, RecordKind, Subagent, WsMessageRecord } from '../records.js';
import { CONVERSATION_CURSOR_RE, wireOrder, type Store, type TransactionQuery } from '../store/store.js';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { SseHub } from './sse.js';
import { ID_RE } from '../store/ids.js';
import { DASHBOARD_HTML } from './dashboard.js';
import { apiTurn, jsonWithArray, sendJsonPieces, transactionJson } from './body-json.js';
import { getPublicConversation, listPublicConversations } from './public-conversations.js';

export interface RouteContext {
  /** The --api listen host: a name given there is accepted in Host headers (see hostAllowed). */
  host: string;
  store: Store;
  registry: Registry;
  caPem: string;
  health: () => boolean;
  sse: SseHub;
}

class BadRequest extends Error {}

const KINDS: ReadonlySet<string> = new Set<RecordKind>(['HTTP', 'WS_REQ', 'WS_RESP', 'WS_CTRL']);
/** Connection messages served with GET /api/connections/:id unless `limit` says otherwise. */
const DEFAULT_MESSAGES = 10_000;
const MAX_MESSAGES = 100_000;
/**
 * Decoded body bytes one GET /api/connections/:id carries at most; the messages after come as
 * metadata (`bodiesOmitted`), their bodies one by one at /api/transactions/:id. 10,000 messages of
 * up to --max-body each, read and turned into one string on the forwarding thread, took seconds
 * and GBs and ended in a 500 (a long session of big messages: one click in the dashboard).
 */
const MESSAGE_BODY_BUDGET = 8 << 20;

/**
 * About how much conversation JSON one GET /api/conversations carries: a page ends early (with its
 * `next`) past it. 300 long sessions of ~400 KB each made one 121 MB response and stalled the
 * forwarding thread for over 3 s (the dashboard's conversations tab asks for 500).
 */
const LISTING_BUDGET = 8 << 20;

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra });
  res.end(body);
}

function json(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

/** A listing page, an item at a time (a page of 1,000 records was ~16 ms of JSON.stringify in one go); its fields in the page's order. */
function sendPage(res: ServerResponse, head: boolean, page: { items: unknown[] }): Promise<void> {
  const { items, ...rest } = page;
  const more = Object.entries(rest).flatMap(([k, v]) => (v === undefined ? [] : [`,${JSON.stringify(k)}:${JSON.stringify(v)}`]));
  return sendJsonPieces(res, head, jsonWithArray({}, 'items', items, (x) => x, more), false);
}

/** Query parameters, each at most once, only the allowed names. */
function params(url: URL, allowed: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of url.searchParams) {
    if (!allowed.includes(k)) throw new BadRequest(`unknown parameter "${k}" (allowed: ${allowed.join(', ') || 'none'})`);
    if (out.has(k)) throw new BadRequest(`parameter "${k}" given twice`);
    out.set(k, v);
  }
  return out;
}

function intParam(p: Map<string, string>, name: string, min: number, max: number): number | undefined {
  const v = p.get(name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new BadRequest(`${name} must be a whole number from ${min} to ${max}, got "${v}"`);
  return Number(v);
}

function idParam(p: Map<string, string>, name: string): string | undefined {
  const v = p.get(name);
  if (v === undefined) return undefined;
  if (!ID_RE.test(v)) throw new BadRequest(`${name} must be a record id (16 hex digits), got "${v}"`);
  return v;
}

function textParam(p: Map<string, string>, name: string): string | undefined {
  const v = p.get(name);
  if (v === undefined) return undefined;
  if (v === '' || v.length > 1024) throw new BadRequest(`${name} must be 1 to 1024 characters`);
  return v;
}

function transactionQuery(url: URL): TransactionQuery {
  const p = params(url, ['kind', 'host', 'conn', 'after', 'before', 'since', 'limit']);
  const kind = p.get('kind');
  if (kind !== undefined && !KINDS.has(kind)) throw new BadRequest(`kind must be one of ${[...KINDS].join(', ')}, got "${kind}"`);
  const q: TransactionQuery = {
    kind: kind as RecordKind | undefined,
    host: textParam(p, 'host'),
    conn: idParam(p, 'conn'),
    after: idParam(p, 'after'),
    before: idParam(p, 'before'),
    since: intParam(p, 'since', 0, 8.64e15),
    limit: intParam(p, 'limit', 1, 1000),
  };
  if (q.after !== undefined && q.before !== undefined) throw new BadRequest('after and before cannot be combined');
  for (const k of Object.keys(q) as (keyof TransactionQuery)[]) if (q[k] === undefined) delete q[k];
  return q;
}

/** Messages read between event-loop turns (~25 µs each): a connection of 10,000 held up forwarding ~0.3 s read at once. */
const MESSAGES_PER_TURN = 500;

/** A connection's first `max` WebSocket messages (metadata) in id order, read a page per event-loop turn. */
async function connectionMessages(store: Store, conn: string, max: number): Promise<WsMessageRecord[]> {
  const metas: WsMessageRecord[] = [];
  for (let after: string | undefined; ;) {
    const page = store.wsMessagesFrom(conn, after, Math.min(MESSAGES_PER_TURN, max - metas.length), false);
    metas.push(...page.records);
    if (page.next === undefined || metas.length >= max) return metas;
    after = page.next;
    await nextTurn();
  }
}

/** The connection's JSON with its messages, the first `whole` with bodies (each read as it is written). */
function connectionJson(store: Store, c: ConnectionRecord, metas: WsMessageRecord[], whole: number, flags: object): Iterable<string> {
  return jsonWithArray({ ...c, ...flags }, 'messages', metas, (m, i) => (i < whole ? store.getTransaction(m.id) ?? m : m));
}

/** A conversation's JSON a turn at a time, its sub-agents' too: a long session is tens of MB, one string made on the forwarding thread. */
function conversationJson({ turns, subagents, ...rest }: Conversation): Iterable<string> {
  return jsonWithArray(rest, 'turns', turns, (t) => t, subagents && subagentsJson(subagents));
}

function* subagentsJson(subagents: Subagent[]): Generator<string> {
  yield ',"subagents":[';
  for (let i = 0; i < subagents.length; i++) {
    const { turns, ...rest } = subagents[i];
    if (i) yield ',';
    yield* jsonWithArray(rest, 'turns', turns, (t) => t);
  }
  yield ']';
}

/** Routes that carry no captured data: a scraper or a phone fetching the CA may name the machine freely. */
const ANY_HOST_PATHS: ReadonlySet<string> = new Set(['/healthz', '/metrics', '/ca.pem']);

/**
 * DNS rebinding: a page the operator visits at http://attacker.example:43080/ re-points its name at
 * 127.0.0.1, and the browser then lets it read the API as same-origin, with the attacker's name in
 * Host. So only names that cannot be rebound are served: IP literals, localhost and *.localhost
 * (resolved to loopback by the browser itself), and the name the API was told to listen on.
 * No Host at all is not a browser (HTTP/1.0 tools), so it passes.
 */
function hostAllowed(header: string | undefined, bindHost: string): boolean {
  if (header === undefined) return true;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:@/\\?#[\]\s]+))(?::\d{0,5})?$/.exec(header);
  if (!m) return false;
  if (m[1] !== undefined) return isIPv6(m[1]);
  const name = m[2].toLowerCase().replace(/\.$/, '');
  return isIPv4(name) || name === 'localhost' || name.endsWith('.localhost') || name === bindHost.toLowerCase().replace(/\.$/, '');
}

/** `/api/x/:id` → the decoded id, or null when the path has another shape. */
function idFrom(path: string, prefix: string): string | null {
  if (!path.startsWith(prefix)) return null;
  const rest = path.slice(prefix.length);
  if (rest === '' || rest.includes('/')) return null;
  try { return decodeURIComponent(rest); } catch { return null; }
}

export async function route(ctx: RouteContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return json(res, 405, { error: `method ${req.method} not allowed (the API is read-only)` });
  }
  let url: URL;
  try { url = new URL(req.url ?? '/', 'http://api.invalid'); } catch { return json(res, 400, { error: 'malformed request target' }); }
  const path = url.pathname;
  if (!ANY_HOST_PATHS.has(path) && !hostAllowed(req.headers.host, ctx.host)) {
    return json(res, 403, { error: `Host "${req.headers.host}" is not served (DNS rebinding protection): use an IP address, localhost or the --api host name` });
  }
  // A store read (a listing page of 1,000 records is ~15 ms of it) in a turn of its own: 20 requests
  // that came together were read one after the other in one turn (~370 ms).
  if (path.startsWith('/api/') && path !== '/api/events') await apiTurn();
  try {
    if (path === '/' || path === '/index.html') {
      params(url, []);
      return send(res, 200, 'text/html; charset=utf-8', DASHBOARD_HTML);
    }
    if (path === '/healthz') {
      const ok = ctx.health();
      return send(res, ok ? 200 : 503, 'text/plain; charset=utf-8', ok ? 'ok\n' : 'unavailable\n');
    }
    if (path === '/metrics') {
      // (read here, at the scrape: a stat of the file and of each table)
      (ctx.registry.getSingleMetric('greytap_store_bytes') as Gauge | undefined)?.set(ctx.store.sizeBytes());
      (ctx.registry.getSingleMetric('greytap_store_live_bytes') as Gauge | undefined)?.set(ctx.store.dataBytes());
      return send(res, 200, ctx.registry.contentType, await ctx.registry.metrics());
    }
    if (path === '/ca.pem') return send(res, 200, 'application/x-pem-file', ctx.caPem);
    if (path === '/api/transactions') return sendPage(res, req.method === 'HEAD', ctx.store.listTransactions(transactionQuery(url)));
    if (path === '/api/events') {
      params(url, []);
      const err = ctx.sse.handle(req, res);
      return err ? json(res, 400, { error: err }) : undefined;
    }
    if (path === '/api/conversations') {
      const p = params(url, ['client', 'limit', 'after']);
      const after = textParam(p, 'after');
      if (after !== undefined && !CONVERSATION_CURSOR_RE.test(after)) throw new BadRequest(`after must be the "next" of a conversation listing, got "${after}"`);
      const q = { client: textParam(p, 'client'), limit: intParam(p, 'limit', 1, 1000), after, maxBytes: LISTING_BUDGET };
      return sendPage(res, req.method === 'HEAD', listPublicConversations(ctx.store, q));
    }
    let id: string | null;
    if ((id = idFrom(path, '/api/transactions/')) !== null) {
      params(url, []);
      const parts = ctx.store.getTransactionParts(id);
      if (!parts) return json(res, 404, { error: `no transaction ${id}` });
      return sendJsonPieces(res, req.method === 'HEAD', transactionJson(parts.meta, parts.bodies));
    }
    if ((id = idFrom(path, '/api/connections/')) !== null) {
      const p = params(url, ['limit']);
      const limit = intParam(p, 'limit', 1, MAX_MESSAGES) ?? DEFAULT_MESSAGES;
      const c = ctx.store.getConnection(id);
      if (!c) return json(res, 404, { error: `no connection ${id}` });
      const read = await connectionMessages(ctx.store, id, limit + 1);
      const truncated = read.length > limit;
      const metas = wireOrder(truncated ? read.slice(0, limit) : read); // the first `limit` in commit order
      // wire order: the first ones whole, up to the budget
      let budget = MESSAGE_BODY_BUDGET, whole = 0;
      while (whole < metas.length && metas[whole].size <= budget) budget -= metas[whole++].size;
      const flags = { ...(truncated ? { messagesTruncated: true } : {}), ...(whole < metas.length ? { bodiesOmitted: true } : {}) };
      return sendJsonPieces(res, req.method === 'HEAD', connectionJson(ctx.store, c, metas, whole, flags));
    }
    if ((id = idFrom(path, '/api/conversations/')) !== null) {
      params(url, []);
      const c = getPublicConversation(ctx.store, id);
      return c ? sendJsonPieces(res, req.method === 'HEAD', conversationJson(c)) : json(res, 404, { error: `no conversation ${id}` });
    }
    return json(res, 404, { error: `no route ${path}` });
  } catch (e) {
    if (e instanceof BadRequest) return json(res, 400, { error: e.message });
    throw e;
  }
}
