// OpenAI Chat Completions (…/chat/completions, JSON or SSE with choices[].delta) — aider, opencode,
// LiteLLM, vLLM, Ollama. No session id on the wire: conversations grow by message prefix.
import type { Block, HttpTransaction, Usage } from '../../records.js';
import { addUsage, append, errorReply, isObj, num, parseJson, prefixKey, pushMsg, stoppedShort, str, streamIndex, textBlock, toolCall, toolOutput, wasCut, type Exchange, type Msg, type Reply, type Role } from './blocks.js';

function contentBlocks(content: unknown, role: Role): Block[] {
  if (typeof content === 'string') return content ? [textBlock(content, role)] : [];
  if (!Array.isArray(content)) return [];
  return content.flatMap((p) => (isObj(p) && typeof p.text === 'string' ? [textBlock(p.text, role)] : []));
}

function toolCalls(calls: unknown): Block[] {
  if (!Array.isArray(calls)) return [];
  return calls.flatMap((c) => (isObj(c) ? [toolCall(str(c.id) ?? '', str(c.function?.name) ?? '', str(c.function?.arguments) ?? c.function?.arguments)] : []));
}

export function chatMessages(messages: unknown): Msg[] {
  const out: Msg[] = [];
  for (const m of Array.isArray(messages) ? messages : []) {
    if (!isObj(m)) continue;
    if (m.role === 'tool' || m.role === 'function') {
      pushMsg(out, 'tool', [{ type: 'tool_result', callId: str(m.tool_call_id) ?? str(m.name) ?? '', output: toolOutput(m.content) }]);
      continue;
    }
    const role = (['system', 'developer', 'assistant'].includes(m.role) ? m.role : 'user') as Role;
    const blocks = contentBlocks(m.content, role);
    const reasoning = str(m.reasoning_content) ?? str(m.reasoning);
    if (reasoning) blocks.unshift({ type: 'reasoning', text: reasoning });
    append(blocks, toolCalls(m.tool_calls));
    pushMsg(out, role, blocks);
  }
  return out;
}

function usageOf(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  return addUsage({
    inputTokens: num(u.prompt_tokens),
    cachedTokens: num(u.prompt_tokens_details?.cached_tokens),
    outputTokens: num(u.completion_tokens),
    reasoningTokens: num(u.completion_tokens_details?.reasoning_tokens),
    totalTokens: num(u.total_tokens),
  });
}

function messageReply(body: unknown): Reply | undefined {
  if (!isObj(body) || !Array.isArray(body.choices)) return undefined;
  const m = body.choices[0]?.message ?? {};
  const r: Reply = { blocks: chatMessages([{ ...m, role: 'assistant' }])[0]?.blocks ?? [] };
  const short = stoppedShort(body.choices[0]?.finish_reason);
  if (short) r.incomplete = short;
  if (str(body.id)) r.responseId = body.id;
  if (str(body.model)) r.model = body.model;
  const u = usageOf(body.usage);
  if (u) r.usage = u;
  return r;
}

/** SSE: content and tool-call arguments arrive in pieces; parallel calls are told apart by tool_calls[].index. */
export function chatSseReply(events: { data: string }[]): Reply {
  let text = '';
  let reasoning = '';
  const calls: { id: string; name: string; args: string }[] = [];
  let id: string | undefined, model: string | undefined, usage: Usage | undefined;
  let finished = false, done = false;
  let finishReason: unknown;
  for (const e of events) {
    if (e.data.trim() === '[DONE]') { done = true; continue; }
    const ch = parseJson(e.data);
    if (!isObj(ch)) continue;
    id ??= str(ch.id); model ??= str(ch.model);
    if (isObj(ch.usage)) usage = usageOf(ch.usage);
    for (const c of Array.isArray(ch.choices) ? ch.choices : []) {
      if (!isObj(c) || (c.index ?? 0) !== 0) continue;
      if (c.finish_reason) { finished = true; finishReason = c.finish_reason; }
      const d = c.delta ?? {};
      if (typeof d.content === 'string') text += d.content;
      const rc = str(d.reasoning_content) ?? str(d.reasoning);
      if (rc) reasoning += rc;
      for (const tc of Array.isArray(d.tool_calls) ? d.tool_calls : []) {
        if (!isObj(tc)) continue;
        const i = streamIndex(tc.index) ?? calls.length;
        const slot = (calls[i] ??= { id: '', name: '', args: '' });
        if (str(tc.id)) slot.id = tc.id;
        if (str(tc.function?.name)) slot.name += tc.function.name;
        if (str(tc.function?.arguments)) slot.args += tc.function.arguments;
      }
    }
  }
  const blocks: Block[] = [];
  if (reasoning) blocks.push({ type: 'reasoning', text: reasoning });
  if (text) blocks.push({ type: 'text', text });
  for (const c of calls) if (c) blocks.push(toolCall(c.id, c.name, c.args));
  const r: Reply = { blocks };
  if (id) r.responseId = id;
  if (model) r.model = model;
  if (usage) r.usage = usage;
  if (!finished && !done) r.incomplete = 'aborted';
  else { const short = stoppedShort(finishReason); if (short) r.incomplete = short; }
  return r;
}

export function dissectChat(tx: HttpTransaction, req: Record<string, any>): Exchange {
  const history = chatMessages(req.messages);
  const model = str(req.model);
  const ex: Exchange = { provider: 'openai-chat', key: prefixKey('openai-chat', model, history), model, history };
  ex.reply = errorReply(tx) ?? (tx.respEvents ? chatSseReply(tx.respEvents) : messageReply(parseJson(tx.respBody))) ?? (wasCut(tx) ? { blocks: [], incomplete: 'aborted' } : undefined);
  return ex;
}
