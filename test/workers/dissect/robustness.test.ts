// Malformed-but-plausible input the dissector fuzzer (bench/dissect-fuzz.ts) found breaking the
// dissectors or assembly, each cut down to the smallest input that did: a throw, seconds of CPU in a
// capture worker for one small record, or a conversation whose updates all failed from then on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { anthropicSseReply } from '../../../src/workers/dissect/anthropic.js';
import { chatSseReply } from '../../../src/workers/dissect/openai-chat.js';
import { splitTrailingReminders } from '../../../src/workers/dissect/blocks.js';
import { dissectHttp } from '../../../src/workers/dissect/index.js';
import { sseReply } from '../../../src/workers/dissect/openai-responses.js';
import { conv, feed, httpTx, sse, turnTexts, withStore } from './session-fixtures.js';
import { CODEX_INSTRUCTIONS, codexAnswer, codexCreate, codexSocket, msg } from './sessions.js';


/** Runs fn, failing when it takes longer than `ms` (each input below took seconds before). */
function quick<T>(ms: number, fn: () => T): T {
  const t0 = performance.now();
  const out = fn();
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${took.toFixed(0)} ms`);
  return out;
}

const data = (events: object[]) => events.map((e) => ({ data: JSON.stringify(e) }));

test('Responses stream: an output_index that is not an integer is read as absent (it made the fold throw)', async () => {
  // over HTTP: the exchange was dropped (dissect_failed)
  assert.deepEqual(sseReply(data([
    { type: 'response.output_item.added', output_index: 0.5, item: { type: 'message', role: 'assistant', content: [] } },
    { type: 'response.output_text.delta', output_index: 0.5, content_index: 0, delta: 'hi' },
  ]), true), { blocks: [{ type: 'text', text: 'hi' }], incomplete: 'aborted' });
  // over WebSocket the throw failed the connection's state update, and the event was read again by
  // every later assembly of the socket: its conversation never changed again
  await withStore(async (store) => {
    const l = codexSocket([
      { request: codexCreate('sess-odd-index', [msg('user', 'hi')]), events: [
        { type: 'response.created', response: { id: 'resp_1', model: 'gpt-5-codex' } },
        { type: 'response.output_text.delta', output_index: 0.5, content_index: 0, delta: 'Hel' },
      ] },
      { request: codexCreate('sess-odd-index', [msg('user', 'again')]), events: codexAnswer('resp_2', [msg('assistant', 'Hello')]) },
    ], 1_700_000_000_000);
    await feed(store, [l.upgrade, l.client[0], ...l.server.slice(0, 2)]);
    await feed(store, [l.client[1], ...l.server.slice(2)]);
    assert.deepEqual(turnTexts(conv(store, 'openai-ws:sess-odd-index')), [`system:${CODEX_INSTRUCTIONS}`, 'user:hi', 'assistant:Hel !aborted', 'user:again', 'assistant:Hello']);
  });
});

test('a stream index far past any real stream is read as absent: the folds kept items in arrays by it and walked them whole', () => {
  // each of these took seconds (index 2e8) to minutes (4294967294) of a capture worker's CPU
  const index = 200_000_000;
  const claude = quick(1000, () => anthropicSseReply(data([
    { type: 'message_start', message: { id: 'msg_1' } },
    { type: 'content_block_start', index, content_block: { type: 'text', text: 'hi' } },
    { type: 'message_stop' },
  ])));
  assert.deepEqual(claude.blocks, [{ type: 'text', text: 'hi' }]);
  const chat = quick(1000, () => chatSseReply(data([
    { choices: [{ index: 0, delta: { tool_calls: [{ index, id: 'call_1', function: { name: 'f', arguments: '{}' } }] }, finish_reason: 'tool_calls' }] },
  ])));
  assert.deepEqual(chat.blocks, [{ type: 'tool_call', callId: 'call_1', name: 'f', arguments: {}, argumentsRaw: '{}' }]);
  const responses = quick(1000, () => sseReply(data([
    { type: 'response.output_text.delta', output_index: 0, content_index: index, delta: 'x' },
    { type: 'response.reasoning_summary_text.delta', output_index: 1, summary_index: index, delta: 'y' },
  ]), true));
  assert.deepEqual(responses.blocks, [{ type: 'text', text: 'x' }, { type: 'reasoning', text: 'y' }]);
});

test('Claude Code reminders split off a tool output in time linear in its length', () => {
  const reminder = '<system-reminder>\nx\n</system-reminder>';
  // a blank-line run before the output's last line: /\n+$/ retried from every newline of it
  const blank = '\n'.repeat(100_000) + 'x';
  assert.deepEqual(quick(1000, () => splitTrailingReminders(`${blank}\n${reminder}`)), { output: blank, reminders: [reminder] });
  // an output of nothing but reminders: the rest of the output was sliced and scanned again for each
  const many = quick(1000, () => splitTrailingReminders(`out\n${`${reminder}\n`.repeat(20_000)}`));
  assert.equal(many.output, 'out');
  assert.equal(many.reminders.length, 20_000);
});

test('a message of hundreds of thousands of parts or tool calls dissects (push(...parts) overflowed the stack)', () => {
  // past this thread's stack; a capture worker's (4 MB) overflowed at 500,000 tool calls: a 1.5 MB request
  const n = 250_000;
  const chat = dissectHttp(httpTx({ ts: 1, host: 'llm.local', path: '/v1/chat/completions', req: { model: 'm', messages: [
    { role: 'user', content: 'go' },
    { role: 'assistant', content: 'calls', tool_calls: new Array(n).fill({}) },
  ] }, resp: { choices: [] } }));
  assert.equal(chat.exchange?.history[1].blocks.length, 1 + n);
  // consecutive messages of one role are merged into one
  const merged = dissectHttp(httpTx({ ts: 1, host: 'llm.local', path: '/v1/chat/completions', req: { model: 'm', messages: [
    { role: 'user', content: 'go' },
    { role: 'user', content: new Array(n).fill({ type: 'text', text: 'x' }) },
  ] }, resp: { choices: [] } }));
  assert.equal(merged.exchange?.history[0].blocks.length, 1 + n);
});

/** `inner` inside `depth` objects: {"a":{"a":…}} */
function nested(depth: number, inner: unknown): string {
  return '{"a":'.repeat(depth) + JSON.stringify(inner) + '}'.repeat(depth);
}

test('a tool argument nested 10,000 deep is kept as text below 100 levels: stored and served, the conversation goes on updating', async () => {
  await withStore(async (store) => {
    const headers: [string, string][] = [['User-Agent', 'claude-cli/2.1.0 (external, cli)']];
    const user = `user_0_account_1_session_9d7e2c1a-0000-4000-8000-00000000d33f`;
    const ask = (ts: number, messages: unknown[], text: string) => httpTx({
      ts, host: 'api.anthropic.com', path: '/v1/messages', headers,
      req: { model: 'claude-sonnet-4-5', metadata: { user_id: user }, messages },
      events: sse([
        { type: 'message_start', message: { id: `msg_${ts}`, model: 'claude-sonnet-4-5' } },
        { type: 'content_block_start', index: 0, content_block: { type: 'text', text } },
        { type: 'message_stop' },
      ]),
    });
    // (httpTx's JSON.stringify of the request would itself overflow: the request text is made here)
    const tx1 = ask(1_000, [], 'first');
    tx1.reqBody = `{"model":"claude-sonnet-4-5","metadata":{"user_id":"${user}"},"messages":[{"role":"user","content":"write it"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_deep","name":"Write","input":${nested(10_000, 'leaf')}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_deep","content":"done"}]}]}`;
    await feed(store, [tx1]);
    await feed(store, [ask(2_000, [{ role: 'user', content: 'write it' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_deep', name: 'Write', input: {} }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_deep', content: 'done' }] }, { role: 'assistant', content: 'first' }, { role: 'user', content: 'and now?' }], 'second')]);
    const c = conv(store, `anthropic:9d7e2c1a-0000-4000-8000-00000000d33f`);
    assert.deepEqual(turnTexts(c), ['user:write it', 'assistant:call(toolu_deep)', 'tool:result(toolu_deep Write)', 'assistant:first', 'user:and now?', 'assistant:second']);
    assert.ok(JSON.stringify(c).length > 10_000, 'the API can write it');
    // the deep part is its own JSON text, from the level where structure stops
    let v = (c.turns[1].blocks[0] as { arguments: unknown }).arguments;
    let levels = 0;
    while (typeof v === 'object' && v !== null) { v = (v as { a: unknown }).a; levels++; }
    assert.ok(levels < 100);
    assert.equal(v, nested(10_000 - levels, 'leaf'));
  });
});

test('a session id too long for an LMDB key still makes a conversation (every update of it failed)', async () => {
  await withStore(async (store) => {
    const user = `user_0_account_1_session_${'f'.repeat(5000)}`;
    const post = (ts: number, messages: unknown[], answer: string) => httpTx({
      ts, host: 'api.anthropic.com', path: '/v1/messages', headers: [['User-Agent', 'claude-cli/2.1.0 (external, cli)']],
      req: { model: 'claude-sonnet-4-5', metadata: { user_id: user }, messages }, resp: { type: 'message', id: `msg_${ts}`, content: [{ type: 'text', text: answer }] },
    });
    await feed(store, [post(1_000, [{ role: 'user', content: 'hi' }], 'hello')]);
    await feed(store, [post(2_000, [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }, { role: 'user', content: 'bye' }], 'ciao')]);
    assert.deepEqual(turnTexts(conv(store, `anthropic:${'f'.repeat(5000)}`)), ['user:hi', 'assistant:hello', 'user:bye', 'assistant:ciao']);
    // a previous_response_id as long: its pointer object's key was refused, and the exchange dropped
    const rid = `resp_${'r'.repeat(5000)}`;
    const responses = (ts: number, req: object, id: string, text: string) => httpTx({ ts, host: 'api.openai.com', path: '/v1/responses', req, events: sse(codexAnswer(id, [msg('assistant', text)])) });
    await feed(store, [responses(3_000, { model: 'gpt-5', input: 'one' }, rid, 'uno')]);
    await feed(store, [responses(4_000, { model: 'gpt-5', input: 'two', previous_response_id: rid }, 'resp_2', 'dos')]);
    const chain = [...(function* () { for (let after: string | undefined; ;) { const p = store.listConversations({ limit: 100, after }); yield* p.items; if (!p.next) return; after = p.next; } })()]
      .filter((c) => c.provider === 'openai-responses' && !c.internal);
    assert.deepEqual(chain.map((c) => turnTexts(c)), [['user:one', 'assistant:uno', 'user:two', 'assistant:dos']]);
  });
});
