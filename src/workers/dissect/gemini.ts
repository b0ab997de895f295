// Gemini (…/models/{model}:generateContent, :streamGenerateContent — SSE with alt=sse, else a JSON
// array of chunks). The model is in the path, not the body.
// Code Assist (cloudcode-pa.googleapis.com/v1internal:generateContent / :streamGenerateContent —
// what Gemini CLI talks to with "Login with Google", its default) carries the same request and
// response one level down: the body is {model, project, user_prompt_id, request: {contents,
// systemInstruction, …, session_id?}} and every chunk is {response: {candidates, usageMetadata,
// modelVersion}, traceId} (gemini-cli packages/core/src/code_assist/converter.ts).
import type { Block, HttpTransaction, Usage } from '../../records.js';
import { addUsage, errorReply, isObj, num, parseJson, prefixKey, pushMsg, roleFor, stoppedShort, str, textBlock, toolCall, wasCut, type Exchange, type Msg, type Reply, type Role } from './blocks.js';

function partBlocks(parts: unknown, role: Role): Block[] {
  const out: Block[] = [];
  for (const p of Array.isArray(parts) ? parts : []) {
    if (!isObj(p)) continue;
    if (typeof p.text === 'string') out.push(p.thought === true ? { type: 'reasoning', text: p.text } : textBlock(p.text, role));
    else if (isObj(p.functionCall)) out.push(toolCall(str(p.functionCall.id) ?? str(p.functionCall.name) ?? '', str(p.functionCall.name) ?? '', p.functionCall.args ?? {}));
    else if (isObj(p.functionResponse)) out.push({ type: 'tool_result', callId: str(p.functionResponse.id) ?? str(p.functionResponse.name) ?? '', name: str(p.functionResponse.name), output: p.functionResponse.response });
  }
  return out;
}

function usageOf(u: unknown): Usage | undefined {
  if (!isObj(u)) return undefined;
  const cand = num(u.candidatesTokenCount), thoughts = num(u.thoughtsTokenCount);
  // outputTokens includes thinking, as OpenAI's output_tokens includes reasoning
  return addUsage({
    inputTokens: num(u.promptTokenCount),
    cachedTokens: num(u.cachedContentTokenCount),
    outputTokens: cand === undefined && thoughts === undefined ? undefined : (cand ?? 0) + (thoughts ?? 0),
    reasoningTokens: thoughts,
    totalTokens: num(u.totalTokenCount),
  });
}

/** Chunks of a (streamed) GenerateContentResponse → one reply: text parts concatenate, others append. */
export function geminiReply(chunks: unknown[], cut: boolean): Reply {
  const blocks: Block[] = [];
  let usage: Usage | undefined, model: string | undefined, id: string | undefined, finished: unknown;
  for (const chunk of chunks) {
    if (!isObj(chunk)) continue;
    const c = isObj(chunk.response) ? chunk.response : chunk; // Code Assist wraps each chunk
    if (isObj(c.error)) return { blocks, incomplete: 'error', error: str(c.error.message) };
    const cand = Array.isArray(c.candidates) ? c.candidates[0] : undefined;
    if (cand?.finishReason) finished = cand.finishReason;
    for (const b of partBlocks(cand?.content?.parts, 'assistant')) {
      const last = blocks[blocks.length - 1];
      if (last && last.type === b.type && (b.type === 'text' || b.type === 'reasoning')) (last as { text: string }).text += (b as { text: string }).text;
      else blocks.push(b);
    }
    usage = usageOf(c.usageMetadata) ?? usage;
    // Code Assist has no responseId; Gemini CLI uses the traceId as the response id
    model ??= str(c.modelVersion); id ??= str(c.responseId) ?? str(chunk.traceId);
  }
  const r: Reply = { blocks };
  if (id) r.responseId = id;
  if (model) r.model = model;
  if (usage) r.usage = usage;
  if (!finished && cut) r.incomplete = 'aborted';
  else { const short = stoppedShort(finished); if (short) r.incomplete = short; }
  return r;
}

/**
 * The session of a Code Assist request. user_prompt_id is "<session id>########<prompt count>" in an
 * interactive session, so it changes with every prompt: only the part before the marker names the
 * conversation (newer clients also send the session id itself as request.session_id).
 */
function codeAssistSession(body: Record<string, any>, req: Record<string, any>): string | undefined {
  return str(req.session_id) || str(body.user_prompt_id)?.split('########')[0] || undefined;
}

export function dissectGemini(tx: HttpTransaction, body: Record<string, any>): Exchange {
  const codeAssist = isObj(body.request) && Array.isArray(body.request.contents);
  const req: Record<string, any> = codeAssist ? body.request : body;
  const history: Msg[] = [];
  if (isObj(req.systemInstruction)) pushMsg(history, 'system', partBlocks(req.systemInstruction.parts, 'system'));
  for (const c of Array.isArray(req.contents) ? req.contents : []) {
    if (!isObj(c)) continue;
    const role: Role = c.role === 'model' ? 'assistant' : 'user';
    const blocks = partBlocks(c.parts, role);
    pushMsg(history, roleFor(role, blocks), blocks);
  }
  // Code Assist's path names no model and its inner request has none: the wrapper carries it
  const model = /\/models\/([^/:?]+)/.exec(tx.path)?.[1] ?? str(req.model) ?? str(body.model);
  // Code Assist names its session; the public API does not, so the conversation is found by its prefix
  const session = codeAssist ? codeAssistSession(body, req) : undefined;
  const ex: Exchange = { provider: 'gemini', key: session ? `gemini:${session}` : prefixKey('gemini', model, history), model, history };
  let reply = errorReply(tx);
  if (!reply) {
    const cut = wasCut(tx);
    if (tx.respEvents) reply = geminiReply(tx.respEvents.map((e) => parseJson(e.data)), cut || !tx.respEvents.length);
    else {
      const body = parseJson(tx.respBody);
      if (body !== undefined) reply = geminiReply(Array.isArray(body) ? body : [body], cut);
      else if (cut) reply = { blocks: [], incomplete: 'aborted' };
    }
  }
  ex.reply = reply;
  return ex;
}
