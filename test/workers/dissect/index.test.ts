// Endpoint table, user rules, the chat-completions fallback, client detection, and the
// per-provider folds that need no store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../../src/config.js';
import { classifyHttp, detectClient, dissectHttp, DissectRulesError, isOpenaiWsPath, loadDissectRules } from '../../../src/workers/dissect/index.js';
import { anthropicSseReply, dissectAnthropic, sessionKey } from '../../../src/workers/dissect/anthropic.js';
import { chatSseReply, dissectChat } from '../../../src/workers/dissect/openai-chat.js';
import { geminiReply } from '../../../src/workers/dissect/gemini.js';
import { isScaffolding, parseJson } from '../../../src/workers/dissect/blocks.js';
import { foldEvent, foldReply, newFold, responseObjectReply, sseReply } from '../../../src/workers/dissect/openai-responses.js';
import { geminiCodeAssistSession, geminiSession } from './sessions.js';

const tx = (method: string, host: string, path: string) => ({ method, host, path });

test('endpoint table: provider by method + path', () => {
  assert.equal(classifyHttp(tx('POST', 'api.openai.com', '/v1/responses'), {}), 'openai-responses');
  assert.equal(classifyHttp(tx('POST', 'chatgpt.com', '/backend-api/codex/responses'), {}), 'openai-responses');
  assert.equal(classifyHttp(tx('POST', 'api.openai.com', '/v1/chat/completions'), {}), 'openai-chat');
  assert.equal(classifyHttp(tx('POST', 'openrouter.ai', '/api/v1/chat/completions'), {}), 'openai-chat');
  assert.equal(classifyHttp(tx('POST', 'api.anthropic.com', '/v1/messages?beta=true'), {}), 'anthropic');
  assert.equal(classifyHttp(tx('POST', 'api.anthropic.com', '/v1/messages/count_tokens'), {}), undefined);
  assert.equal(classifyHttp(tx('POST', 'generativelanguage.googleapis.com', '/v1beta/models/gemini-2.5-pro:generateContent'), {}), 'gemini');
  assert.equal(classifyHttp(tx('POST', 'generativelanguage.googleapis.com', '/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse'), {}), 'gemini');
  assert.equal(classifyHttp(tx('POST', 'cloudcode-pa.googleapis.com', '/v1internal:streamGenerateContent?alt=sse'), {}), 'gemini');
  assert.equal(classifyHttp(tx('POST', 'cloudcode-pa.googleapis.com', '/v1internal:generateContent'), {}), 'gemini');
  assert.equal(classifyHttp(tx('GET', 'api.openai.com', '/v1/responses'), {}), undefined, 'GET is not a model call');
  assert.equal(classifyHttp(tx('POST', 'example.com', '/upload'), { file: 1 }), undefined);
});

test('fallback: any POST with messages[] + model is chat completions', () => {
  assert.equal(classifyHttp(tx('POST', 'localhost', '/api/chat'), { model: 'llama3', messages: [] }), 'openai-chat');
  assert.equal(classifyHttp(tx('POST', 'localhost', '/api/chat'), { messages: [] }), undefined);
  assert.equal(classifyHttp(tx('PUT', 'localhost', '/api/chat'), { model: 'x', messages: [] }), undefined);
});

test('user rules from a config file win over the table', () => {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-rules-'));
  try {
    const f = join(dir, 'rules.json');
    writeFileSync(f, JSON.stringify({ rules: [
      { host: '*.openai.azure.com', path: '^/openai/deployments/[^/]+/chat', provider: 'openai-chat' },
      { host: 'llm.corp', path: '/v2/generate', provider: 'anthropic' },
    ] }));
    const rules = loadDissectRules(f);
    assert.equal(classifyHttp(tx('POST', 'eu.openai.azure.com', '/openai/deployments/gpt4/chat/x?api-version=1'), {}, rules), 'openai-chat');
    assert.equal(classifyHttp(tx('POST', 'llm.corp', '/v2/generate/stream'), {}, rules), 'anthropic');
    assert.equal(classifyHttp(tx('POST', 'other.corp', '/v2/generate'), {}, rules), undefined);
    writeFileSync(f, JSON.stringify({ rules: [{ host: 'x', provider: 'nope' }] }));
    // a ConfigError naming the option and the file: the CLI prints it as one line and exits 2
    assert.throws(() => loadDissectRules(f), (e: Error) => e instanceof DissectRulesError && e instanceof ConfigError && e.message.startsWith(`--dissect-rules ${f}: rule 0`));
    writeFileSync(f, '{"rules": [{"host": "x", "path": "^(", "provider": "gemini"}]}');
    assert.throws(() => loadDissectRules(f), DissectRulesError);
    assert.throws(() => loadDissectRules(join(dir, 'missing.json')), DissectRulesError);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('WebSocket: Responses API by path', () => {
  assert.equal(isOpenaiWsPath('/v1/responses'), true);
  assert.equal(isOpenaiWsPath('/backend-api/codex/responses?x=1'), true);
  assert.equal(isOpenaiWsPath('/socket'), false);
  assert.equal(isOpenaiWsPath('/socket', [{ host: 'ws.test', path: '/socket', provider: 'openai-ws' }], 'ws.test'), true);
});

test('client detection from headers', () => {
  assert.equal(detectClient([['originator', 'codex_cli_rs'], ['User-Agent', 'x']]), 'codex');
  assert.equal(detectClient([['User-Agent', 'codex_exec/0.46.0']]), 'codex');
  assert.equal(detectClient([['x-codex-turn-metadata', '{}']]), 'codex');
  assert.equal(detectClient([['user-agent', 'claude-cli/2.0.14 (external, cli)']]), 'claude-code');
  assert.equal(detectClient([['User-Agent', 'GeminiCLI/0.9.0 (linux; x64)']]), 'gemini-cli');
  assert.equal(detectClient([['User-Agent', 'QwenCode/0.15.10 (linux; x64)']]), 'qwen-code');
  assert.equal(detectClient([['User-Agent', 'opencode/0.15.0 ai-sdk/provider-utils']]), 'opencode');
  assert.equal(detectClient([['User-Agent', 'OpenAI/Python 1.99'], ['X-Title', 'Aider']]), 'aider');
  assert.equal(detectClient([['User-Agent', 'curl/7.88.1']]), 'generic');
  assert.equal(detectClient(undefined), 'generic');
});

test('Claude Code session id from metadata.user_id', () => {
  assert.equal(sessionKey('user_abc_account_0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0_session_7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b'), '7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b');
  assert.equal(sessionKey('{"device_id":"d","session_id":"s-1"}'), 's-1');
  assert.equal(sessionKey('plain-user'), 'plain-user');
});

test('Gemini Code Assist: the wrapped request and {response} chunks dissect like the public API; the session is the key', () => {
  const [s1, j1] = geminiCodeAssistSession('5e3c1a2b-0d4f-4a6b-9c8d-7e6f5a4b3c2d', 1000).map((t) => dissectHttp(t).exchange!);
  const sys = { role: 'system', blocks: [{ type: 'text', text: 'You are Gemini CLI.' }] };
  const u1 = { role: 'user', blocks: [{ type: 'text', text: 'How big is README.md?' }] };
  const call = { type: 'tool_call', callId: 'stat_file', name: 'stat_file', arguments: { path: 'README.md' } };
  assert.deepEqual(s1, {
    provider: 'gemini', key: 'gemini:5e3c1a2b-0d4f-4a6b-9c8d-7e6f5a4b3c2d', model: 'gemini-2.5-pro', history: [sys, u1],
    reply: { blocks: [{ type: 'reasoning', text: 'Checking the size' }, call], responseId: '5e3c1a2b-0d4f-4a6b-9c8d-7e6f5a4b3c2d-t1', model: 'gemini-2.5-pro',
      usage: { inputTokens: 50, outputTokens: 30, reasoningTokens: 20, totalTokens: 80 } },
  });
  // the next prompt (user_prompt_id …########2), not streamed: same conversation
  assert.deepEqual(j1, {
    provider: 'gemini', key: s1.key, model: 'gemini-2.5-pro',
    history: [sys, u1, { role: 'assistant', blocks: [call] }, { role: 'tool', blocks: [{ type: 'tool_result', callId: 'stat_file', name: 'stat_file', output: { size: 1234 } }] }],
    reply: { blocks: [{ type: 'text', text: 'README.md is 1234 bytes.' }], responseId: '5e3c1a2b-0d4f-4a6b-9c8d-7e6f5a4b3c2d-t2', model: 'gemini-2.5-pro', usage: { inputTokens: 90, outputTokens: 8, totalTokens: 98 } },
  });
  // request.session_id, when the client sends it, is the session
  const t = geminiCodeAssistSession('a', 1000)[0];
  const body = JSON.parse(t.reqBody!);
  body.request.session_id = 'sess-9';
  assert.equal(dissectHttp({ ...t, reqBody: JSON.stringify(body) }).exchange!.key, 'gemini:sess-9');
  // the public API has no session: still keyed by model + opening messages
  assert.match(dissectHttp(geminiSession(1000)[0]).exchange!.key, /^gemini:prefix:[0-9a-f]{16}$/);
});

test('Claude Code reminders riding on a tool result (2.1.332) are scaffolding of the tool turn, not the tool\'s output', () => {
  const reminder = '<system-reminder>\n<total_tokens>199000 tokens left</total_tokens>\n</system-reminder>';
  const req = (content: unknown, extra: object[] = []) => ({ model: 'claude-sonnet-4-5', messages: [
    { role: 'user', content: 'Run echo hi' },
    { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'Bash', input: { command: 'echo hi' } }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', content }, ...extra] },
  ] });
  const post = { kind: 'HTTP', method: 'POST', host: 'api.anthropic.com', path: '/v1/messages', status: 200, respBody: '{}' } as never;
  const toolTurn = (content: unknown, extra: object[] = []) => dissectAnthropic(post, req(content, extra)).history[2];
  const note = { type: 'text', text: reminder, scaffolding: true };
  assert.deepEqual(toolTurn(`hi\n\n${reminder}`), { role: 'tool', blocks: [{ type: 'tool_result', callId: 't1', output: 'hi' }, note] });
  // as text blocks, two reminders in order, and a reminder sent as its own block beside the result
  assert.deepEqual(toolTurn([{ type: 'text', text: 'line 1\nline 2' }, { type: 'text', text: reminder }, { type: 'text', text: `${reminder}\n` }]),
    { role: 'tool', blocks: [{ type: 'tool_result', callId: 't1', output: 'line 1\nline 2' }, note, note] });
  assert.deepEqual(toolTurn('hi', [{ type: 'text', text: reminder }]), { role: 'tool', blocks: [{ type: 'tool_result', callId: 't1', output: 'hi' }, note] });
  // what is not a trailing reminder stays the output: one in the middle, one glued to the text, an unclosed one
  for (const out of [`a\n${reminder}\nb`, `hi${reminder}`, 'hi\n<system-reminder>\nnever closed']) {
    assert.deepEqual(toolTurn(out), { role: 'tool', blocks: [{ type: 'tool_result', callId: 't1', output: out }] }, out);
  }
  // a prompt typed beside the results keeps the turn the user's
  assert.equal(toolTurn('hi', [{ type: 'text', text: 'now commit it' }]).role, 'user');
});

test('scaffolding markers', () => {
  for (const t of ['<environment_context>x', '<session_context>\nThis is the Gemini CLI.', '  <system-reminder>y', '# AGENTS.md instructions for /r', '<user_instructions>', '<permissions instructions>']) assert.equal(isScaffolding(t), true, t);
  for (const t of ['fix the bug', 'see <environment_context> above']) assert.equal(isScaffolding(t), false, t);
});

test('Responses fold: completed output wins over the deltas; deltas stand when the stream is cut', () => {
  const f = newFold();
  foldEvent(f, { type: 'response.created', response: { id: 'r1', model: 'm' } });
  foldEvent(f, { type: 'response.output_item.added', output_index: 0, item: { type: 'message', role: 'assistant', content: [] } });
  foldEvent(f, { type: 'response.output_text.delta', output_index: 0, content_index: 0, delta: 'Hel' });
  assert.deepEqual(foldReply(f, false), { blocks: [{ type: 'text', text: 'Hel' }], responseId: 'r1', model: 'm', streaming: true });
  assert.deepEqual(foldReply(f, true), { blocks: [{ type: 'text', text: 'Hel' }], responseId: 'r1', model: 'm', incomplete: 'aborted' });
  foldEvent(f, { type: 'response.completed', response: { id: 'r1', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello' }] }], usage: { input_tokens: 3, output_tokens: 1, total_tokens: 4 } } });
  assert.deepEqual(foldReply(f, true), { blocks: [{ type: 'text', text: 'Hello' }], responseId: 'r1', model: 'm', usage: { inputTokens: 3, outputTokens: 1, totalTokens: 4 } });
});

test('Responses: incomplete / error / JSON body / SSE without a terminal event', () => {
  assert.deepEqual(responseObjectReply({ id: 'r', status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'par' }] }] }),
    { blocks: [{ type: 'text', text: 'par' }], responseId: 'r', incomplete: 'response.incomplete', error: 'max_output_tokens' });
  const f = newFold();
  foldEvent(f, { type: 'error', error: { message: 'Rate limit reached' } });
  assert.deepEqual(foldReply(f, false), { blocks: [], incomplete: 'error', error: 'Rate limit reached' });
  assert.deepEqual(sseReply([{ event: 'response.created', data: '{"response":{"id":"r9"}}' }, { data: 'not json' }], true), { blocks: [], responseId: 'r9', incomplete: 'aborted' });
});

test('a reply cut at the token limit or withheld is marked incomplete (Anthropic stop_reason, Chat finish_reason), streamed or not', () => {
  const sse = (evs: object[]) => evs.map((e) => ({ data: JSON.stringify(e) }));
  const claude = (stop: string) => anthropicSseReply(sse([
    { type: 'message_start', message: { id: 'msg_1', model: 'claude', usage: { input_tokens: 5 } } },
    { type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 't1', name: 'Write', input: {} } },
    { type: 'content_block_delta', index: 0, delta: { type: 'input_json_delta', partial_json: '{"file_path":"/a","content":"par' } },
    { type: 'message_delta', delta: { stop_reason: stop }, usage: { output_tokens: 4096 } },
    { type: 'message_stop' },
  ]));
  assert.equal(claude('max_tokens').incomplete, 'max_tokens');
  assert.equal(claude('refusal').incomplete, 'refused');
  assert.equal(claude('tool_use').incomplete, undefined);
  const chat = (finish: string) => chatSseReply([
    ...sse([{ id: 'c1', choices: [{ index: 0, delta: { content: 'The answer is' }, finish_reason: null } ] }, { id: 'c1', choices: [{ index: 0, delta: {}, finish_reason: finish }] }]),
    { data: '[DONE]' },
  ]);
  assert.equal(chat('length').incomplete, 'max_tokens');
  assert.equal(chat('content_filter').incomplete, 'refused');
  assert.equal(chat('stop').incomplete, undefined);
  const body = (finish: string) => ({ id: 'c2', choices: [{ index: 0, message: { role: 'assistant', content: 'x' }, finish_reason: finish }] });
  const tx = (resp: object, path: string) => ({ kind: 'HTTP', method: 'POST', host: 'h', path, status: 200, respBody: JSON.stringify(resp) }) as never;
  assert.equal(dissectChat(tx(body('length'), '/v1/chat/completions'), { model: 'm', messages: [] }).reply?.incomplete, 'max_tokens');
  assert.equal(dissectAnthropic(tx({ id: 'm', type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: 'max_tokens' }, '/v1/messages'), { model: 'm', messages: [] }).reply?.incomplete, 'max_tokens');
  const gemini = (finishReason: string) => geminiReply([{ candidates: [{ content: { role: 'model', parts: [{ text: 'x' }] }, finishReason }] }], false).incomplete;
  assert.deepEqual([gemini('MAX_TOKENS'), gemini('SAFETY'), gemini('STOP')], ['max_tokens', 'refused', undefined]);
});

test('a JSON body with a leading BOM (kept in the stored body) still dissects', () => {
  assert.deepEqual(parseJson('\ufeff{"model":"m"}'), { model: 'm' });
  const tx = {
    method: 'POST', host: 'api.openai.com', path: '/v1/chat/completions', reqHeaders: [], respHeaders: [], status: 200,
    reqBody: '\ufeff{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}',
    respBody: '\ufeff{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}',
  };
  const ex = dissectHttp(tx as never).exchange!;
  assert.equal(ex.provider, 'openai-chat');
  assert.equal(ex.model, 'gpt-4o');
  assert.deepEqual(ex.reply?.blocks, [{ type: 'text', text: 'hello' }]);
});
