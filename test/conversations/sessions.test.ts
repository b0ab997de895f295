// Issue 5 end to end: realistic LLM-agent sessions driven through the REAL greytap (HTTP CONNECT,
// TLS interception, worker pool, LMDB, API) by real clients against fake origins that speak the
// providers' wire protocols — codex over WebSocket with context-takeover permessage-deflate, Claude
// Code over SSE, a chat-completions agent with parallel tool calls — and the conversations greytap
// assembles, read back from GET /api/conversations, asserted exactly. Then `greytap conversations
// --rebuild` on the same data dir must give the same conversations.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { execFile, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, type Greytap } from '../helpers/harness.js';
import { capturedMessages, payloadOf } from '../ws/ws-helpers.js';
import { conversationId } from '../../src/workers/assemble.js';
import type { Block, Conversation, Turn } from '../../src/records.js';
import {
  CODEX_INSTRUCTIONS, CodexClient, Lockstep, developerMsg, replyOutput, startCodexOrigin, userMsg,
  type CodexOrigin, type CodexReply, type CodexUsage,
} from './openai-ws-origin.js';
import { anthropicSse, postJson, startLlmHttpOrigin, type LlmHttpOrigin } from './llm-http-origin.js';

const pki = makeTestPki();
let g: Greytap;
let codex: CodexOrigin;
let llm: LlmHttpOrigin;
/** every conversation a test asserted, as the API returned it: the rebuild must reproduce them */
const asserted = new Map<string, Conversation>();
/** `greytap conversations --rebuild --format json` output (set by the rebuild test) */
let cliOutput: Conversation[] | undefined;

before(async () => {
  codex = await startCodexOrigin(pki);
  llm = await startLlmHttpOrigin(pki);
  g = await startGreytap([
    '--upstream-ca', pki.caPath,
    '--map', `api.openai.test:443=127.0.0.1:${codex.port}`,
    '--map', `api.anthropic.test:443=127.0.0.1:${llm.port}`,
    '--map', `llm.local.test:443=127.0.0.1:${llm.port}`,
    '--workers', '2',
  ], { keepData: true });
});

/**
 * A failed test may leave codex sockets open, and greytap's stop() waits for every proxied
 * connection to end (reported): end them first so the proxy can stop.
 */
function endLeftoverClients(): void {
  for (const c of CodexClient.open_) c.ws.terminate();
}

after(async () => {
  endLeftoverClients();
  await codex?.close();
  await llm?.close();
  await g?.stop();
  if (g) rmSync(g.dataDir, { recursive: true, force: true });
});

// ── helpers ──────────────────────────────────────────────────────────────────────────────────

type T = Omit<Turn, 'source'>;
const noSource = (turns: Turn[]): T[] => turns.map(({ source: _s, ...t }) => t);
const MODEL = 'gpt-5-codex';
const usage = (u: CodexUsage) => ({ inputTokens: u.input, cachedTokens: u.cached, outputTokens: u.output, reasoningTokens: u.reasoning, totalTokens: u.input + u.output });
const text = (t: string): Block => ({ type: 'text', text: t });
const scaffold = (t: string): Block => ({ type: 'text', text: t, scaffolding: true });

/**
 * Waits until the conversation stored under `key` has exactly the expected turns (sources aside),
 * then returns it; on timeout returns what is there so the caller's deepEqual shows the difference.
 */
async function settled(key: string, expected: T[], timeoutMs = 15_000): Promise<Conversation> {
  const id = conversationId(key);
  let last: Conversation | undefined;
  try {
    await waitFor(async () => {
      await g.drain();
      last = await apiGet<Conversation>(g, `/api/conversations/${id}`);
      return isDeepStrictEqual(noSource(last.turns), expected);
    }, `conversation ${key}`, timeoutMs);
  } catch (e) {
    if (!last) throw e;
  }
  assert.deepEqual(noSource(last!.turns), expected, `turns of ${key}`);
  asserted.set(last!.id, last!);
  return last!;
}

/** Every turn names its source records, and they are stored transactions. */
async function assertSources(c: Conversation): Promise<void> {
  for (const [i, t] of c.turns.entries()) {
    assert.ok(t.source.length > 0 && t.source.every((s) => typeof s === 'string' && s.length > 0), `turn ${i} has source ids`);
    for (const s of t.source) await apiGet(g, `/api/transactions/${s}`);
  }
}

/** The conversation listing (public conversations only). */
async function listConversations(): Promise<Conversation[]> {
  return (await apiGet<{ items: Conversation[] }>(g, '/api/conversations?limit=1000')).items;
}

/** A codex connection's captured messages: client requests, and server events grouped per response. */
async function codexWire(tag: string, expect: (ms: any[]) => boolean) {
  const { upgrade, messages } = await capturedMessages(g, tag, expect);
  const requests = messages.filter((m) => m.direction === 'client' && m.opcode === 'text');
  const spans: { first: string; last: string; events: any[] }[] = [];
  for (const m of messages.filter((x) => x.direction === 'server' && x.opcode === 'text')) {
    const ev = JSON.parse(String(await payloadOf(g, m)));
    if (ev.type === 'response.created') spans.push({ first: m.id, last: m.id, events: [] });
    const s = spans[spans.length - 1];
    s.last = m.id;
    s.events.push(ev);
  }
  return { upgrade, messages, requests, spans };
}

/** A ~100 KiB prompt: a pasted test log, varied enough to be realistic, repetitive enough to compress. */
function bigPrompt(): string {
  let s = 'The CI run failed. Fix the failing tests below; do not touch the snapshots. Full log:\n\n';
  for (let i = 0; s.length < 100 * 1024; i++) {
    const mod = `src/parser/module${i % 97}.test.ts`;
    s += `FAIL ${mod} > tokenizer > handles case #${i} (${(i * 37) % 1000} ms)\n` +
      `  AssertionError: expected ${(i * 7) % 1000} to equal ${(i * 13) % 1000}\n` +
      `    at Object.<anonymous> (${mod}:${(i % 400) + 1}:${(i % 80) + 1})\n`;
  }
  return s;
}

const words = (s: string) => s.match(/\S+\s*/g) ?? [];

const PERMISSIONS = '<permissions instructions>\nFilesystem sandboxing: workspace-write. Approval policy: on-request.\n</permissions instructions>';
const ENV_CONTEXT = '<environment_context>\n  <cwd>/home/dev/repo</cwd>\n  <approval_policy>on-request</approval_policy>\n  <sandbox_mode>workspace-write</sandbox_mode>\n  <network_access>restricted</network_access>\n  <shell>bash</shell>\n</environment_context>';

// ── codex over WebSocket ─────────────────────────────────────────────────────────────────────

test('codex: multi-turn session over context-takeover permessage-deflate — pre-warm, 100 KiB prompt, reasoning + shell call, tool output, live streaming, usage', async () => {
  const pck = '0199a5f0-6c1e-7d42-9b1a-3f2c4d5e6f70';
  const prompt = bigPrompt();
  assert.ok(prompt.length >= 100 * 1024 && prompt.length < 101 * 1024);
  const shellArgs = { command: ['bash', '-lc', 'npx vitest run src/parser --reporter=dot'], workdir: '/home/dev/repo', timeout_ms: 120000 };
  const shellArgsRaw = JSON.stringify(shellArgs);
  const shellOut = JSON.stringify({ output: 'Test Files  3 failed | 94 passed (97)\n     Tests  12 failed | 1201 passed (1213)\n', metadata: { exit_code: 1, duration_seconds: 14.2 } });
  const answer2 = 'Twelve tests fail in three files, all in the tokenizer: the expected values were computed with the old rounding rule. ' +
    'I will update the rounding in src/parser/tokenizer.ts so that ties round to even, which is what the spec says, and rerun the three files. ' +
    'No snapshot needs to change.';
  const answer3 = 'The whole suite passes now: 1213 tests in 97 files, 0 failures. The only change is the tie-breaking rule in roundHalf().';
  let release!: () => void;
  const hold = new Promise<void>((r) => { release = r; });
  const u1: CodexUsage = { input: 27_412, cached: 0, output: 312, reasoning: 192 };
  const u2: CodexUsage = { input: 27_690, cached: 27_392, output: 88, reasoning: 0 };
  const u3: CodexUsage = { input: 27_801, cached: 27_648, output: 41, reasoning: 0 };
  const replies: CodexReply[] = [
    { id: 'resp_c1', reasoning: ['**Running', ' the failing', ' tests**\n\nI', ' want to see the', ' current failures first.'],
      call: { callId: 'call_Xq1shell', name: 'shell', args: [shellArgsRaw.slice(0, 9), shellArgsRaw.slice(9, 40), shellArgsRaw.slice(40)] }, usage: u1 },
    { id: 'resp_c2', text: words(answer2), usage: u2 },
    { id: 'resp_c3', text: words(answer3), usage: u3, hold },
  ];
  codex.scripts.set(pck, (_req, n) => replies[n]);

  const c = await CodexClient.open(g, 'codex-main', pck);
  assert.match(c.ws.extensions, /^permessage-deflate/);
  assert.doesNotMatch(c.ws.extensions, /no_context_takeover/, 'context takeover in both directions');
  c.send([], { generate: false });
  const warm = await c.response(0);
  assert.equal(warm.terminal.type, 'response.completed');
  c.send([developerMsg(PERMISSIONS), userMsg(ENV_CONTEXT), userMsg(prompt)]);
  const r1 = await c.response(1);
  assert.equal(r1.args, shellArgsRaw, 'the client folded the argument deltas');
  c.send([{ type: 'function_call_output', call_id: 'call_Xq1shell', output: shellOut }]);
  const r2 = await c.response(2);
  assert.equal(r2.text, answer2);
  assert.equal(r2.text, r2.terminal.response.output[0].content[0].text, 'folded deltas equal the completed output');
  c.send([userMsg('Now run the whole suite and summarise.')]);

  const key = `openai-ws:${pck}`;
  const history: T[] = [
    { role: 'system', blocks: [text(CODEX_INSTRUCTIONS)] },
    { role: 'developer', blocks: [scaffold(PERMISSIONS)] },
    { role: 'user', blocks: [scaffold(ENV_CONTEXT), text(prompt)] },
    { role: 'assistant', blocks: [
      { type: 'reasoning', text: '**Running the failing tests**\n\nI want to see the current failures first.' },
      { type: 'tool_call', callId: 'call_Xq1shell', name: 'shell', arguments: shellArgs, argumentsRaw: shellArgsRaw }],
      usage: usage(u1), responseId: 'resp_c1', model: MODEL },
    { role: 'tool', blocks: [{ type: 'tool_result', callId: 'call_Xq1shell', output: shellOut, name: 'shell' }] },
    { role: 'assistant', blocks: [text(answer2)], usage: usage(u2), responseId: 'resp_c2', model: MODEL },
    { role: 'user', blocks: [text('Now run the whole suite and summarise.')] },
  ];

  // Live: the third response has streamed every delta and is held before its `.done` events —
  // the conversation already shows the text folded from the deltas, not yet complete.
  await c.response(3, (r) => r.text === answer3);
  try {
    const live = await settled(key, [...history, { role: 'assistant', blocks: [text(answer3)], responseId: 'resp_c3', model: MODEL }]);
    assert.equal(live.incomplete, undefined);
  } finally { release(); }
  const r3 = await c.response(3);
  assert.equal(r3.text, r3.terminal.response.output[0].content[0].text);
  await c.close(1000, '');

  const conv = await settled(key, [...history, { role: 'assistant', blocks: [text(answer3)], usage: usage(u3), responseId: 'resp_c3', model: MODEL }]);
  assert.equal(conv.id, conversationId(key));
  assert.equal(conv.key, key);
  assert.equal(conv.client, 'codex');
  assert.equal(conv.provider, 'openai-ws');
  assert.equal(conv.model, MODEL);
  assert.equal(conv.incomplete, undefined);
  assert.ok(conv.startedTs > 0 && conv.startedTs <= conv.updatedTs);

  // Sources: a request turn is its client message; a response turn its first and last event.
  const wire = await codexWire('codex-main', (ms) => ms.some((m) => m.opcode === 'close'));
  const [warmReq, req1, req2, req3] = wire.requests;
  assert.equal(wire.requests.length, 4);
  assert.ok(wire.requests.every((m) => m.compressed && m.error === undefined), 'every request was compressed and decoded');
  assert.ok(req1.size > 100 * 1024 && req1.wireBytes < req1.size / 4, `100 KiB prompt deflated on the wire (${req1.wireBytes} of ${req1.size} bytes)`);
  const [, s1, s2, s3] = wire.spans.map((s) => [s.first, s.last]);
  assert.deepEqual(conv.turns.map((t) => t.source), [[warmReq.id], [req1.id], [req1.id], s1, [req2.id], s2, [req3.id], s3]);
  assert.equal(wire.spans.length, 4, 'pre-warm + three responses captured');
  assert.deepEqual(wire.spans[1].events.at(-1).response.output, replyOutput(replies[0]), 'the captured completed event is what the origin sent');
  await assertSources(conv);
  assert.ok((await listConversations()).some((x) => x.id === conv.id), 'listed');
});

test('codex: two sockets at once with the same prompt_cache_key and response ids, events interleaved on the wire — one session, each socket\'s turns together, never mixed', async () => {
  const pck = 'shared-session-key';
  const step = new Lockstep(2);
  const party = (tag: string) => (tag === 'codex-A' ? 0 : 1);
  const replyFor = (n: number, who: 'A' | 'B'): CodexReply => n === 0
    ? { id: 'resp_s1', reasoning: ['Listing ', `${who}'s `, 'files'], call: { callId: 'call_same', name: 'shell', args: ['{"command":', `["ls","/srv/${who}"]`, '}'] }, usage: { input: 900, cached: 0, output: 40, reasoning: 16 } }
    : { id: 'resp_s2', text: [`${who} `, 'has ', 'two ', 'files.'], usage: { input: 980, cached: 896, output: 6, reasoning: 0 } };
  codex.scripts.set(pck, (_req, n, tag) => ({ ...replyFor(Math.max(n, 0), tag === 'codex-A' ? 'A' : 'B'), gate: step.gate(party(tag)) }));

  const log: any[] = [];
  const run = async (tag: string, who: 'A' | 'B') => {
    const c = await CodexClient.open(g, tag, pck, log);
    c.send([], { generate: false });
    await c.response(0);
    c.send([userMsg(`What is in /srv/${who}?`)]);
    await c.response(1);
    c.send([{ type: 'function_call_output', call_id: 'call_same', output: `${who}1.txt\n${who}2.txt` }]);
    await c.response(2);
    await c.close();
  };
  await Promise.all([run('codex-A', 'A'), run('codex-B', 'B')]);

  // the two streams really were interleaved: each response of B started before A's ended, and vice versa
  const at = (tag: string, type: string, id: string) => log.findIndex((l) => l.tag === tag && l.ev.type === type && l.ev.response?.id === id);
  for (const id of ['resp_s1', 'resp_s2']) {
    assert.ok(at('codex-B', 'response.created', id) < at('codex-A', 'response.completed', id), `${id}: interleaved (B started before A completed)`);
    assert.ok(at('codex-A', 'response.created', id) < at('codex-B', 'response.completed', id), `${id}: interleaved (A started before B completed)`);
  }

  // prompt_cache_key is codex's session id: both sockets are one session, each socket's line folded
  // in the order the sockets started (their first request; the connection id breaks a tie)
  const line = (who: 'A' | 'B'): T[] => [
    { role: 'user', blocks: [text(`What is in /srv/${who}?`)] },
    { role: 'assistant', blocks: [
      { type: 'reasoning', text: `Listing ${who}'s files` },
      { type: 'tool_call', callId: 'call_same', name: 'shell', arguments: { command: ['ls', `/srv/${who}`] }, argumentsRaw: `{"command":["ls","/srv/${who}"]}` }],
      usage: { inputTokens: 900, cachedTokens: 0, outputTokens: 40, reasoningTokens: 16, totalTokens: 940 }, responseId: 'resp_s1', model: MODEL },
    { role: 'tool', blocks: [{ type: 'tool_result', callId: 'call_same', output: `${who}1.txt\n${who}2.txt`, name: 'shell' }] },
    { role: 'assistant', blocks: [text(`${who} has two files.`)], usage: { inputTokens: 980, cachedTokens: 896, outputTokens: 6, reasoningTokens: 0, totalTokens: 986 }, responseId: 'resp_s2', model: MODEL },
  ];
  const wires = await Promise.all((['A', 'B'] as const).map(async (who) => ({ who, wire: await codexWire(`codex-${who}`, (ms) => ms.some((m) => m.opcode === 'close')) })));
  wires.sort((x, y) => x.wire.requests[0].ts - y.wire.requests[0].ts || (x.wire.upgrade.conn < y.wire.upgrade.conn ? -1 : 1));
  const conv = await settled(`openai-ws:${pck}`, [{ role: 'system', blocks: [text(CODEX_INSTRUCTIONS)] }, ...line(wires[0].who), ...line(wires[1].who)]);
  assert.equal(conv.client, 'codex');
  assert.equal(conv.provider, 'openai-ws');
  assert.equal(conv.incomplete, undefined);
  const own = (w: (typeof wires)[number]) => new Set(w.wire.messages.map((m) => m.id));
  assert.ok(conv.turns.slice(0, 5).every((t) => t.source.every((s) => own(wires[0]).has(s))), 'the first socket\'s turns are from its own records');
  assert.ok(conv.turns.slice(5).every((t) => t.source.every((s) => own(wires[1]).has(s))), 'the second socket\'s turns are from its own records');
  const listed = await listConversations();
  assert.equal(listed.filter((x) => x.key?.endsWith(':' + pck)).length, 1, 'one conversation for the shared key');
});

test('codex: the client gives up mid-stream (close 1001 before response.completed) → last turn incomplete "aborted", earlier turns intact', async () => {
  const pck = 'codex-abort-session';
  const first = 'Build is green: 97 files, no failures.';
  const partial = ['I will now ', 'refactor the ', 'tokenizer into '];
  codex.scripts.set(pck, (_req, n) => (n === 0
    ? { id: 'resp_a1', text: words(first), usage: { input: 500, cached: 0, output: 12, reasoning: 0 } }
    : { id: 'resp_a2', text: partial, usage: { input: 530, cached: 512, output: 99, reasoning: 0 }, cut: true }));
  const c = await CodexClient.open(g, 'codex-abort', pck);
  c.send([userMsg('Is the build green?')]);
  await c.response(0);
  c.send([userMsg('Then refactor the tokenizer.')]);
  await c.response(1, (r) => r.text === partial.join(''));
  await c.close(1001, 'going away');
  const wire = await codexWire('codex-abort', (ms) => ms.some((m) => m.opcode === 'close'));
  const conv = await settled(`openai-ws:${pck}`, [
    { role: 'system', blocks: [text(CODEX_INSTRUCTIONS)] },
    { role: 'user', blocks: [text('Is the build green?')] },
    { role: 'assistant', blocks: [text(first)], usage: { inputTokens: 500, cachedTokens: 0, outputTokens: 12, reasoningTokens: 0, totalTokens: 512 }, responseId: 'resp_a1', model: MODEL },
    { role: 'user', blocks: [text('Then refactor the tokenizer.')] },
    { role: 'assistant', blocks: [text(partial.join(''))], responseId: 'resp_a2', model: MODEL, incomplete: 'aborted' },
  ]);
  assert.equal(conv.incomplete, 'aborted');
  await assertSources(conv);
});

// KNOWN GAP (reported): a WebSocket that ends without a close frame leaves no record after the last
// message, so assembly never learns the stream was cut and the turn stays 'streaming' (no
// `incomplete`). Kept as a todo so it runs and shows; it passes once connection end reaches assembly.
test('codex: the connection dies mid-stream with no close frame (TCP reset) → last turn incomplete, earlier turns intact', async () => {
  const pck = 'codex-reset-session';
  const first = 'Done: 3 files formatted.';
  const partial = ['Now ', 'linting '];
  codex.scripts.set(pck, (_req, n) => (n === 0
    ? { id: 'resp_r1', text: words(first), usage: { input: 400, cached: 0, output: 8, reasoning: 0 } }
    : { id: 'resp_r2', text: partial, usage: { input: 420, cached: 384, output: 50, reasoning: 0 }, cut: true }));
  const c = await CodexClient.open(g, 'codex-reset', pck);
  c.send([userMsg('Format the code.')]);
  await c.response(0);
  c.send([userMsg('And lint it.')]);
  await c.response(1, (r) => r.text === partial.join(''));
  const wire = await codexWire('codex-reset', (ms) => ms.filter((m) => m.direction === 'server').length >= 2);
  c.ws.terminate(); // the agent was killed: no close frame, the TCP connection just ends
  const conv = await settled(`openai-ws:${pck}`, [
    { role: 'system', blocks: [text(CODEX_INSTRUCTIONS)] },
    { role: 'user', blocks: [text('Format the code.')] },
    { role: 'assistant', blocks: [text(first)], usage: { inputTokens: 400, cachedTokens: 0, outputTokens: 8, reasoningTokens: 0, totalTokens: 408 }, responseId: 'resp_r1', model: MODEL },
    { role: 'user', blocks: [text('And lint it.')] },
    { role: 'assistant', blocks: [text(partial.join(''))], responseId: 'resp_r2', model: MODEL, incomplete: 'aborted' },
  ], 5_000);
  assert.equal(conv.incomplete, 'aborted');
});

// ── Claude Code over HTTP + SSE ──────────────────────────────────────────────────────────────

const CC_HEADERS = { 'user-agent': 'claude-cli/2.0.0 (external, cli)', 'anthropic-version': '2023-06-01', 'anthropic-beta': 'interleaved-thinking-2025-05-14', 'x-api-key': 'sk-ant-test-not-real', 'x-app': 'cli' };
const CC_SYSTEM = [{ type: 'text', text: "You are Claude Code, Anthropic's official CLI for Claude." }, { type: 'text', text: 'You are an interactive CLI tool that helps users with software engineering tasks.' }];
const ccUser = (session: string) => `user_9f86d081884c7d659a2feaa0c55ad015_account_3c2b1a09-8f7e-4d6c-b5a4-938271605f4e_session_${session}`;
const sonnetStart = (id: string, input: number, cacheRead: number, cacheCreate: number) => ({ type: 'message_start', message: { id, type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: input, cache_creation_input_tokens: cacheCreate, cache_read_input_tokens: cacheRead, output_tokens: 1 } } });
const ccUsage = (input: number, cacheRead: number, cacheCreate: number, output: number) => ({ inputTokens: input + cacheRead + cacheCreate, cachedTokens: cacheRead, outputTokens: output, totalTokens: input + cacheRead + cacheCreate + output });

test('Claude Code: SSE with thinking + tool_use, a side call on a small model, then the tool_result → paired, usage per response', async () => {
  const session = '5b0e7a3c-1d2f-4e6a-9b8c-7d6e5f4a3b2c';
  const reminder = '<system-reminder>\nAs you answer the user\'s questions, you can use the following context: today is 2026-11-25.\n</system-reminder>';
  const user1 = { role: 'user', content: [{ type: 'text', text: reminder }, { type: 'text', text: 'The test in test/add.test.ts fails. Fix it.' }] };
  const thinking = ['The user wants ', 'the failing test fixed. ', 'I should read the test file first.'];
  const input = { file_path: '/home/dev/repo/test/add.test.ts', offset: 1, limit: 200 };
  const inputJson = JSON.stringify(input);
  const assistant1 = { role: 'assistant', content: [
    { type: 'thinking', thinking: thinking.join(''), signature: 'EqQBCkYIBxgCKkDx' },
    { type: 'text', text: "I'll read the test first." },
    { type: 'tool_use', id: 'toolu_01RTx7Mgg8Yb', name: 'Read', input },
  ] };
  const fileText = "     1\timport { add } from '../src/add';\n     2\ttest('adds', () => expect(add(1, 1)).toBe(3));\n";
  const user2 = { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_01RTx7Mgg8Yb', content: fileText }] };
  const answer = ['The expectation is wrong: ', '1 + 1 is 2. ', 'I changed `toBe(3)` to `toBe(2)`.'];

  llm.scripts.set('api.anthropic.test /v1/messages', ({ body }) => {
    if (body.model === 'claude-haiku-4-5') {
      return { json: { id: 'msg_01Side', type: 'message', role: 'assistant', model: 'claude-haiku-4-5-20251001', content: [{ type: 'text', text: '{"title": "Fix failing add test"}' }], stop_reason: 'end_turn', usage: { input_tokens: 86, output_tokens: 9 } } };
    }
    if (body.messages.length === 1) {
      return { sse: anthropicSse([
        sonnetStart('msg_01Alpha', 4, 12_003, 2_150),
        { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } },
        ...thinking.map((t) => ({ type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: t } })),
        { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQBCkYIBxgCKkDx' } },
        { type: 'content_block_stop', index: 0 },
        { type: 'ping' },
        { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } },
        { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: "I'll read " } },
        { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'the test first.' } },
        { type: 'content_block_stop', index: 1 },
        { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_01RTx7Mgg8Yb', name: 'Read', input: {} } },
        { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } },
        { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: inputJson.slice(0, 14) } },
        { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: inputJson.slice(14, 50) } },
        { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: inputJson.slice(50) } },
        { type: 'content_block_stop', index: 2 },
        { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 143 } },
        { type: 'message_stop' },
      ]) };
    }
    return { sse: anthropicSse([
      sonnetStart('msg_01Bravo', 6, 14_153, 310),
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      ...answer.map((t) => ({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } })),
      { type: 'content_block_stop', index: 0 },
      { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 37 } },
      { type: 'message_stop' },
    ]) };
  });

  const tools = [{ name: 'Read', description: 'Reads a file from the local filesystem.', input_schema: { type: 'object', properties: { file_path: { type: 'string' } }, required: ['file_path'] } }];
  const main = (messages: unknown[]) => ({ model: 'claude-sonnet-4-5', max_tokens: 32000, system: CC_SYSTEM, messages, tools, metadata: { user_id: ccUser(session) }, thinking: { type: 'enabled', budget_tokens: 31999 }, stream: true });
  const p1 = await postJson(g, 'api.anthropic.test', '/v1/messages?beta=true', main([user1]), CC_HEADERS);
  assert.equal(p1.status, 200);
  assert.match(p1.body, /event: message_stop/);
  const side = await postJson(g, 'api.anthropic.test', '/v1/messages?beta=true', { model: 'claude-haiku-4-5', max_tokens: 512, system: [{ type: 'text', text: 'Summarize this coding conversation in under 50 characters.' }], messages: [{ role: 'user', content: 'The test in test/add.test.ts fails. Fix it.' }], metadata: { user_id: ccUser(session) } }, CC_HEADERS);
  assert.equal(side.status, 200);
  const p2 = await postJson(g, 'api.anthropic.test', '/v1/messages?beta=true', main([user1, assistant1, user2]), CC_HEADERS);
  assert.match(p2.body, /event: message_stop/);

  const key = `anthropic:${session}`;
  const conv = await settled(key, [
    { role: 'system', blocks: CC_SYSTEM.map((b) => text(b.text)) },
    { role: 'user', blocks: [scaffold(reminder), text('The test in test/add.test.ts fails. Fix it.')] },
    { role: 'assistant', blocks: [
      { type: 'reasoning', text: thinking.join('') },
      text("I'll read the test first."),
      { type: 'tool_call', callId: 'toolu_01RTx7Mgg8Yb', name: 'Read', arguments: input }],
      usage: ccUsage(4, 12_003, 2_150, 143), responseId: 'msg_01Alpha', model: 'claude-sonnet-4-5-20250929' },
    { role: 'tool', blocks: [{ type: 'tool_result', callId: 'toolu_01RTx7Mgg8Yb', output: fileText, name: 'Read' }] },
    { role: 'assistant', blocks: [text(answer.join(''))], usage: ccUsage(6, 14_153, 310, 37), responseId: 'msg_01Bravo', model: 'claude-sonnet-4-5-20250929' },
  ]);
  assert.equal(conv.client, 'claude-code');
  assert.equal(conv.provider, 'anthropic');
  assert.equal(conv.model, 'claude-sonnet-4-5');
  assert.equal(conv.incomplete, undefined);
  // sources: the turns of each request come from its transaction
  const txs = await Promise.all((await apiGet(g, '/api/transactions?kind=HTTP&host=api.anthropic.test&limit=1000')).items.map((t: any) => apiGet(g, `/api/transactions/${t.id}`)));
  const sent = (t: any) => JSON.parse(t.reqBody);
  const tx1 = txs.find((t) => sent(t).metadata.user_id === ccUser(session) && sent(t).model === 'claude-sonnet-4-5' && sent(t).messages.length === 1);
  const tx2 = txs.find((t) => sent(t).metadata.user_id === ccUser(session) && sent(t).messages.length === 3);
  assert.deepEqual(conv.turns.map((t) => t.source), [[tx1.id], [tx1.id], [tx1.id], [tx2.id], [tx2.id]]);
  await assertSources(conv);
  assert.equal(tx2.respEvents.at(-1).event, 'message_stop', 'the SSE events were captured');
});

test('Claude Code: the client destroys its socket mid-SSE → last turn incomplete "aborted" with the text so far, earlier turns intact', async () => {
  const session = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
  const user1 = { role: 'user', content: 'What does src/add.ts export?' };
  const reply1 = 'It exports one function, `add(a, b)`.';
  const user2 = { role: 'user', content: 'Rewrite it with overflow checks.' };
  llm.scripts.set('api.anthropic.test /v1/messages', ({ body }) => (body.messages.length === 1
    ? { sse: anthropicSse([
      sonnetStart('msg_02One', 20, 5_000, 0),
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: reply1 } },
      { type: 'content_block_stop', index: 0 },
      { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 11 } },
      { type: 'message_stop' },
    ]) }
    : { sse: anthropicSse([
      sonnetStart('msg_02Two', 30, 5_020, 0),
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Here is a version ' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'that checks for overflow' } },
    ]), stall: true }));
  const req = (messages: unknown[]) => ({ model: 'claude-sonnet-4-5', max_tokens: 32000, system: CC_SYSTEM, messages, metadata: { user_id: ccUser(session) }, stream: true });
  await postJson(g, 'api.anthropic.test', '/v1/messages', req([user1]), CC_HEADERS);
  const p2 = await postJson(g, 'api.anthropic.test', '/v1/messages', req([user1, { role: 'assistant', content: [{ type: 'text', text: reply1 }] }, user2]), CC_HEADERS, (t) => t.includes('checks for overflow'));
  assert.equal(p2.aborted, true);
  const conv = await settled(`anthropic:${session}`, [
    { role: 'system', blocks: CC_SYSTEM.map((b) => text(b.text)) },
    { role: 'user', blocks: [text('What does src/add.ts export?')] },
    { role: 'assistant', blocks: [text(reply1)], usage: ccUsage(20, 5_000, 0, 11), responseId: 'msg_02One', model: 'claude-sonnet-4-5-20250929' },
    { role: 'user', blocks: [text('Rewrite it with overflow checks.')] },
    { role: 'assistant', blocks: [text('Here is a version that checks for overflow')], usage: ccUsage(30, 5_020, 0, 1), responseId: 'msg_02Two', model: 'claude-sonnet-4-5-20250929', incomplete: 'aborted' },
  ]);
  assert.equal(conv.incomplete, 'aborted');
  assert.equal(conv.client, 'claude-code');
  const last = await apiGet(g, `/api/transactions/${conv.turns[4].source[0]}`);
  assert.equal(last.error, 'truncated_stream', 'the cut transaction is flagged');
});

// ── Chat Completions with parallel tool calls ────────────────────────────────────────────────

test('codex signed in with ChatGPT: zstd-coded request bodies over HTTP (backend-api/codex/responses) → one conversation, turns decoded', async () => {
  const session = '0199c2aa-7e51-7d40-b0a4-5f2f3e9d1c77';
  const headers = { originator: 'codex_cli_rs', 'user-agent': 'codex_cli_rs/0.171.0', 'content-encoding': 'zstd' };
  const call = { type: 'function_call', call_id: 'call_zs1', name: 'shell', arguments: '{"command":["echo","hi"]}' };
  const result = { type: 'function_call_output', call_id: 'call_zs1', output: 'hi\n' };
  const input1 = [developerMsg('<permissions instructions>sandbox: workspace-write</permissions instructions>'), userMsg('Run echo hi and tell me what it printed')];
  const input2 = [...input1, call, result];
  const sse = (id: string, item: Record<string, unknown>) => ({ sse: [
    { event: 'response.created', data: { type: 'response.created', response: { id, status: 'in_progress', output: [] } } },
    { event: 'response.output_item.added', data: { type: 'response.output_item.added', output_index: 0, item } },
    { event: 'response.output_item.done', data: { type: 'response.output_item.done', output_index: 0, item } },
    { event: 'response.completed', data: { type: 'response.completed', response: { id, status: 'completed', model: 'gpt-5-codex', output: [item], usage: { input_tokens: 900, output_tokens: 12, total_tokens: 912 } } } },
  ] });
  llm.scripts.set('llm.local.test /backend-api/codex/responses', ({ body }) => (body.input.length === 2
    ? sse('resp_zs1', { id: 'fc_zs1', status: 'completed', ...call })
    : sse('resp_zs2', { id: 'msg_zs2', type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'It printed: hi' }] })));
  const zstd = (body: unknown) => execFileSync('zstd', ['-q', '-c', '-3'], { input: JSON.stringify(body) });
  for (const input of [input1, input2]) {
    const req = { model: 'gpt-5-codex', instructions: CODEX_INSTRUCTIONS, input, tools: [], stream: true, prompt_cache_key: session };
    const r = await postJson(g, 'llm.local.test', '/backend-api/codex/responses', zstd(req), headers);
    assert.equal(r.status, 200);
  }
  assert.deepEqual(llm.received.get('llm.local.test /backend-api/codex/responses')!.map((b) => b.input.length), [2, 4], 'the origin read the coded bodies');

  const conv = await waitFor(async () => {
    await g.drain();
    const c = await apiGet<Conversation>(g, `/api/conversations/${conversationId(`openai-responses:${session}`)}`).catch(() => undefined);
    return c && c.turns.some((t) => t.role === 'assistant' && t.blocks.some((b) => b.type === 'text')) ? c : undefined;
  }, 'the zstd session\'s conversation');
  assert.equal(conv.client, 'codex');
  assert.equal(conv.model, 'gpt-5-codex');
  const blocks = conv.turns.flatMap((t) => t.blocks.map((b) => [t.role, b.type, b.type === 'text' ? b.text : b.type === 'tool_call' ? b.name : b.type === 'tool_result' ? b.output : '']));
  assert.deepEqual(blocks, [
    ['system', 'text', CODEX_INSTRUCTIONS],
    ['developer', 'text', '<permissions instructions>sandbox: workspace-write</permissions instructions>'],
    ['user', 'text', 'Run echo hi and tell me what it printed'],
    ['assistant', 'tool_call', 'shell'],
    ['tool', 'tool_result', 'hi\n'],
    ['assistant', 'text', 'It printed: hi'],
  ]);
  const txs = (await apiGet(g, '/api/transactions?kind=HTTP&host=llm.local.test&limit=1000')).items.filter((t: any) => t.path === '/backend-api/codex/responses');
  for (const t of txs) {
    const full = await apiGet(g, `/api/transactions/${t.id}`);
    assert.equal(full.error, undefined);
    assert.equal(JSON.parse(full.reqBody).prompt_cache_key, session, 'stored decoded');
  }
});

test('chat completions: a stream with 2 parallel tool calls (arguments in pieces by index), then the tool results → both calls paired', async () => {
  const model = 'qwen3-coder-30b';
  const sys = { role: 'system', content: 'You are opencode, an interactive CLI coding agent.' };
  const user = { role: 'user', content: 'Compare package.json and tsconfig.json.' };
  const chunk = (id: string, delta: Record<string, unknown>, finish: string | null = null) => ({ id, object: 'chat.completion.chunk', created: 1_760_000_100, model, system_fingerprint: 'fp_local', choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  const call = (index: number, fn: Record<string, unknown>, id?: string) => ({ tool_calls: [{ index, ...(id ? { id, type: 'function' } : {}), function: fn }] });
  const usageChunk = (id: string, u: Record<string, unknown>) => ({ id, object: 'chat.completion.chunk', created: 1_760_000_100, model, choices: [], usage: u });
  llm.scripts.set('llm.local.test /v1/chat/completions', ({ body }) => {
    if (body.messages.length === 2) {
      return { sse: [
        chunk('chatcmpl-p1', { role: 'assistant', content: '' }),
        chunk('chatcmpl-p1', { content: 'Reading ' }),
        chunk('chatcmpl-p1', { content: 'both files.' }),
        chunk('chatcmpl-p1', call(0, { name: 'read', arguments: '' }, 'call_pkg')),
        chunk('chatcmpl-p1', call(1, { name: 'read', arguments: '' }, 'call_tsc')),
        chunk('chatcmpl-p1', call(0, { arguments: '{"filePath":' })),
        chunk('chatcmpl-p1', call(1, { arguments: '{"filePath":"/repo/ts' })),
        chunk('chatcmpl-p1', call(0, { arguments: '"/repo/package' })),
        chunk('chatcmpl-p1', call(1, { arguments: 'config.json"}' })),
        chunk('chatcmpl-p1', call(0, { arguments: '.json"}' })),
        chunk('chatcmpl-p1', {}, 'tool_calls'),
        usageChunk('chatcmpl-p1', { prompt_tokens: 1_480, completion_tokens: 52, total_tokens: 1_532, prompt_tokens_details: { cached_tokens: 1_024 } }),
      ].map((data): { data: unknown } => ({ data })).concat([{ data: '[DONE]' }]) };
    }
    return { sse: [
      chunk('chatcmpl-p2', { role: 'assistant', content: '' }),
      chunk('chatcmpl-p2', { content: 'Both target ' }),
      chunk('chatcmpl-p2', { content: 'ES2022 modules.' }),
      chunk('chatcmpl-p2', {}, 'stop'),
      usageChunk('chatcmpl-p2', { prompt_tokens: 1_700, completion_tokens: 6, total_tokens: 1_706 }),
    ].map((data): { data: unknown } => ({ data })).concat([{ data: '[DONE]' }]) };
  });
  const headers = { 'user-agent': 'opencode/0.15.3 ai-sdk/provider-utils/3.0.9 runtime/node.js/20' , authorization: 'Bearer local' };
  const tools = [{ type: 'function', function: { name: 'read', description: 'Read a file', parameters: { type: 'object', properties: { filePath: { type: 'string' } } } } }];
  const p1 = await postJson(g, 'llm.local.test', '/v1/chat/completions', { model, messages: [sys, user], tools, stream: true, stream_options: { include_usage: true } }, headers);
  assert.match(p1.body, /data: \[DONE\]/);
  const assistant = { role: 'assistant', content: 'Reading both files.', tool_calls: [
    { id: 'call_pkg', type: 'function', function: { name: 'read', arguments: '{"filePath":"/repo/package.json"}' } },
    { id: 'call_tsc', type: 'function', function: { name: 'read', arguments: '{"filePath":"/repo/tsconfig.json"}' } }] };
  const pkg = '{ "type": "module", "engines": { "node": ">=20" } }';
  const tsc = '{ "compilerOptions": { "target": "ES2022", "module": "NodeNext" } }';
  await postJson(g, 'llm.local.test', '/v1/chat/completions', { model, tools, stream: true, stream_options: { include_usage: true }, messages: [sys, user, assistant,
    { role: 'tool', tool_call_id: 'call_pkg', content: pkg }, { role: 'tool', tool_call_id: 'call_tsc', content: tsc }] }, headers);

  const listed = await waitFor(async () => { await g.drain(); return (await listConversations()).find((c) => c.provider === 'openai-chat'); }, 'the chat conversation');
  const conv = await settled(listed.key, [
    { role: 'system', blocks: [text(sys.content)] },
    { role: 'user', blocks: [text(user.content)] },
    { role: 'assistant', blocks: [
      text('Reading both files.'),
      { type: 'tool_call', callId: 'call_pkg', name: 'read', arguments: { filePath: '/repo/package.json' }, argumentsRaw: '{"filePath":"/repo/package.json"}' },
      { type: 'tool_call', callId: 'call_tsc', name: 'read', arguments: { filePath: '/repo/tsconfig.json' }, argumentsRaw: '{"filePath":"/repo/tsconfig.json"}' }],
      usage: { inputTokens: 1_480, cachedTokens: 1_024, outputTokens: 52, totalTokens: 1_532 }, responseId: 'chatcmpl-p1', model },
    { role: 'tool', blocks: [
      { type: 'tool_result', callId: 'call_pkg', output: pkg, name: 'read' },
      { type: 'tool_result', callId: 'call_tsc', output: tsc, name: 'read' }] },
    { role: 'assistant', blocks: [text('Both target ES2022 modules.')], usage: { inputTokens: 1_700, outputTokens: 6, totalTokens: 1_706 }, responseId: 'chatcmpl-p2', model },
  ]);
  assert.equal(conv.client, 'opencode');
  assert.equal(conv.model, model);
  assert.equal(conv.incomplete, undefined);
  await assertSources(conv);
});

// ── what the API and the CLI show ────────────────────────────────────────────────────────────

// KNOWN BUG (reported): src/api/routes.ts serves store.listConversations / getConversation as stored —
// with the assembler's internal per-connection objects and private `_http` / `_ws` / `_v` state —
// instead of publicConversation() and skipping isInternalConversation() (src/workers/conversation-state.ts).
// The CLI (src/cli.ts `conversations`) does the same. Todos until fixed.
test('the API serves public conversations only: no internal assembly objects, no private state', async () => {
  const listed = await listConversations();
  const leaks = (c: Conversation) => c.internal === true || Object.keys(c).some((k) => k.startsWith('_'));
  assert.deepEqual(listed.filter(leaks).map((c) => c.key), [], 'GET /api/conversations lists only conversations, without private fields');
  for (const id of asserted.keys()) {
    const c = await apiGet<Conversation>(g, `/api/conversations/${id}`);
    assert.deepEqual(Object.keys(c).filter((k) => k.startsWith('_')), [], `GET /api/conversations/${id} has no private fields`);
  }
});

// ── rebuild ──────────────────────────────────────────────────────────────────────────────────

test('greytap conversations --rebuild on the stopped proxy\'s data dir gives the same conversations', async () => {
  assert.ok(asserted.size >= 6, `conversations asserted so far: ${asserted.size}`);
  // the final state of every conversation asserted above, as the API serves it now
  const live = new Map<string, Conversation>();
  for (const id of asserted.keys()) live.set(id, await apiGet<Conversation>(g, `/api/conversations/${id}`));
  const listedIds = new Set((await listConversations()).filter((c) => !c.internal).map((c) => c.id));
  endLeftoverClients();
  await g.stop(); // keepData: the data dir stays
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['bin/greytap.js', 'conversations', '--data-dir', g.dataDir, '--rebuild', '--format', 'json'], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }));
  });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /rebuilt \d+ conversations/);
  cliOutput = JSON.parse(out.stdout) as Conversation[];
  const rebuilt = new Map(cliOutput.filter((c) => !c.internal).map((c) => [c.id, c]));
  assert.deepEqual(new Set(rebuilt.keys()), listedIds, 'the same conversations');
  for (const [id, c] of live) {
    const r = rebuilt.get(id);
    assert.ok(r, `conversation ${c.key} rebuilt`);
    assert.deepEqual(r.turns, c.turns, `turns of ${c.key}`);
    for (const f of ['key', 'client', 'provider', 'model', 'incomplete', 'startedTs', 'updatedTs'] as const) assert.deepEqual(r[f], c[f], `${f} of ${c.key}`);
  }
});

test('greytap conversations --format json prints public conversations only', () => {
  assert.ok(cliOutput, 'the rebuild test ran the CLI');
  const leaks = cliOutput.filter((c) => c.internal === true || Object.keys(c).some((k) => k.startsWith('_')));
  assert.deepEqual(leaks.map((c) => c.key), [], 'no internal objects, no private assembly state');
});
