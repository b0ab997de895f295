// Anthropic Messages API (POST /v1/messages, JSON or SSE). Claude Code puts its session id in
// metadata.user_id ("user_<hash>_account_<uuid>_session_<uuid>"): that session is the key.
import type { Block, HttpTransaction, Usage } from '../../records.js';
import { addUsage, append, errorReply, isObj, num, parseJson, prefixKey, pushMsg, roleFor, splitTrailingReminders, stoppedShort, str, streamIndex, textBlock, toolCall, toolOutput, wasCut, type Exchange, type Msg, type Reply, type Role } from './blocks.js';

function blocksOf(content: unknown, role: Role): Block[] {
  if (typeof content === 'string') return [textBlock(content, role)];
  if (!Array.isArray(content)) return [];
  const out: Block[] = [];
  for (const b of content) {
    if (!isObj(b)) continue;
    switch (b.type) {
      case 'text': if (typeof b.text === 'string') out.push(textBlock(b.text, role)); break;
      case 'thinking': if (typeof b.thinking === 'string') out.push({ type: 'reasoning', text: b.thinking }); break;
      case 'tool_use': case 'server_tool_use': out.push(toolCall(str(b.id) ?? '', str(b.name) ?? '', b.input ?? {})); break;
      case 'tool_result': {
        const output = toolOutput(b.content);
        const split = typeof output === 'string' ? splitTrailingReminders(output) : { output, reminders: [] };
        const r: Block = { type: 'tool_result', callId: str(b.tool_use_id) ?? '', output: split.output };
        if (b.is_error === true) r.isError = true;
        out.push(r);
        append(out, split.reminders.map((t) => textBlock(t, 'user')));
        break;
      }
    }
  }
  return out;
}

export function sessionKey(userId: string): string {
  const j = userId.startsWith('{') ? parseJson(userId) : undefined; // newer clients send a JSON object
  if (isObj(j) && typeof j.session_id === 'string') return j.session_id;
  const m = /_session_([0-9a-f-]{8,})$/i.exec(userId) ?? /session_([0-9a-f-]{36})/i.exec(userId);
  return m ? m[1] : userId;
}

function usageOf(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  const cacheRead = num(u.cache_read_input_tokens) ?? 0;
  const inTok = num(u.input_tokens);
  const input = inTok === undefined ? undefined : inTok + cacheRead + (num(u.cache_creation_input_tokens) ?? 0);
  const output = num(u.output_tokens);
  // Anthropic counts cache reads apart from input_tokens; greytap's inputTokens is the whole prompt (as OpenAI's).
  return addUsage({ inputTokens: input, cachedTokens: u.cache_read_input_tokens === undefined ? undefined : cacheRead, outputTokens: output, totalTokens: input !== undefined && output !== undefined ? input + output : undefined });
}

function messageReply(m: unknown): Reply | undefined {
  if (!isObj(m)) return undefined;
  if (m.type === 'error') return { blocks: [], incomplete: 'error', error: str(m.error?.message) };
  const r: Reply = { blocks: blocksOf(m.content, 'assistant') };
  const short = stoppedShort(m.stop_reason);
  if (short) r.incomplete = short;
  if (str(m.id)) r.responseId = m.id;
  if (str(m.model)) r.model = m.model;
  const u = usageOf(m.usage);
  if (u) r.usage = u;
  return r;
}

/** SSE: message_start, content_block_start/delta/stop, message_delta (usage), message_stop. */
export function anthropicSseReply(events: { event?: string; data: string }[]): Reply {
  let msg: Record<string, any> | undefined;
  const blocks: Record<string, any>[] = [];
  const partialJson: string[] = [];
  let usage: Record<string, any> = {};
  let stopped = false;
  let stopReason: unknown;
  let error: string | undefined;
  for (const e of events) {
    const ev = parseJson(e.data);
    if (!isObj(ev)) continue;
    switch (ev.type ?? e.event) {
      case 'message_start': msg = isObj(ev.message) ? ev.message : {}; usage = { ...(msg.usage ?? {}) }; break;
      case 'content_block_start': { const i = streamIndex(ev.index) ?? blocks.length; blocks[i] = { ...(ev.content_block ?? {}) }; partialJson[i] = ''; break; }
      case 'content_block_delta': {
        const i = streamIndex(ev.index) ?? blocks.length - 1; const d = ev.delta ?? {}; const b = (blocks[i] ??= { type: 'text', text: '' });
        if (d.type === 'text_delta') b.text = (b.text ?? '') + (d.text ?? '');
        else if (d.type === 'thinking_delta') b.thinking = (b.thinking ?? '') + (d.thinking ?? '');
        else if (d.type === 'input_json_delta') partialJson[i] = (partialJson[i] ?? '') + (d.partial_json ?? '');
        break;
      }
      case 'content_block_stop': break;
      case 'message_delta': Object.assign(usage, ev.usage ?? {}); stopReason = ev.delta?.stop_reason ?? stopReason; break;
      case 'message_stop': stopped = true; break;
      case 'error': error = str(ev.error?.message) ?? 'error'; break;
    }
  }
  blocks.forEach((b, i) => {
    // tool input streams as JSON text; an empty stream means the input given at block start
    if (b && (b.type === 'tool_use' || b.type === 'server_tool_use') && partialJson[i]) b.input = parseJson(partialJson[i]) ?? partialJson[i];
  });
  const r: Reply = { blocks: blocksOf(blocks.filter(Boolean), 'assistant') };
  if (str(msg?.id)) r.responseId = msg!.id;
  if (str(msg?.model)) r.model = msg!.model;
  const u = usageOf(usage);
  if (u) r.usage = u;
  if (error) { r.incomplete = 'error'; r.error = error; } else if (!stopped) r.incomplete = 'aborted';
  else { const short = stoppedShort(stopReason); if (short) r.incomplete = short; }
  return r;
}

/**
 * Claude Code (2.1+) opens its system prompt with a block "x-anthropic-billing-header: cc_version=…;
 * cch=…;" whose cch changes with every request. It is request metadata, not instructions: kept, it
 * would make each request's history differ from the line at its first message, and every request
 * after the first would be taken for a side call and dropped.
 */
function isBillingHeader(b: Block): boolean {
  return b.type === 'text' && b.text.startsWith('x-anthropic-billing-header:');
}

export function dissectAnthropic(tx: HttpTransaction, req: Record<string, any>): Exchange {
  const history: Msg[] = [];
  if (req.system !== undefined) pushMsg(history, 'system', blocksOf(req.system, 'system').filter((b) => !isBillingHeader(b)));
  for (const m of Array.isArray(req.messages) ? req.messages : []) {
    if (!isObj(m)) continue;
    // Claude Code 2.1.3xx sub-agents also send instructions as role "system" messages among the turns
    const role: Role = m.role === 'assistant' ? 'assistant' : m.role === 'system' ? 'system' : 'user';
    const blocks = blocksOf(m.content, role);
    pushMsg(history, roleFor(role, blocks), blocks);
  }
  const model = str(req.model);
  const userId = str(req.metadata?.user_id);
  const ex: Exchange = { provider: 'anthropic', key: userId ? `anthropic:${sessionKey(userId)}` : prefixKey('anthropic', model, history), model, history };
  ex.reply = errorReply(tx) ?? (tx.respEvents ? anthropicSseReply(tx.respEvents) : messageReply(parseJson(tx.respBody))) ?? (wasCut(tx) ? { blocks: [], incomplete: 'aborted' } : undefined);
  return ex;
}
