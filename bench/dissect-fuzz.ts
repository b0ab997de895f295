// Structure-aware fuzzer for the dissectors (src/workers/dissect/) and conversation assembly
// (src/workers/assemble.ts). Seeds are real sessions: the captured agent fixtures of
// test/conversations/fixtures (Claude Code, opencode, Gemini CLI, Qwen Code) and the realistic
// codex / Claude Code / chat / Gemini sessions of test/workers/dissect/sessions.ts (codex over
// WebSocket, and the same script over HTTP as the Responses API). A case applies a few seeded
// mutations to one seed's JSON documents — request bodies, SSE event data, WebSocket messages —
// where an agent or a server could plausibly go wrong: a field dropped or of another type (null
// for an object, a string for an array, a number for a string), a document cut short, array items
// duplicated or reordered, a huge array, deep nesting, unknown item and event types, events out of
// order or missing, ids missing or another call's, empty content, a response status or cut — then
// commits the records to a real LMDB store in random batches and assembles them as a capture worker
// does.
//
// The oracle: no dissector throws, assembly fails no update (assembleRecords counts what it catches
// as `assemble_failed`: the conversation then misses those records), every conversation stored is
// well formed (turns with a role and an array of well-typed blocks) and serialisable as the API
// serves it, and a case takes no longer than a budget. Cases with size mutations can also be run at
// doubling sizes: time that grows faster than the input is reported. An unmutated seed must give
// what `goldenConversations` recorded (test/workers/dissect-fuzz.golden.json).
//
// bench/fuzz-dissect.ts runs it for long (with a watchdog for hangs); test/workers/dissect-fuzz.test.ts
// runs a fixed seed for a few seconds.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Rng } from './http-fuzz.js';
import { caseSeed } from './sse-fuzz.js';
import type { AgentFixture } from './agent-fixture.js';
import { assembleRecords, connectionEnded, publicConversation, type StoredConversation } from '../src/workers/assemble.js';
import { dissectHttp } from '../src/workers/dissect/index.js';
import { deriveWs, foldWsRecord, newConnState } from '../src/workers/dissect/openai-ws.js';
import { parseSse } from '../src/workers/sse.js';
import { nextId } from '../src/store/ids.js';
import type { Block, Conversation, Header, HttpTransaction, TransactionRecord, Turn, WsMessageRecord } from '../src/records.js';
import type { Store } from '../src/store/store.js';
import { WsLane, upgradeTx } from '../test/workers/dissect/session-fixtures.js';
import { chatSession, claudeCodeSession, codexScript, geminiCodeAssistSession, geminiSession } from '../test/workers/dissect/sessions.js';

export { Rng, caseSeed };

// ── Documents and the markers that make them big ─────────────────────────────────────────────

/** An array of `n` copies of `elem` (n times the run's scale when serialised). */
export class Huge { constructor(readonly elem: unknown, readonly n: number) {} toJSON() { return { $huge: this.n, of: this.elem }; } }
/** `inner` nested `depth` levels deep in arrays or objects (depth times the scale). */
export class Deep { constructor(readonly inner: unknown, readonly depth: number, readonly obj: boolean) {} toJSON() { return { $deep: this.depth, obj: this.obj, inner: this.inner }; } }
/** `unit` repeated `n` times (n times the scale), then `tail`. */
export class Long { constructor(readonly unit: string, readonly n: number, readonly tail: string) {} toJSON() { return { $long: this.n, unit: this.unit, tail: this.tail }; } }
const isMarker = (v: unknown): v is Huge | Deep | Long => v instanceof Huge || v instanceof Deep || v instanceof Long;

/** A JSON document, or (once cut) text that is no longer JSON. */
export type Doc = { json: unknown } | { text: string };

export interface HttpItem {
  kind: 'http'; host: string; path: string; headers: Header[]; req: Doc;
  status?: number; sse?: { event?: string; data: Doc }[]; body?: Doc; error?: string; truncated?: boolean;
}
export interface WsItem { kind: 'ws'; sock: number; dir: 'client' | 'server'; close?: boolean; body?: Doc }
export type Item = HttpItem | WsItem;
export interface Seed { name: string; items: Item[] }

const jsonDoc = (s: string | undefined): Doc | undefined => {
  if (s === undefined) return undefined;
  try { return { json: JSON.parse(s) }; } catch { return { text: s }; }
};

function serialise(v: unknown, scale: number, out: string[]): void {
  if (v instanceof Huge) {
    const one: string[] = [];
    serialise(v.elem, scale, one);
    out.push('[', new Array(Math.max(0, Math.round(v.n * scale))).fill(one.join('')).join(','), ']');
  } else if (v instanceof Deep) {
    const d = Math.max(0, Math.round(v.depth * scale));
    out.push(v.obj ? '{"a":'.repeat(d) : '['.repeat(d));
    serialise(v.inner, scale, out);
    out.push((v.obj ? '}' : ']').repeat(d));
  } else if (v instanceof Long) {
    out.push(JSON.stringify(v.unit.repeat(Math.max(0, Math.round(v.n * scale))) + v.tail));
  } else if (Array.isArray(v)) {
    out.push('[');
    v.forEach((x, i) => { if (i) out.push(','); serialise(x === undefined ? null : x, scale, out); });
    out.push(']');
  } else if (typeof v === 'object' && v !== null) {
    out.push('{');
    let first = true;
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(k), ':');
      serialise(x, scale, out);
    }
    out.push('}');
  } else out.push(JSON.stringify(v) ?? 'null');
}

export function docText(d: Doc, scale = 1): string {
  if ('text' in d) return d.text;
  const out: string[] = [];
  serialise(d.json, scale, out);
  return out.join('');
}

/** Whether a document holds a size marker (its case is worth timing at doubling sizes). */
function hasMarker(v: unknown): boolean {
  if (isMarker(v)) return true;
  if (Array.isArray(v)) return v.some(hasMarker);
  if (typeof v === 'object' && v !== null) return Object.values(v).some(hasMarker);
  return false;
}

// ── Seeds ────────────────────────────────────────────────────────────────────────────────────

const FIXTURES = new URL('../../test/conversations/fixtures/', import.meta.url);

const contentType = (h: Header[]) => h.find(([k]) => k.toLowerCase() === 'content-type')?.[1] ?? '';

function sseItems(text: string): { event?: string; data: Doc }[] {
  return parseSse(text).map((e) => ({ ...(e.event !== undefined ? { event: e.event } : {}), data: jsonDoc(e.data)! }));
}

function fromFixture(name: string): Seed {
  const f = JSON.parse(readFileSync(fileURLToPath(new URL(name, FIXTURES)), 'utf8')) as AgentFixture;
  return {
    name: name.replace(/\.json$/, ''),
    items: f.exchanges.map((x): HttpItem => {
      const host = x.reqHeaders.find(([k]) => k.toLowerCase() === 'host')?.[1] ?? 'api.example.test';
      const item: HttpItem = { kind: 'http', host, path: x.path, headers: x.reqHeaders, req: jsonDoc(x.reqBody)!, status: x.status };
      if (/text\/event-stream/i.test(contentType(x.respHeaders))) item.sse = sseItems(x.respBody);
      else item.body = jsonDoc(x.respBody);
      return item;
    }),
  };
}

function fromTxs(name: string, txs: HttpTransaction[]): Seed {
  return {
    name,
    items: txs.map((tx): HttpItem => {
      const item: HttpItem = { kind: 'http', host: tx.host, path: tx.path, headers: tx.reqHeaders, req: jsonDoc(tx.reqBody)! };
      if (tx.status !== undefined) item.status = tx.status;
      if (tx.respEvents) item.sse = tx.respEvents.map((e) => ({ ...(e.event !== undefined ? { event: e.event } : {}), data: jsonDoc(e.data)! }));
      else if (tx.respBody !== undefined) item.body = jsonDoc(tx.respBody);
      if (tx.error) item.error = tx.error;
      if (tx.truncated) item.truncated = true;
      return item;
    }),
  };
}

const CODEX_HEADERS: Header[] = [['originator', 'codex_cli_rs'], ['User-Agent', 'codex_cli_rs/0.46.0 (Debian 12; x86_64)']];

function codexWs(end: 'completed' | 'failed' | 'close'): Seed {
  const items: Item[] = [];
  for (const step of codexScript('fuzz-session', end)) {
    items.push({ kind: 'ws', sock: 0, dir: 'client', body: { json: step.request } });
    for (const e of step.events) items.push({ kind: 'ws', sock: 0, dir: 'server', body: { json: e } });
    if (step.closeAfter) items.push({ kind: 'ws', sock: 0, dir: 'client', close: true });
  }
  return { name: `codex-ws-${end}`, items };
}

/** codex's script as HTTP Responses requests: streamed, or (json) the completed Response objects; `chain`: no session key, linked by previous_response_id alone. */
function responsesHttp(mode: 'sse' | 'json' | 'chain'): Seed {
  const items: Item[] = codexScript('fuzz-session').map((step) => {
    const { type: _t, generate: _g, ...req } = step.request as Record<string, unknown>;
    if (mode === 'chain') { delete req.prompt_cache_key; delete req.client_metadata; }
    const item: HttpItem = { kind: 'http', host: 'api.openai.com', path: '/v1/responses', headers: CODEX_HEADERS, req: { json: req }, status: 200 };
    const completed = step.events.find((e) => e.type === 'response.completed') as { response?: unknown } | undefined;
    if (mode === 'json' && completed) item.body = { json: completed.response };
    else item.sse = step.events.map((e) => ({ event: String(e.type), data: { json: e } }));
    return item;
  });
  return { name: `responses-http-${mode}`, items };
}

let seedsCache: Seed[] | undefined;
/** Every seed, in a fixed order (a case names its seed by index). */
export function seeds(): Seed[] {
  if (seedsCache) return seedsCache;
  const t0 = 1_800_000_000_000;
  seedsCache = [
    ...readdirSync(fileURLToPath(FIXTURES)).filter((n) => n.endsWith('.json')).sort().map(fromFixture),
    fromTxs('claude-code-synthetic', claudeCodeSession(t0)),
    fromTxs('claude-code-synthetic-aborted', claudeCodeSession(t0, { abortSecond: true })),
    fromTxs('chat-synthetic', chatSession(t0)),
    fromTxs('gemini-synthetic', geminiSession(t0)),
    fromTxs('gemini-code-assist-synthetic', geminiCodeAssistSession('0b5e3f7c-fuzz', t0)),
    codexWs('completed'), codexWs('failed'), codexWs('close'),
    responsesHttp('sse'), responsesHttp('json'), responsesHttp('chain'),
  ];
  return seedsCache;
}

// ── Mutations ────────────────────────────────────────────────────────────────────────────────

type Path = (string | number)[];
/** Which document of a case: an item's request (HTTP) or message (WebSocket), its JSON response body, or one of its SSE events' data. */
export interface Ref { item: number; part: 'req' | 'body' | number }

export type Op =
  | { op: 'set'; ref: Ref; path: Path; value: unknown; why: string }
  | { op: 'delete'; ref: Ref; path: Path }
  | { op: 'dup' | 'shuffle' | 'reverse'; ref: Ref; path: Path; k: number }
  | { op: 'cut'; ref: Ref; at: number }
  | { op: 'events'; item: number; how: 'drop' | 'dup' | 'swap' | 'move'; i: number; j: number }
  | { op: 'items'; how: 'drop' | 'dup' | 'swap' | 'sock' | 'close'; i: number; j: number }
  | { op: 'status'; item: number; status?: number; error?: string; truncated?: boolean; body?: unknown };

function docOf(items: Item[], ref: Ref): Doc | undefined {
  const it = items[ref.item];
  if (!it) return undefined;
  if (it.kind === 'ws') return ref.part === 'req' ? it.body : undefined;
  if (ref.part === 'req') return it.req;
  if (ref.part === 'body') return it.body;
  return it.sse?.[ref.part]?.data;
}

function setDoc(items: Item[], ref: Ref, d: Doc): void {
  const it = items[ref.item];
  if (it.kind === 'ws') it.body = d;
  else if (ref.part === 'req') it.req = d;
  else if (ref.part === 'body') it.body = d;
  else if (it.sse?.[ref.part]) it.sse[ref.part].data = d;
}

/** The container holding `path`'s last step, or undefined when the path no longer leads anywhere. */
function parentOf(root: { json: unknown }, path: Path): { c: any; k: string | number } | undefined {
  let c: any = root;
  let k: string | number = 'json';
  for (const step of path) {
    const v = c[k];
    if (typeof v !== 'object' || v === null || isMarker(v)) return undefined;
    if (Array.isArray(v) !== (typeof step === 'number')) return undefined;
    c = v;
    k = step;
  }
  return k in c || path.length === 0 ? { c, k } : undefined;
}

function shuffle<T>(a: T[], rng: Rng): void {
  for (let i = a.length - 1; i > 0; i--) { const j = rng.int(i + 1); [a[i], a[j]] = [a[j], a[i]]; }
}

/** Applies one mutation in place; one whose target is gone (an earlier mutation removed it) does nothing. */
export function applyOp(items: Item[], o: Op): void {
  switch (o.op) {
    case 'set': case 'delete': case 'dup': case 'shuffle': case 'reverse': {
      const d = docOf(items, o.ref);
      if (!d || !('json' in d)) return;
      const p = parentOf(d, o.path);
      if (!p) return;
      if (o.op === 'set') p.c[p.k] = o.value;
      else if (o.op === 'delete') { if (Array.isArray(p.c)) p.c.splice(p.k as number, 1); else if (p.c === d) setDoc(items, o.ref, { text: '' }); else delete p.c[p.k]; }
      else {
        const a = p.c[p.k];
        if (!Array.isArray(a) || a.length === 0) return;
        const rng = new Rng(o.k);
        if (o.op === 'dup') { const i = rng.int(a.length); a.splice(rng.int(a.length + 1), 0, structuredCloneSafe(a[i])); }
        else if (o.op === 'shuffle') shuffle(a, rng);
        else a.reverse();
      }
      return;
    }
    case 'cut': {
      const d = docOf(items, o.ref);
      if (!d) return;
      const t = docText(d);
      setDoc(items, o.ref, { text: t.slice(0, Math.floor(t.length * o.at)) });
      return;
    }
    case 'events': {
      const it = items[o.item];
      const ev = it?.kind === 'http' ? it.sse : undefined;
      if (!ev || ev.length === 0) return;
      const i = o.i % ev.length, j = o.j % ev.length;
      if (o.how === 'drop') ev.splice(i, 1);
      else if (o.how === 'dup') ev.splice(j, 0, structuredCloneSafe(ev[i]));
      else if (o.how === 'swap') [ev[i], ev[j]] = [ev[j], ev[i]];
      else ev.splice(j, 0, ...ev.splice(i, 1));
      return;
    }
    case 'items': {
      if (items.length === 0) return;
      const i = o.i % items.length, j = o.j % items.length;
      if (o.how === 'drop') items.splice(i, 1);
      else if (o.how === 'dup') items.splice(j, 0, structuredCloneSafe(items[i]));
      else if (o.how === 'swap') [items[i], items[j]] = [items[j], items[i]];
      else if (o.how === 'sock') { const it = items[i]; if (it.kind === 'ws') it.sock = o.j % 3; }
      else { const it = items[i]; if (it.kind === 'ws') items.splice(j, 0, { kind: 'ws', sock: it.sock, dir: o.j % 2 ? 'client' : 'server', close: true }); }
      return;
    }
    case 'status': {
      const it = items[o.item];
      if (it?.kind !== 'http') return;
      it.status = o.status;
      if (o.error !== undefined) it.error = o.error;
      if (o.truncated !== undefined) it.truncated = o.truncated;
      if (o.body !== undefined) { it.body = { json: o.body }; delete it.sse; }
      return;
    }
  }
}

/** structuredClone, keeping the markers (which it would turn into plain objects). */
function structuredCloneSafe<T>(v: T): T {
  if (isMarker(v)) return v;
  if (Array.isArray(v)) return v.map(structuredCloneSafe) as T;
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, structuredCloneSafe(x)])) as T;
  return v;
}

// Keys where dissectors make decisions: mutations land there more often than elsewhere.
const HOT = new Set([
  'type', 'role', 'content', 'messages', 'input', 'output', 'instructions', 'system', 'systemInstruction', 'contents', 'parts',
  'id', 'call_id', 'tool_use_id', 'tool_call_id', 'previous_response_id', 'prompt_cache_key', 'metadata', 'user_id', 'user_prompt_id', 'session_id', 'request',
  'index', 'output_index', 'content_index', 'summary_index', 'arguments', 'input_json', 'partial_json', 'delta', 'text', 'thinking', 'summary', 'item', 'response',
  'functionCall', 'functionResponse', 'candidates', 'choices', 'message', 'tool_calls', 'function', 'name', 'args', 'usage', 'model', 'error', 'status',
  'finish_reason', 'stop_reason', 'finishReason', 'content_block', 'client_metadata', 'generate', 'thought', 'is_error', 'reasoning_content',
]);
const ID_KEYS = new Set(['id', 'call_id', 'tool_use_id', 'tool_call_id', 'previous_response_id', 'prompt_cache_key', 'user_id', 'responseId']);
const INDEX_KEYS = new Set(['index', 'output_index', 'content_index', 'summary_index', 'sequence_number']);
const TYPES = [
  'message', 'reasoning', 'function_call', 'function_call_output', 'custom_tool_call', 'custom_tool_call_output', 'local_shell_call', 'local_shell_call_output',
  'web_search_call', 'x_unknown_call', 'input_text', 'output_text', 'refusal', 'summary_text', 'text', 'thinking', 'tool_use', 'server_tool_use', 'tool_result',
  'image', 'redacted_thinking', 'response.created', 'response.completed', 'response.failed', 'response.incomplete', 'response.output_item.added',
  'response.output_item.done', 'response.output_text.delta', 'response.output_text.done', 'response.function_call_arguments.delta',
  'response.reasoning_summary_text.delta', 'response.unknown_event', 'error', 'message_start', 'content_block_start', 'content_block_delta',
  'content_block_stop', 'message_delta', 'message_stop', 'text_delta', 'input_json_delta', 'thinking_delta', 'response.create', 'function', 'x-unknown', '',
];
const ROLES = ['user', 'assistant', 'system', 'developer', 'tool', 'function', 'model', 'x-unknown', ''];
/** Numbers an index or count could wrongly be. */
const ODD_NUMBERS = [0, -1, 1, 2, 0.5, 3.7, 1e9, 4294967294, 2 ** 31, 2 ** 53, -(2 ** 31), 1e308, 99999];
/** Text a string field could be: empty, odd characters, the names that are also Object.prototype's. */
const ODD_STRINGS = ['', ' ', '\u0000', '\ud800', '__proto__', 'constructor', 'toString', 'null', '[]', '{}', '<system-reminder>x</system-reminder>', '\n\n'];

interface Node { path: Path; key: string | number; value: unknown }

function nodes(v: unknown, path: Path = [], key: string | number = '', out: Node[] = []): Node[] {
  out.push({ path, key, value: v });
  if (isMarker(v) || typeof v !== 'object' || v === null || out.length > 20_000) return out;
  if (Array.isArray(v)) v.forEach((x, i) => nodes(x, [...path, i], i, out));
  else for (const [k, x] of Object.entries(v)) nodes(x, [...path, k], k, out);
  return out;
}

function allRefs(items: Item[]): Ref[] {
  const refs: Ref[] = [];
  items.forEach((it, item) => {
    if (it.kind === 'ws') { if (it.body) refs.push({ item, part: 'req' }); return; }
    refs.push({ item, part: 'req' });
    if (it.body) refs.push({ item, part: 'body' });
    it.sse?.forEach((_, i) => refs.push({ item, part: i }));
  });
  return refs;
}

/** A value of another type than `v` (null, a string, a number, an array, an object, …). */
function retype(v: unknown, rng: Rng): unknown {
  const choices: (() => unknown)[] = [
    () => null, () => rng.pick(ODD_STRINGS), () => rng.pick(ODD_NUMBERS), () => rng.chance(0.5),
    () => [], () => ({}), () => [v], () => ({ value: v }), () => (typeof v === 'string' ? v : JSON.stringify(v) ?? 'null'),
  ];
  return rng.pick(choices)();
}

/** Every string value under one of ID_KEYS in the seed: a mutated id is often another call's. */
function idsOf(items: Item[]): string[] {
  const ids = new Set<string>();
  for (const r of allRefs(items)) {
    const d = docOf(items, r);
    if (d && 'json' in d) for (const n of nodes(d.json)) if (typeof n.key === 'string' && ID_KEYS.has(n.key) && typeof n.value === 'string') ids.add(n.value);
  }
  return [...ids];
}

/** Base sizes of the size mutations (times the scale). */
const HUGE_N = [1_000, 10_000, 50_000, 150_000, 300_000];
const DEEP_N = [200, 2_000, 10_000, 50_000];
const LONG_N = [10_000, 100_000, 1_000_000];

function valueOp(items: Item[], ref: Ref, n: Node, rng: Rng, ids: string[], all: Seed[]): Op {
  const path = n.path;
  const v = n.value;
  const set = (value: unknown, why: string): Op => ({ op: 'set', ref, path, value, why });
  const r = rng.next();
  if (typeof n.key === 'string' && ID_KEYS.has(n.key) && r < 0.5) return rng.chance(0.3) ? { op: 'delete', ref, path } : set(rng.chance(0.7) && ids.length ? rng.pick(ids) : rng.pick(['', ' ', '0']), 'id');
  if (typeof n.key === 'string' && INDEX_KEYS.has(n.key) && r < 0.6) return set(rng.pick(ODD_NUMBERS), 'index');
  if (n.key === 'type' && r < 0.6) return set(rng.pick(TYPES), 'type');
  if (n.key === 'role' && r < 0.6) return set(rng.pick(ROLES), 'role');
  const k = rng.int(100);
  if (k < 14) return { op: 'delete', ref, path };
  if (k < 34) return set(retype(v, rng), 'retype');
  if (k < 42 && Array.isArray(v)) return { op: rng.pick(['dup', 'shuffle', 'reverse'] as const), ref, path, k: rng.int(2 ** 31) };
  if (k < 50) return set(new Huge(Array.isArray(v) && v.length ? v[rng.int(v.length)] : rng.chance(0.5) ? v : {}, rng.pick(HUGE_N)), 'huge');
  if (k < 57) return set(new Deep(rng.chance(0.5) ? v : 1, rng.pick(DEEP_N), rng.chance(0.5)), 'deep');
  if (k < 64 && typeof v === 'string') {
    const unit = rng.pick(['a', '\n', ' ', '<system-reminder>', '\n<system-reminder>\nx\n</system-reminder>', 'é', '"']);
    return set(new Long(unit, rng.pick(LONG_N), rng.pick(['', 'x', v.slice(0, 40), '\n<system-reminder>\nr\n</system-reminder>'])), 'long string');
  }
  if (k < 72) return set(typeof v === 'string' ? '' : Array.isArray(v) ? [] : retype(v, rng), 'empty');
  if (k < 80) {
    // a subtree of any seed: an item of another provider, an event of another stream
    const s = rng.pick(all);
    const refs = allRefs(s.items);
    const d = refs.length ? docOf(s.items, rng.pick(refs)) : undefined;
    const ns = d && 'json' in d ? nodes(d.json) : [];
    return set(ns.length ? structuredCloneSafe(rng.pick(ns).value) : null, 'splice');
  }
  if (k < 88 && typeof v === 'string') return set(rng.pick(ODD_STRINGS), 'odd string');
  if (k < 94 && typeof v === 'number') return set(rng.pick(ODD_NUMBERS), 'odd number');
  return set(retype(v, rng), 'retype');
}

function pickNode(d: { json: unknown }, rng: Rng): Node {
  const ns = nodes(d.json);
  const hot = ns.filter((n) => typeof n.key === 'string' && HOT.has(n.key));
  return hot.length && rng.chance(0.6) ? rng.pick(hot) : rng.pick(ns);
}

/** One mutation of the case as it stands (applied before the next is generated). */
function genOp(items: Item[], rng: Rng, all: Seed[]): Op | undefined {
  const k = rng.int(100);
  const http = items.flatMap((it, i) => (it.kind === 'http' ? [i] : []));
  const streamed = http.filter((i) => ((items[i] as HttpItem).sse?.length ?? 0) > 0);
  if (k < 10 && streamed.length) {
    const item = rng.pick(streamed);
    const n = (items[item] as HttpItem).sse!.length;
    return { op: 'events', item, how: rng.pick(['drop', 'dup', 'swap', 'move'] as const), i: rng.int(n), j: rng.int(n) };
  }
  if (k < 17) return { op: 'items', how: rng.pick(['drop', 'dup', 'swap', 'sock', 'close'] as const), i: rng.int(items.length), j: rng.int(items.length) };
  if (k < 21 && http.length) {
    const item = rng.pick(http);
    return rng.pick<Op>([
      { op: 'status', item, status: undefined, error: 'upstream_reset' },
      { op: 'status', item, status: 500, body: { error: { message: 'overloaded' } } },
      { op: 'status', item, status: 429, body: rng.pick([null, 'x', [], { error: 'slow down' }, { message: 5 }]) },
      { op: 'status', item, status: 200, truncated: true, error: 'truncated_stream' },
    ]);
  }
  const refs = allRefs(items);
  if (!refs.length) return undefined;
  const ref = rng.pick(refs);
  const d = docOf(items, ref);
  if (!d) return undefined;
  if (k < 27 || !('json' in d)) return { op: 'cut', ref, at: rng.next() };
  return valueOp(items, ref, pickNode(d, rng), rng, idsOf(items), all);
}

export interface Case { seed: number; seedName: string; ops: Op[]; items: Item[]; batches: number[] }

/** The largest a body may be: greytap keeps bodies up to --max-body (16 MiB by default) and dissects only those. */
const MAX_DOC = 16 << 20;

/** About the length of v's text at `scale`, without making it (a huge array of huge arrays would not fit in memory). */
function sizeOf(v: unknown, scale: number): number {
  if (v instanceof Huge) return 2 + Math.round(v.n * scale) * (sizeOf(v.elem, scale) + 1);
  if (v instanceof Deep) return Math.round(v.depth * scale) * (v.obj ? 6 : 2) + sizeOf(v.inner, scale);
  if (v instanceof Long) return 2 + v.unit.length * Math.round(v.n * scale) + v.tail.length;
  if (Array.isArray(v)) return 2 + v.reduce((n: number, x) => n + 1 + sizeOf(x, scale), 0);
  if (typeof v === 'object' && v !== null) return 2 + Object.entries(v).reduce((n, [k, x]) => n + k.length + 4 + sizeOf(x, scale), 0);
  return (JSON.stringify(v) ?? 'null').length;
}

function docsFit(items: Item[], scale: number): boolean {
  for (const r of allRefs(items)) {
    const d = docOf(items, r);
    if (d && 'json' in d && hasMarker(d.json) && sizeOf(d.json, scale) > MAX_DOC) return false;
  }
  return true;
}

/** Applies `ops` to a copy of the seed. */
export function build(seedIndex: number, ops: Op[]): Item[] {
  const items = structuredClone(seeds()[seedIndex].items);
  for (const o of ops) applyOp(items, o);
  return items;
}

/** A case: a seed, 0-5 mutations (no mutation now and then: the seed itself), and the batches its records are committed in. */
export function generateCase(seed: number): Case {
  const rng = new Rng(seed);
  const all = seeds();
  const si = rng.int(all.length);
  const items = structuredClone(all[si].items);
  const ops: Op[] = [];
  const n = rng.chance(0.03) ? 0 : 1 + rng.int(5);
  for (let i = 0; i < n * 3 && ops.length < n; i++) {
    const o = genOp(items, rng, all);
    if (!o) continue;
    const before = structuredCloneSafe(items);
    applyOp(items, o);
    if (!docsFit(items, 1)) { items.splice(0, items.length, ...before); continue; }
    ops.push(o);
  }
  return { seed, seedName: `${si}:${all[si].name}`, ops, items, batches: batchCuts(seed, items.length) };
}

/** Where the records are cut into batches (a capture worker commits and assembles several at once). */
function batchCuts(seed: number, n: number): number[] {
  const rng = new Rng(seed ^ 0x2545f491);
  const cuts: number[] = [];
  for (let i = 1; i < n; i++) if (rng.chance(0.4)) cuts.push(i);
  return cuts;
}

// ── Records ──────────────────────────────────────────────────────────────────────────────────

export interface Materialised {
  /** per item, in item order (a WebSocket item's record, or an HTTP transaction) */
  records: TransactionRecord[];
  /** each socket's 101 transaction, committed before its messages */
  upgrades: HttpTransaction[];
  conns: string[];
  endTs: number;
  /** the size of the documents, in characters */
  chars: number;
}

/** The case's items as the records the decoders commit: fresh ids, timestamps in item order. */
export function materialise(items: Item[], scale = 1): Materialised {
  const t0 = 1_800_000_000_000;
  const records: TransactionRecord[] = [];
  const upgrades: HttpTransaction[] = [];
  const socks = new Map<number, { client: WsLane; server: WsLane }>();
  let chars = 0;
  items.forEach((it, k) => {
    const ts = t0 + 10 * (k + 1);
    if (it.kind === 'ws') {
      let s = socks.get(it.sock);
      if (!s) {
        const up = upgradeTx(nextId(), t0, CODEX_HEADERS);
        upgrades.push(up);
        s = { client: new WsLane(up.conn, up.id, 'client'), server: new WsLane(up.conn, up.id, 'server') };
        socks.set(it.sock, s);
      }
      const lane = s[it.dir];
      if (it.close || !it.body) { records.push(lane.close(ts)); return; }
      const text = docText(it.body, scale);
      chars += text.length;
      records.push(lane.msg(ts, text));
      return;
    }
    const reqBody = docText(it.req, scale);
    const tx: HttpTransaction = {
      id: nextId(), ts, kind: 'HTTP', conn: nextId(), host: it.host, port: 443, scheme: 'https', path: it.path, method: 'POST', httpVersion: '1.1',
      reqHeaders: it.headers, respHeaders: [['Content-Type', it.sse ? 'text/event-stream' : 'application/json']], reqBody,
      reqBytes: reqBody.length + 200, respBytes: 0, durationMs: 5, truncated: it.truncated ?? false,
    };
    if (it.status !== undefined) tx.status = it.status;
    if (it.error) tx.error = it.error as HttpTransaction['error'];
    if (it.sse) {
      // as the decoder stores a stream: the body's text, and the events the SSE parser reads from it
      tx.respBody = it.sse.map((e) => (e.event !== undefined ? `event: ${e.event}\n` : '') + docText(e.data, scale).split(/\r\n|\r|\n/).map((l) => `data: ${l}\n`).join('') + '\n').join('');
      tx.respEvents = parseSse(tx.respBody);
    } else if (it.body) tx.respBody = docText(it.body, scale);
    tx.respBytes = tx.respBody?.length ?? 0;
    chars += reqBody.length + tx.respBytes;
    records.push(tx);
  });
  return { records, upgrades, conns: upgrades.map((u) => u.conn), endTs: t0 + 10 * (items.length + 1), chars };
}

// ── The oracle ───────────────────────────────────────────────────────────────────────────────

const ROLE_SET = new Set<string>(['user', 'assistant', 'system', 'developer', 'tool']);

function blockProblem(b: Block): string | undefined {
  if (typeof b !== 'object' || b === null) return 'a block that is not an object';
  switch (b.type) {
    case 'text': case 'reasoning': return typeof b.text === 'string' ? undefined : `a ${b.type} block whose text is ${typeof b.text}`;
    case 'tool_call': return typeof b.callId === 'string' && typeof b.name === 'string' ? undefined : 'a tool_call without a string callId and name';
    case 'tool_result': return typeof b.callId === 'string' && (b.name === undefined || typeof b.name === 'string') ? undefined : 'a tool_result without a string callId';
    default: return `a block of type ${JSON.stringify((b as { type: unknown }).type)}`;
  }
}

function turnsProblem(turns: unknown, where: string): string | undefined {
  if (!Array.isArray(turns)) return `${where}: turns is not an array`;
  for (const [i, t] of (turns as Turn[]).entries()) {
    if (typeof t !== 'object' || t === null) return `${where} turn ${i}: not an object`;
    if (!ROLE_SET.has(t.role)) return `${where} turn ${i}: role ${JSON.stringify(t.role)}`;
    if (!Array.isArray(t.blocks)) return `${where} turn ${i}: blocks is not an array`;
    if (!Array.isArray(t.source) || !t.source.every((s) => typeof s === 'string')) return `${where} turn ${i}: source is not an array of ids`;
    for (const b of t.blocks) { const p = blockProblem(b); if (p) return `${where} turn ${i}: ${p}`; }
  }
  return undefined;
}

/** What is wrong with a stored conversation as the API would serve it, if anything. */
export function conversationProblem(c: Conversation): string | undefined {
  const where = `conversation ${c.key}`;
  if (typeof c.id !== 'string' || typeof c.key !== 'string' || typeof c.client !== 'string' || typeof c.provider !== 'string') return `${where}: id, key, client or provider not a string`;
  if (!Number.isFinite(c.startedTs) || !Number.isFinite(c.updatedTs)) return `${where}: startedTs/updatedTs not finite`;
  const p = turnsProblem(c.turns, where);
  if (p) return p;
  if (c.subagents !== undefined) {
    if (!Array.isArray(c.subagents)) return `${where}: subagents is not an array`;
    for (const s of c.subagents) {
      if (typeof s.callId !== 'string') return `${where}: a sub-agent without a callId`;
      const q = turnsProblem(s.turns, `${where} sub-agent ${s.callId}`);
      if (q) return q;
    }
  }
  try { JSON.stringify(publicConversation(c as StoredConversation)); } catch (e) { return `${where}: the API cannot serialise it: ${errText(e)}`; }
  return undefined;
}

const errText = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).slice(0, 300);

/** Each direction in seq order, client first (as the assembler folds a connection). */
const bySeq = (a: WsMessageRecord, b: WsMessageRecord) => (a.direction === b.direction ? a.seq - b.seq : a.direction === 'client' ? -1 : 1);

/**
 * The dissectors called directly (what assembleRecords would only count): their exceptions, with a
 * stack line to find them, and how many records they refuse as bad data (assembly counts those as
 * dissect_failed; any more it counts are records it lost otherwise).
 */
function directProblems(m: Materialised): { problems: string[]; bad: number } {
  const out: string[] = [];
  let bad = 0;
  const where = (e: unknown) => (e instanceof Error ? (e.stack ?? '').split('\n').find((l) => /src\/workers/.test(l))?.trim() ?? '' : '');
  for (const r of m.records) {
    if (r.kind !== 'HTTP') continue;
    try { if (dissectHttp(r).bad) bad++; } catch (e) { out.push(`dissectHttp threw ${errText(e)} ${where(e)}`); }
  }
  for (const conn of m.conns) {
    const s = newConnState(conn);
    for (const r of (m.records.filter((x) => x.kind !== 'HTTP' && x.conn === conn) as WsMessageRecord[]).sort(bySeq)) {
      try { if (foldWsRecord(s, r) === 'bad') bad++; } catch (e) { out.push(`foldWsRecord threw ${errText(e)} ${where(e)}`); }
    }
    try { deriveWs(s); } catch (e) { out.push(`deriveWs threw ${errText(e)} ${where(e)}`); }
  }
  return { problems: out, bad };
}

/** Every conversation in the store, internal ones included. */
function storedConversations(store: Store): Conversation[] {
  const out: Conversation[] = [];
  for (let after: string | undefined; ;) {
    const p = store.listConversations({ limit: 1000, after });
    out.push(...p.items);
    if (!p.next || !p.items.length) break;
    after = p.next;
  }
  return out;
}

/** `ms`: the time the dissectors (called directly) and assembly took, the store's writes of the records aside */
export interface CaseResult { problems: string[]; ms: number; chars: number }

/**
 * Commits and assembles the items (in the case's batches), then checks what was stored; leaves the
 * store without conversations. `ms`: the time assembly took.
 */
export async function runItems(store: Store, items: Item[], batches: number[], scale = 1, direct = true): Promise<CaseResult> {
  const m = materialise(items, scale);
  // the store's writes of the records are not assembly's time (and vary with the disk)
  let ms = 0;
  let t0 = performance.now();
  const d = direct ? directProblems(m) : { problems: [], bad: Infinity };
  ms += performance.now() - t0;
  const problems = d.problems;
  let dissectFailed = 0;
  // assembleRecords catches and counts what throws: the store's callback sees it first
  const caught: string[] = [];
  const spy = Object.create(store) as Store;
  spy.updateConversation = (key, fn) => store.updateConversation(key, (c) => {
    try { return fn(c); } catch (e) { caught.push(`${errText(e)} ${(e instanceof Error ? e.stack ?? '' : '').split('\n').find((l) => /src\/workers/.test(l))?.trim() ?? ''}`); throw e; }
  }).catch((e) => { if (!caught.length) caught.push(`store: ${errText(e)}`); throw e; });
  await store.putTransactions(m.upgrades);
  let from = 0;
  for (const to of [...batches.filter((b) => b < m.records.length), m.records.length]) {
    const batch = m.records.slice(from, to);
    from = to;
    if (!batch.length) continue;
    await store.putTransactions(batch);
    t0 = performance.now();
    const out = await assembleRecords(spy, batch);
    ms += performance.now() - t0;
    dissectFailed += out.decodeErrors?.dissect_failed ?? 0;
    if (out.decodeErrors?.assemble_failed) problems.push(`assembleRecords: ${out.decodeErrors.assemble_failed} update(s) failed: ${caught.splice(0).join(' | ') || '?'}`);
  }
  t0 = performance.now();
  for (const conn of m.conns) {
    try { await connectionEnded(spy, conn, m.endTs); } catch (e) { problems.push(`connectionEnded threw ${errText(e)} ${caught.splice(0).join(' | ')}`); }
  }
  ms += performance.now() - t0;
  if (!problems.length && dissectFailed > d.bad) problems.push(`assembleRecords: ${dissectFailed} record(s) counted dissect_failed, the dissectors refuse ${d.bad}: ${caught.splice(0).join(' | ') || 'thrown outside an update'}`);
  const convs = storedConversations(store);
  for (const c of convs) {
    if (c.internal) continue;
    const p = conversationProblem(c);
    if (p) problems.push(p);
  }
  await store.deleteConversations(convs.map((c) => c.key));
  return { problems, ms, chars: m.chars };
}

export interface FuzzOptions {
  /** a case (at scale 1) taking longer than this fails as a hang */
  budgetMs: number;
  /** time a case with size mutations at doubling sizes too (scalingProblem) */
  scaling: boolean;
  /** called before each run of a case: a watchdog tells a hang from a case that is run many times */
  progress?: () => void;
}

/** A case is super-linear when doubling its size multiplies its time by more than this (a linear one: 2, noise aside). */
const SUPERLINEAR = 3.2;
/** Times under this are too noisy to compare. */
const MIN_TIMED_MS = 30;
/** Cases are not grown past this time. */
const MAX_TIMED_MS = 2000;

/** A full collection before a timed run, when the process runs with --expose-gc (bench/fuzz-dissect.ts's child does). */
const gc = (globalThis as { gc?: () => void }).gc;

/** The best of `n` runs' times (noise only ever adds). */
async function timed(store: Store, items: Item[], batches: number[], scale: number, progress?: () => void, n = 3): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    progress?.();
    gc?.();
    best = Math.min(best, (await runItems(store, items, batches, scale, false)).ms);
  }
  return best;
}

/**
 * Whether the case's time grows faster than its size: timed at scales 1/16, 1/8, … 64 while its
 * documents fit and it stays under MAX_TIMED_MS, then super-linear when the last two doublings
 * timed above MIN_TIMED_MS both multiplied the time by more than SUPERLINEAR. One doubling alone is
 * no evidence: a collector's step (the heap growing past a threshold) makes one look quadratic.
 */
export async function scalingProblem(store: Store, items: Item[], batches: number[], progress?: () => void): Promise<string | undefined> {
  const times: [number, number][] = [];
  for (let scale = 1 / 16; scale <= 64 && docsFit(items, scale); scale *= 2) {
    const t = await timed(store, items, batches, scale, progress);
    times.push([scale, t]);
    if (t > MAX_TIMED_MS) break;
  }
  const timedEnough = times.filter(([, t]) => t >= MIN_TIMED_MS);
  if (timedEnough.length < 3) return undefined;
  const [a, b, c] = timedEnough.slice(-3);
  if (b[1] / a[1] <= SUPERLINEAR || c[1] / b[1] <= SUPERLINEAR) return undefined;
  return `super-linear: ${[a, b, c].map(([s, t]) => `${t.toFixed(0)} ms at scale ${s}`).join(', ')}`;
}

/** Runs one case: the oracle, the time budget, and (opts.scaling) the doublings. */
export async function fuzzCase(store: Store, c: Case, opts: FuzzOptions): Promise<CaseResult> {
  opts.progress?.();
  const r = await runItems(store, c.items, c.batches);
  if (r.ms > opts.budgetMs) r.problems.push(`slow: ${r.ms.toFixed(0)} ms (budget ${opts.budgetMs}) for ${r.chars} characters`);
  if (opts.scaling && !r.problems.length && c.items.some((it) => allRefsOf(it).some((d) => 'json' in d && hasMarker(d.json)))) {
    const p = await scalingProblem(store, c.items, c.batches, opts.progress);
    if (p) r.problems.push(p);
  }
  return r;
}

function allRefsOf(it: Item): Doc[] {
  if (it.kind === 'ws') return it.body ? [it.body] : [];
  return [it.req, ...(it.body ? [it.body] : []), ...(it.sse ?? []).map((e) => e.data)];
}

/** The kind of a problem, for minimising: the same kind must stay. */
export function problemKind(p: string): string {
  return p.replace(/\d+(\.\d+)?/g, 'N').replace(/conversation \S+/g, 'conversation K').slice(0, 80);
}

/**
 * The fewest of the case's mutations (and smallest sizes) that still give a problem of the same
 * kind: greedy removal, then each size marker halved while it holds; stops trying at `deadline`
 * (performance.now()), a slow case being slow on every try.
 */
export async function minimise(store: Store, c: Case, opts: FuzzOptions, deadline = performance.now() + 60_000): Promise<{ ops: Op[]; problem: string }> {
  const si = Number(c.seedName.split(':')[0]);
  const first = (await fuzzCase(store, c, opts)).problems[0];
  if (!first) return { ops: c.ops, problem: '(did not fail again)' };
  const kind = problemKind(first);
  const scaling = opts.scaling && kind.startsWith('super-linear'); // (a dozen runs a try)
  const fails = async (ops: Op[]): Promise<string | undefined> => {
    const items = build(si, ops);
    const r = await fuzzCase(store, { ...c, ops, items, batches: batchCuts(c.seed, items.length) }, { ...opts, scaling });
    return r.problems.find((p) => problemKind(p) === kind);
  };
  let ops = c.ops;
  let problem = first;
  for (let i = ops.length - 1; i >= 0 && performance.now() < deadline; i--) {
    const fewer = ops.filter((_, k) => k !== i);
    const p = await fails(fewer);
    if (p) { ops = fewer; problem = p; }
  }
  for (let i = 0; i < ops.length; i++) {
    while (performance.now() < deadline) {
      const o = ops[i];
      if (o.op !== 'set' || !isMarker(o.value)) break;
      const v = o.value;
      const size = v instanceof Deep ? v.depth : v.n;
      if (size < 2) break;
      const half = v instanceof Huge ? new Huge(v.elem, size >> 1) : v instanceof Long ? new Long(v.unit, size >> 1, v.tail) : new Deep(v.inner, size >> 1, v.obj);
      const smaller = ops.map((x, k) => (k === i ? { ...o, value: half } : x));
      const p = await fails(smaller);
      if (!p) break;
      ops = smaller;
      problem = p;
    }
  }
  return { ops, problem };
}

/** One line per mutation, for a report. */
export function describeOps(ops: Op[]): string {
  return ops.map((o) => JSON.stringify(o, (_k, v) => (typeof v === 'string' && v.length > 80 ? v.slice(0, 80) + '…' : v)).slice(0, 400)).join('\n    ');
}

// ── Golden: what the unmutated seeds assemble to ─────────────────────────────────────────────

/**
 * The conversations each seed gives unmutated, with the run's random ids (transactions,
 * connections, the conversation ids derived from them) replaced by their place in the seed, so
 * two runs compare equal.
 */
export async function goldenConversations(store: Store): Promise<Record<string, unknown[]>> {
  const out: Record<string, unknown[]> = {};
  for (const [si, s] of seeds().entries()) {
    const m = materialise(s.items);
    await store.putTransactions([...m.upgrades, ...m.records]);
    await assembleRecords(store, m.records);
    for (const conn of m.conns) await connectionEnded(store, conn, m.endTs);
    const names = new Map<string, string>();
    m.records.forEach((r, i) => names.set(r.id, `rec${i}`));
    m.upgrades.forEach((u, i) => { names.set(u.id, `upgrade${i}`); names.set(u.conn, `conn${i}`); });
    const convs = storedConversations(store).filter((c) => !c.internal).map((c) => {
      const { id: _id, ...rest } = publicConversation(c as StoredConversation);
      return JSON.parse(JSON.stringify(rest).replace(/(?<![0-9a-zA-Z])[0-9a-f]{16}(?![0-9a-zA-Z])/g, (w) => names.get(w) ?? w));
    }).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    out[`${si}:${s.name}`] = convs;
    await store.deleteConversations(storedConversations(store).map((c) => c.key));
  }
  return out;
}
