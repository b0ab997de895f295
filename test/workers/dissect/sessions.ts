// Realistic synthetic sessions (what codex, Claude Code, a chat-completions agent and Gemini put on
// the wire), as captured records. Each builder returns the records in wire/commit order.
import { nextId } from '../../../src/store/ids.js';
import type { HttpTransaction, TransactionRecord, WsMessageRecord } from '../../../src/records.js';
import { WsLane, httpTx, sse, upgradeTx } from './session-fixtures.js';

export const CODEX_INSTRUCTIONS = 'You are Codex, a coding agent.';
const USAGE = (i: number, c: number, o: number, r: number) => ({ input_tokens: i, input_tokens_details: { cached_tokens: c }, output_tokens: o, output_tokens_details: { reasoning_tokens: r }, total_tokens: i + o });

export function codexCreate(pck: string, input: unknown[], extra: Record<string, unknown> = {}) {
  return {
    type: 'response.create', model: 'gpt-5-codex', instructions: CODEX_INSTRUCTIONS, input,
    tools: [{ type: 'function', name: 'shell', description: 'Runs a command', parameters: { type: 'object' }, strict: false }],
    tool_choice: 'auto', parallel_tool_calls: false, reasoning: { effort: 'medium', summary: 'auto' }, store: false, stream: true,
    include: ['reasoning.encrypted_content'], prompt_cache_key: pck,
    client_metadata: { 'x-codex-turn-metadata': JSON.stringify({ session_id: pck, turn_id: 't1' }) }, ...extra,
  };
}

/** A Responses message item as codex sends it (and as an output item). */
export const msg = (role: string, text: string) => ({ type: 'message', role, content: [{ type: role === 'assistant' ? 'output_text' : 'input_text', text }] });

/** The events of a response with these output items (no deltas). */
export function codexAnswer(id: string, output: unknown[], model = 'gpt-5-codex'): Record<string, unknown>[] {
  return [
    { type: 'response.created', response: { id, model, status: 'in_progress' } },
    { type: 'response.completed', response: { id, model, status: 'completed', output } },
  ];
}

export interface CodexLanes { client: WsMessageRecord[]; server: WsMessageRecord[]; upgrade: HttpTransaction }

/** One client message and the server events that answer it (what a fake upstream replays end to end). */
export interface CodexStep { request: Record<string, unknown>; events: Record<string, unknown>[]; closeAfter?: boolean }

/**
 * codex over one WebSocket, as wire JSON: a pre-warm (generate:false), a prompt answered with
 * reasoning + a function_call, the function_call_output answered with text, then a follow-up
 * answered with text. `end`: how the last response ends — 'completed', 'failed', 'close' (the
 * client closes the socket mid-stream).
 */
export function codexScript(pck: string, end: 'completed' | 'failed' | 'close' = 'completed'): CodexStep[] {
  let sn = 0;
  const evs = (list: Record<string, unknown>[]) => list.map((e) => ({ ...e, sequence_number: sn++ }));
  const steps: CodexStep[] = [];
  steps.push({ request: codexCreate(pck, [], { generate: false }), events: evs([
    { type: 'response.created', response: { id: 'resp_0', model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.completed', response: { id: 'resp_0', model: 'gpt-5-codex', status: 'completed', output: [], usage: USAGE(0, 0, 0, 0) } },
  ]) });

  const reasoning = { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: '**Listing files** with ls' }], encrypted_content: 'gAAAA' };
  const call = { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'shell', arguments: '{"command":["ls","-a"]}' };
  steps.push({ request: codexCreate(pck, [
    msg('developer', '<permissions instructions>\nsandbox: workspace-write\n</permissions instructions>'),
    msg('user', '# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>be brief</INSTRUCTIONS>'),
    msg('user', '<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>'),
    msg('user', 'list the files'),
  ], { previous_response_id: 'resp_0' }), events: evs([
    { type: 'response.created', response: { id: 'resp_1', model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.in_progress', response: { id: 'resp_1', model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.output_item.added', output_index: 0, item: { type: 'reasoning', id: 'rs_1', summary: [] } },
    { type: 'response.reasoning_summary_part.added', output_index: 0, summary_index: 0, item_id: 'rs_1' },
    { type: 'response.reasoning_summary_text.delta', output_index: 0, summary_index: 0, item_id: 'rs_1', delta: '**Listing files**' },
    { type: 'response.reasoning_summary_text.delta', output_index: 0, summary_index: 0, item_id: 'rs_1', delta: ' with ls' },
    { type: 'response.reasoning_summary_text.done', output_index: 0, summary_index: 0, item_id: 'rs_1', text: '**Listing files** with ls' },
    { type: 'response.output_item.done', output_index: 0, item: reasoning },
    { type: 'response.output_item.added', output_index: 1, item: { ...call, arguments: '' } },
    { type: 'response.function_call_arguments.delta', output_index: 1, item_id: 'fc_1', delta: '{"command":' },
    { type: 'response.function_call_arguments.delta', output_index: 1, item_id: 'fc_1', delta: '["ls","-a"]}' },
    { type: 'response.function_call_arguments.done', output_index: 1, item_id: 'fc_1', arguments: '{"command":["ls","-a"]}' },
    { type: 'response.output_item.done', output_index: 1, item: call },
    { type: 'response.completed', response: { id: 'resp_1', model: 'gpt-5-codex', status: 'completed', output: [reasoning, call], usage: USAGE(5000, 4096, 120, 64) } },
  ]) });

  const answer = { type: 'message', id: 'msg_2', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Two entries: README.md and src.', annotations: [] }] };
  steps.push({ request: codexCreate(pck, [{ type: 'function_call_output', call_id: 'call_1', output: '.\n..\nREADME.md\nsrc' }], { previous_response_id: 'resp_1' }), events: evs([
    { type: 'response.created', response: { id: 'resp_2', model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.output_item.added', output_index: 0, item: { ...answer, content: [], status: 'in_progress' } },
    { type: 'response.content_part.added', output_index: 0, content_index: 0, item_id: 'msg_2', part: { type: 'output_text', text: '' } },
    ...['Two entries: ', 'README.md', ' and src.'].map((d) => ({ type: 'response.output_text.delta', output_index: 0, content_index: 0, item_id: 'msg_2', delta: d })),
    { type: 'response.output_text.done', output_index: 0, content_index: 0, item_id: 'msg_2', text: 'Two entries: README.md and src.' },
    { type: 'response.output_item.done', output_index: 0, item: answer },
    { type: 'response.completed', response: { id: 'resp_2', model: 'gpt-5-codex', status: 'completed', output: [answer], usage: USAGE(5200, 4992, 30, 0) } },
  ]) });

  const last: Record<string, unknown>[] = [
    { type: 'response.created', response: { id: 'resp_3', model: 'gpt-5-codex', status: 'in_progress' } },
    { type: 'response.output_item.added', output_index: 0, item: { type: 'message', id: 'msg_3', role: 'assistant', content: [] } },
    { type: 'response.output_text.delta', output_index: 0, content_index: 0, item_id: 'msg_3', delta: 'Only ' },
    { type: 'response.output_text.delta', output_index: 0, content_index: 0, item_id: 'msg_3', delta: '. and ..' },
  ];
  if (end === 'completed') {
    const m3 = { type: 'message', id: 'msg_3', role: 'assistant', content: [{ type: 'output_text', text: 'Only . and ..' }] };
    last.push({ type: 'response.completed', response: { id: 'resp_3', model: 'gpt-5-codex', status: 'completed', output: [m3], usage: USAGE(5300, 5120, 10, 0) } });
  } else if (end === 'failed') {
    last.push({ type: 'response.failed', response: { id: 'resp_3', model: 'gpt-5-codex', status: 'failed', output: [], error: { code: 'server_error', message: 'The server had an error' }, usage: USAGE(5300, 0, 2, 0) } });
  }
  steps.push({ request: codexCreate(pck, [msg('user', 'and the hidden ones?')], { previous_response_id: 'resp_2' }), events: evs(last), closeAfter: end !== 'failed' });
  return steps;
}

/** codexScript as the records the decoders commit: each request, then its events, 1 ms apart; the client closes at the end. */
export function codexSession(pck: string, t0: number, end: 'completed' | 'failed' | 'close' = 'completed', conn = nextId()): CodexLanes {
  return codexSocket(codexScript(pck, end), t0, conn, end === 'close' ? 1001 : 1000);
}

/** Steps on one socket as the records the decoders commit: each request, then its events, 1 ms apart; a close where a step says so. */
export function codexSocket(steps: CodexStep[], t0: number, conn = nextId(), closeCode = 1000): CodexLanes {
  const upgrade = upgradeTx(conn, t0, [['originator', 'codex_cli_rs'], ['User-Agent', 'codex_cli_rs/0.46.0 (Debian 12; x86_64)']]);
  const c = new WsLane(conn, upgrade.id, 'client');
  const s = new WsLane(conn, upgrade.id, 'server');
  const client: WsMessageRecord[] = [], server: WsMessageRecord[] = [];
  let ts = t0 + 1;
  for (const step of steps) {
    client.push(c.msg(ts++, step.request));
    for (const e of step.events) server.push(s.msg(ts++, e));
    if (step.closeAfter) client.push(c.close(ts++, closeCode));
  }
  return { client, server, upgrade };
}

// ── Claude Code over HTTP + SSE ─────────────────────────────────────────────────────────────

export const CC_SESSION = '7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b';
const CC_USER = `user_5d41402abc4b2a76b9719d911017c592_account_0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0_session_${CC_SESSION}`;
const CC_HEADERS: [string, string][] = [['User-Agent', 'claude-cli/2.0.14 (external, cli)'], ['anthropic-version', '2023-06-01'], ['x-api-key', '[REDACTED]']];
const CC_SYSTEM = [{ type: 'text', text: "You are Claude Code, Anthropic's official CLI for Claude." }];

export function claudeCodeSession(t0: number, opts: { abortSecond?: boolean } = {}): HttpTransaction[] {
  const user1 = { role: 'user', content: [{ type: 'text', text: '<system-reminder>\nThe date is 2026-11-25.\n</system-reminder>' }, { type: 'text', text: 'fix the failing test' }] };
  const tx1 = httpTx({
    ts: t0, host: 'api.anthropic.com', path: '/v1/messages?beta=true', headers: CC_HEADERS,
    req: { model: 'claude-sonnet-4-5', max_tokens: 32000, system: CC_SYSTEM, messages: [user1], metadata: { user_id: CC_USER }, stream: true, tools: [{ name: 'Read', input_schema: {} }] },
    events: sse([
      { type: 'message_start', message: { id: 'msg_01A', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929', content: [], usage: { input_tokens: 12, cache_creation_input_tokens: 300, cache_read_input_tokens: 9000, output_tokens: 1 } } },
      { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'The test fails; ' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'read it first.' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQB' } },
      { type: 'content_block_stop', index: 0 },
      { type: 'ping' },
      { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } },
      { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: "I'll read " } },
      { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'the test.' } },
      { type: 'content_block_stop', index: 1 },
      { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_01', name: 'Read', input: {} } },
      { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } },
      { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{"file_path": "/repo/' } },
      { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: 'test/a.test.ts"}' } },
      { type: 'content_block_stop', index: 2 },
      { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 87 } },
      { type: 'message_stop' },
    ]),
  });
  // Claude Code's side call on a small model with the same session (not part of the main line)
  const side = httpTx({
    ts: t0 + 1, host: 'api.anthropic.com', path: '/v1/messages?beta=true', headers: CC_HEADERS,
    req: { model: 'claude-haiku-4-5', max_tokens: 512, system: [{ type: 'text', text: 'Summarize this coding conversation in a title.' }], messages: [{ role: 'user', content: 'fix the failing test' }], metadata: { user_id: CC_USER } },
    resp: { id: 'msg_side', type: 'message', role: 'assistant', model: 'claude-haiku-4-5', content: [{ type: 'text', text: 'Fix failing test' }], usage: { input_tokens: 30, output_tokens: 4 } },
  });
  const assistant1 = { role: 'assistant', content: [
    { type: 'thinking', thinking: 'The test fails; read it first.', signature: 'EqQB' },
    { type: 'text', text: "I'll read the test." },
    { type: 'tool_use', id: 'toolu_01', name: 'Read', input: { file_path: '/repo/test/a.test.ts' } },
  ] };
  const user2 = { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_01', content: [{ type: 'text', text: "expect(add(1, 1)).toBe(3)" }] }] };
  const events2 = [
    { type: 'message_start', message: { id: 'msg_01B', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929', content: [], usage: { input_tokens: 40, cache_creation_input_tokens: 0, cache_read_input_tokens: 9300, output_tokens: 1 } } },
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'The expectation is wrong: ' } },
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: '1 + 1 is 2.' } },
    { type: 'content_block_stop', index: 0 },
    { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 15 } },
    { type: 'message_stop' },
  ];
  const tx2 = httpTx({
    ts: t0 + 10, host: 'api.anthropic.com', path: '/v1/messages?beta=true', headers: CC_HEADERS,
    req: { model: 'claude-sonnet-4-5', max_tokens: 32000, system: CC_SYSTEM, messages: [user1, assistant1, user2], metadata: { user_id: CC_USER }, stream: true },
    events: sse(opts.abortSecond ? events2.slice(0, 3) : events2),
    error: opts.abortSecond ? 'truncated_stream' : undefined,
  });
  return [tx1, side, tx2];
}

// ── Chat Completions with two parallel tool calls ──────────────────────────────────────────

export function chatSession(t0: number): HttpTransaction[] {
  const headers: [string, string][] = [['User-Agent', 'AsyncOpenAI/Python 1.99.0'], ['X-Title', 'Aider'], ['HTTP-Referer', 'https://aider.chat']];
  const base = [{ role: 'system', content: 'Act as an expert software developer.' }, { role: 'user', content: 'What is the weather in Paris and Rome?' }];
  const chunk = (delta: Record<string, unknown>, finish: string | null = null, extra: Record<string, unknown> = {}) => ({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: 'qwen3-32b', choices: [{ index: 0, delta, finish_reason: finish }], ...extra });
  const tx1 = httpTx({
    ts: t0, host: 'llm.internal', path: '/v1/chat/completions', headers,
    req: { model: 'qwen3-32b', messages: base, stream: true, tools: [{ type: 'function', function: { name: 'get_weather', parameters: {} } }] },
    events: [
      ...sse([
        chunk({ role: 'assistant', content: '' }),
        chunk({ content: 'Checking both.' }),
        chunk({ tool_calls: [{ index: 0, id: 'call_p', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
        chunk({ tool_calls: [{ index: 1, id: 'call_r', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
        chunk({ tool_calls: [{ index: 1, function: { arguments: '{"city":"Ro' } }] }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
        chunk({ tool_calls: [{ index: 1, function: { arguments: 'me"}' } }] }),
        chunk({}, 'tool_calls'),
        { id: 'chatcmpl-1', object: 'chat.completion.chunk', model: 'qwen3-32b', choices: [], usage: { prompt_tokens: 120, completion_tokens: 40, total_tokens: 160, prompt_tokens_details: { cached_tokens: 64 } } },
      ], false),
      { data: '[DONE]' },
    ],
  });
  const tx2 = httpTx({
    ts: t0 + 10, host: 'llm.internal', path: '/v1/chat/completions', headers,
    req: { model: 'qwen3-32b', stream: false, messages: [...base,
      { role: 'assistant', content: 'Checking both.', tool_calls: [
        { id: 'call_p', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
        { id: 'call_r', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }] },
      { role: 'tool', tool_call_id: 'call_p', content: '18°C, sunny' },
      { role: 'tool', tool_call_id: 'call_r', content: '24°C, cloudy' }] },
    resp: { id: 'chatcmpl-2', object: 'chat.completion', model: 'qwen3-32b', choices: [{ index: 0, message: { role: 'assistant', content: 'Paris 18°C sunny; Rome 24°C cloudy.' }, finish_reason: 'stop' }], usage: { prompt_tokens: 200, completion_tokens: 12, total_tokens: 212 } },
  });
  return [tx1, tx2];
}

// ── Gemini ──────────────────────────────────────────────────────────────────────────────────

export function geminiSession(t0: number): HttpTransaction[] {
  const headers: [string, string][] = [['User-Agent', 'GeminiCLI/0.9.0 (linux; x64)'], ['x-goog-api-key', '[REDACTED]']];
  const sys = { parts: [{ text: 'You are Gemini CLI.' }] };
  const u1 = { role: 'user', parts: [{ text: 'How big is README.md?' }] };
  const tx1 = httpTx({
    ts: t0, host: 'generativelanguage.googleapis.com', path: '/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse', headers,
    req: { contents: [u1], systemInstruction: sys },
    events: sse([
      { candidates: [{ content: { role: 'model', parts: [{ text: 'Checking the size', thought: true }] } }], modelVersion: 'gemini-2.5-pro', responseId: 'g1' },
      { candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'stat_file', args: { path: 'README.md' } } }] }, finishReason: 'STOP' }],
        usageMetadata: { promptTokenCount: 50, candidatesTokenCount: 10, thoughtsTokenCount: 20, totalTokenCount: 80, cachedContentTokenCount: 32 }, modelVersion: 'gemini-2.5-pro', responseId: 'g1' },
    ], false),
  });
  const tx2 = httpTx({
    ts: t0 + 10, host: 'generativelanguage.googleapis.com', path: '/v1beta/models/gemini-2.5-pro:generateContent', headers,
    req: { systemInstruction: sys, contents: [u1,
      { role: 'model', parts: [{ functionCall: { name: 'stat_file', args: { path: 'README.md' } } }] },
      { role: 'user', parts: [{ functionResponse: { name: 'stat_file', response: { size: 1234 } } }] }] },
    resp: { candidates: [{ content: { role: 'model', parts: [{ text: 'README.md is ' }, { text: '1234 bytes.' }] }, finishReason: 'STOP' }], usageMetadata: { promptTokenCount: 90, candidatesTokenCount: 8, totalTokenCount: 98 }, modelVersion: 'gemini-2.5-pro', responseId: 'g2' },
  });
  return [tx1, tx2];
}

/**
 * Gemini CLI signed in with Google: the same exchange through Code Assist, where the request is
 * wrapped in {model, project, user_prompt_id, request} and every response chunk in {response,
 * traceId}. The tool round trip is the next prompt of the session, so user_prompt_id moves on
 * ("<session>########<n>"); the second call is not streamed.
 */
export function geminiCodeAssistSession(session: string, t0: number): HttpTransaction[] {
  const host = 'cloudcode-pa.googleapis.com';
  const headers: [string, string][] = [['User-Agent', 'GeminiCLI/0.9.0 (linux; x64) google-api-nodejs-client/9.15.1']];
  const sys = { role: 'user', parts: [{ text: 'You are Gemini CLI.' }] };
  const u1 = { role: 'user', parts: [{ text: 'How big is README.md?' }] };
  const wrap = (n: number, contents: unknown[]) => ({ model: 'gemini-2.5-pro', project: 'proj-1', user_prompt_id: `${session}########${n}`, request: { contents, systemInstruction: sys, generationConfig: { temperature: 0 } } });
  const tx1 = httpTx({
    ts: t0, host, path: '/v1internal:streamGenerateContent?alt=sse', headers, req: wrap(1, [u1]),
    events: sse([
      { response: { candidates: [{ content: { role: 'model', parts: [{ text: 'Checking the size', thought: true }] } }], modelVersion: 'gemini-2.5-pro' }, traceId: `${session}-t1` },
      { response: { candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'stat_file', args: { path: 'README.md' } } }] }, finishReason: 'STOP' }],
        usageMetadata: { promptTokenCount: 50, candidatesTokenCount: 10, thoughtsTokenCount: 20, totalTokenCount: 80 }, modelVersion: 'gemini-2.5-pro' }, traceId: `${session}-t1` },
    ], false),
  });
  const tx2 = httpTx({
    ts: t0 + 10, host, path: '/v1internal:generateContent', headers,
    req: wrap(2, [u1,
      { role: 'model', parts: [{ functionCall: { name: 'stat_file', args: { path: 'README.md' } } }] },
      { role: 'user', parts: [{ functionResponse: { name: 'stat_file', response: { size: 1234 } } }] }]),
    resp: { response: { candidates: [{ content: { role: 'model', parts: [{ text: 'README.md is 1234 bytes.' }] }, finishReason: 'STOP' }], usageMetadata: { promptTokenCount: 90, candidatesTokenCount: 8, totalTokenCount: 98 }, modelVersion: 'gemini-2.5-pro' }, traceId: `${session}-t2` },
  });
  return [tx1, tx2];
}

export type { TransactionRecord };
