// OpenAI Responses API (POST /v1/responses, JSON or SSE) — and the item and event shapes the
// WebSocket transport (openai-ws.ts) shares with it. Items → blocks; server events → a fold that
// yields the reply, preferring `response.completed`'s output over the folded deltas.
import type { Block, Usage } from '../../records.js';
import type { HttpTransaction } from '../../records.js';
import { addUsage, append, errorReply, isObj, num, parseJson, prefixKey, pushMsg, str, streamIndex, textBlock, toolCall, type Exchange, type Msg, type Reply, type Role } from './blocks.js';

function contentText(content: unknown): string[] {
  if (typeof content === 'string') return [content];
  if (!Array.isArray(content)) return [];
  const out: string[] = [];
  for (const p of content) {
    if (!isObj(p)) continue;
    const t = str(p.text) ?? str(p.refusal);
    if (t !== undefined) out.push(t);
  }
  return out;
}

function summaryText(summary: unknown): string[] {
  return Array.isArray(summary) ? summary.flatMap((s) => (isObj(s) && typeof s.text === 'string' ? [s.text] : [])) : [];
}

/** One Responses item → the role it belongs to and its blocks (input and output items share shapes). */
export function itemBlocks(item: unknown): { role: Role; blocks: Block[] } | undefined {
  if (!isObj(item)) return undefined;
  const type = str(item.type) ?? (item.role ? 'message' : undefined);
  switch (type) {
    case 'message': {
      const role = (['user', 'assistant', 'system', 'developer'].includes(item.role) ? item.role : 'user') as Role;
      return { role, blocks: contentText(item.content).map((t) => textBlock(t, role)) };
    }
    case 'reasoning':
      return { role: 'assistant', blocks: summaryText(item.summary).map((text) => ({ type: 'reasoning', text }) as Block) };
    case 'function_call':
      return { role: 'assistant', blocks: [toolCall(str(item.call_id) ?? str(item.id) ?? '', str(item.name) ?? '', str(item.arguments) ?? item.arguments)] };
    case 'custom_tool_call': {
      const input = str(item.input) ?? '';
      return { role: 'assistant', blocks: [{ type: 'tool_call', callId: str(item.call_id) ?? str(item.id) ?? '', name: str(item.name) ?? '', arguments: input, argumentsRaw: input }] };
    }
    case 'local_shell_call':
      return { role: 'assistant', blocks: [{ type: 'tool_call', callId: str(item.call_id) ?? str(item.id) ?? '', name: 'local_shell', arguments: item.action ?? {} }] };
    case 'function_call_output':
    case 'custom_tool_call_output':
    case 'local_shell_call_output':
      return { role: 'tool', blocks: [{ type: 'tool_result', callId: str(item.call_id) ?? '', output: item.output }] };
    default:
      // web_search_call, image_generation_call, mcp_call…: a tool call named by its type
      if (type && type.endsWith('_call')) return { role: 'assistant', blocks: [{ type: 'tool_call', callId: str(item.call_id) ?? str(item.id) ?? '', name: type, arguments: item.action ?? item.arguments ?? {} }] };
      return undefined;
  }
}

/** A request's `instructions` + `input` (string or items) → messages. */
export function inputMessages(input: unknown, instructions?: unknown): Msg[] {
  const out: Msg[] = [];
  if (typeof instructions === 'string' && instructions) pushMsg(out, 'system', [{ type: 'text', text: instructions }]);
  if (typeof input === 'string') pushMsg(out, 'user', [textBlock(input, 'user')]);
  else if (Array.isArray(input)) for (const it of input) { const m = itemBlocks(it); if (m) pushMsg(out, m.role, m.blocks); }
  return out;
}

export function responsesUsage(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  return addUsage({
    inputTokens: num(u.input_tokens),
    cachedTokens: num(u.input_tokens_details?.cached_tokens),
    outputTokens: num(u.output_tokens),
    reasoningTokens: num(u.output_tokens_details?.reasoning_tokens),
    totalTokens: num(u.total_tokens),
  });
}

// ── Streaming fold ───────────────────────────────────────────────────────────────────────────

interface ItemFold {
  item?: Record<string, any>; // from output_item.added, replaced by output_item.done
  done?: boolean;
  parts: string[]; // output_text by content_index
  args: string; // function_call_arguments deltas (or custom_tool_call_input)
  summaries: string[]; // reasoning_summary_text by summary_index
}

/** The state of one response being streamed: serialisable (it lives in the stored conversation). */
export interface ResponseFold {
  id?: string;
  model?: string;
  items: ItemFold[]; // by output_index
  /** terminal event seen: the reason is absent for response.completed */
  ended?: { type: string; output?: unknown[]; usage?: unknown; error?: string };
}

export function newFold(): ResponseFold {
  return { items: [] };
}

function slot(f: ResponseFold, idx: unknown): ItemFold {
  const i = streamIndex(idx) ?? Math.max(0, f.items.length - 1);
  while (f.items.length <= i) f.items.push({ parts: [], args: '', summaries: [] });
  return f.items[i];
}

function errorText(e: unknown): string | undefined {
  if (!isObj(e)) return typeof e === 'string' ? e : undefined;
  return str(e.message) ?? str(e.code) ?? str(e.type);
}

/**
 * An output item as a fold keeps it: a reasoning item's encrypted_content (what codex asks for with
 * include, kilobytes per item) is shown nowhere, and a codex socket's state keeps every response.
 */
function withoutCiphertext(item: unknown): unknown {
  if (!isObj(item) || item.encrypted_content === undefined) return item;
  const { encrypted_content: _, ...rest } = item;
  return rest;
}

/** Folds one server event into the response state. Returns false when the event is not part of a response stream. */
export function foldEvent(f: ResponseFold, ev: Record<string, any>): boolean {
  const r = isObj(ev.response) ? ev.response : undefined;
  if (r) { f.id ??= str(r.id); f.model ??= str(r.model); }
  switch (ev.type) {
    case 'response.created': case 'response.in_progress': case 'response.queued':
      return true;
    case 'response.output_item.added': {
      const s = slot(f, ev.output_index);
      if (!s.done && isObj(ev.item)) s.item = ev.item;
      return true;
    }
    case 'response.output_item.done': {
      const s = slot(f, ev.output_index);
      if (isObj(ev.item)) { s.item = ev.item; s.done = true; }
      return true;
    }
    case 'response.output_text.delta': case 'response.refusal.delta': {
      const s = slot(f, ev.output_index); const c = streamIndex(ev.content_index) ?? 0;
      s.parts[c] = (s.parts[c] ?? '') + (str(ev.delta) ?? '');
      return true;
    }
    case 'response.output_text.done': case 'response.refusal.done': {
      const s = slot(f, ev.output_index); const t = str(ev.text) ?? str(ev.refusal);
      if (t !== undefined) s.parts[streamIndex(ev.content_index) ?? 0] = t;
      return true;
    }
    case 'response.function_call_arguments.delta': case 'response.custom_tool_call_input.delta':
      slot(f, ev.output_index).args += str(ev.delta) ?? '';
      return true;
    case 'response.function_call_arguments.done': case 'response.custom_tool_call_input.done': {
      const t = str(ev.arguments) ?? str(ev.input);
      if (t !== undefined) slot(f, ev.output_index).args = t;
      return true;
    }
    case 'response.reasoning_summary_text.delta': {
      const s = slot(f, ev.output_index); const i = streamIndex(ev.summary_index) ?? 0;
      s.summaries[i] = (s.summaries[i] ?? '') + (str(ev.delta) ?? '');
      return true;
    }
    case 'response.reasoning_summary_text.done': {
      const t = str(ev.text);
      if (t !== undefined) slot(f, ev.output_index).summaries[streamIndex(ev.summary_index) ?? 0] = t;
      return true;
    }
    case 'response.completed': case 'response.failed': case 'response.incomplete':
      f.ended = {
        type: ev.type,
        output: Array.isArray(r?.output) ? r!.output.map(withoutCiphertext) : undefined,
        usage: r?.usage,
        error: errorText(r?.error) ?? (ev.type === 'response.incomplete' ? str(r?.incomplete_details?.reason) : undefined),
      };
      // the output supersedes what was streamed (foldReply reads it alone), and a codex socket's
      // state keeps every response's fold, rewritten at every assembly
      if (f.ended.output?.length) f.items = [];
      return true;
    case 'error':
      f.ended = { type: 'error', error: errorText(ev.error) ?? str(ev.message) ?? str(ev.code) };
      return true;
    default:
      return typeof ev.type === 'string' && ev.type.startsWith('response.');
  }
}

function foldedBlocks(f: ResponseFold): Block[] {
  const out: Block[] = [];
  for (const s of f.items) {
    if (!s) continue;
    if (s.done && s.item) { append(out, itemBlocks(s.item)?.blocks ?? []); continue; }
    const it = s.item ?? {};
    const type = it.type ?? (s.summaries.length ? 'reasoning' : s.args ? 'function_call' : 'message');
    if (type === 'message') append(out, s.parts.filter((p) => p !== undefined).map((text) => ({ type: 'text', text }) as Block));
    else if (type === 'reasoning') append(out, s.summaries.filter((p) => p !== undefined).map((text) => ({ type: 'reasoning', text }) as Block));
    else if (type === 'function_call') out.push(toolCall(str(it.call_id) ?? '', str(it.name) ?? '', s.args));
    else if (type === 'custom_tool_call') out.push({ type: 'tool_call', callId: str(it.call_id) ?? '', name: str(it.name) ?? '', arguments: s.args, argumentsRaw: s.args });
    else append(out, itemBlocks(it)?.blocks ?? []);
  }
  return out;
}

/** The reply so far. `closed`: the stream ended without a terminal event (→ 'aborted'). */
export function foldReply(f: ResponseFold, closed: boolean): Reply {
  const e = f.ended;
  const reply: Reply = { blocks: [] };
  if (f.id) reply.responseId = f.id;
  if (f.model) reply.model = f.model;
  const fromOutput = e?.output && e.output.length > 0 ? e.output.flatMap((it) => itemBlocks(it)?.blocks ?? []) : undefined;
  // The completed output is authoritative; a failed/cut stream keeps whatever the deltas delivered.
  reply.blocks = e?.type === 'response.completed' ? fromOutput ?? foldedBlocks(f) : fromOutput ?? foldedBlocks(f);
  const usage = responsesUsage(e?.usage);
  if (usage) reply.usage = usage;
  if (e && e.type !== 'response.completed') reply.incomplete = e.type;
  if (e?.error) reply.error = e.error;
  if (!e) { if (closed) reply.incomplete = 'aborted'; else reply.streaming = true; }
  return reply;
}

/** A non-streamed Responses API body (the Response object) → reply. */
export function responseObjectReply(r: unknown): Reply | undefined {
  if (!isObj(r)) return undefined;
  if (isObj(r.error) && !Array.isArray(r.output)) return { blocks: [], incomplete: 'error', error: errorText(r.error) };
  const status = str(r.status);
  const f = newFold();
  foldEvent(f, { type: status === 'failed' ? 'response.failed' : status === 'incomplete' ? 'response.incomplete' : 'response.completed', response: r });
  return foldReply(f, true);
}

/** SSE events of one HTTP response → reply. `cut`: the transaction ended abnormally. */
export function sseReply(events: { event?: string; data: string }[], cut: boolean): Reply {
  const f = newFold();
  for (const e of events) {
    const ev = parseJson(e.data);
    if (isObj(ev)) { ev.type ??= e.event; foldEvent(f, ev); }
  }
  void cut; // an HTTP stream is over once its transaction is stored: no terminal event → aborted
  return foldReply(f, true);
}

/**
 * The session a Responses request belongs to: codex's session id (prompt_cache_key), except for a
 * sub-agent codex spawned (multi_agent_v1 spawn_agent). That one sends its parent's
 * prompt_cache_key, but its own thread id, and its parent's, in the turn metadata. It is a thread of
 * its own, with its own history; under the parent's key, its line would replace the parent's.
 */
export function responsesSession(req: Record<string, any>): { id: string; parent?: string } | undefined {
  const meta = parseJson(str(isObj(req.client_metadata) ? req.client_metadata['x-codex-turn-metadata'] : undefined));
  if (isObj(meta) && typeof meta.thread_id === 'string' && typeof meta.parent_thread_id === 'string' && meta.thread_id !== meta.parent_thread_id) return { id: meta.thread_id, parent: meta.parent_thread_id };
  const pck = str(req.prompt_cache_key);
  return pck === undefined ? undefined : { id: pck };
}

/**
 * POST /v1/responses. Key: the session (responsesSession: codex's session id, or a sub-agent's
 * thread); else the chain of previous_response_id (resolved by the assembler); else
 * message-prefix growth.
 */
export function dissectResponsesHttp(tx: HttpTransaction, req: Record<string, any>): Exchange {
  const history = inputMessages(req.input, req.instructions);
  const model = str(req.model);
  const session = responsesSession(req);
  const pck = session?.id;
  const prev = str(req.previous_response_id);
  const ex: Exchange = { provider: 'openai-responses', key: pck ? `openai-responses:${pck}` : prefixKey('openai-responses', model, history), model, history };
  // The parent is a codex session too, keyed by its thread id: a root thread's prompt_cache_key is its thread id.
  if (session?.parent) ex.parentKey = `openai-responses:${session.parent}`;
  if (prev) { ex.previousResponseId = prev; if (!pck) ex.key = ''; }
  ex.reply = errorReply(tx) ?? (tx.respEvents ? sseReply(tx.respEvents, true) : responseObjectReply(parseBody(tx.respBody)));
  return ex;
}

function parseBody(s: string | undefined): unknown {
  if (!s) return undefined;
  return parseJson(s);
}
