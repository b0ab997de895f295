// HTTP conversations that grow by re-sent history: codex over HTTP (prompt_cache_key),
// previous_response_id chains, chat retries after an aborted reply, regenerate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assembleRecords, conversationByKey, publicConversation, rebuildConversations, type StoredConversation } from '../../../src/workers/assemble.js';
import type { Conversation, HttpTransaction, TransactionRecord } from '../../../src/records.js';
import { dissectHttp } from '../../../src/workers/dissect/index.js';
import { msgSig } from '../../../src/workers/dissect/blocks.js';
import { continueLine, type LineTurn } from '../../../src/workers/dissect/history-line.js';
import type { Store } from '../../../src/store/store.js';
import { allConversations, httpTx, shownTexts, sse, testStore, turnTexts } from './session-fixtures.js';
import { geminiCodeAssistSession } from './sessions.js';

async function feed(store: Store, records: TransactionRecord[]) {
  await store.putTransactions(records);
  await assembleRecords(store, records);
}
async function withStore(fn: (s: Store) => Promise<void>) {
  const { store, done } = await testStore();
  try { await fn(store); } finally { await done(); }
}
const texts = turnTexts;

const H: [string, string][] = [['originator', 'codex_cli_rs'], ['User-Agent', 'codex_cli_rs/0.46.0']];
const user = (text: string) => ({ type: 'message', role: 'user', content: [{ type: 'input_text', text }] });

test('codex over HTTP /v1/responses: full history each time, keyed by prompt_cache_key, SSE folded', async () => {
  await withStore(async (store) => {
    const call = { type: 'function_call', call_id: 'c1', name: 'shell', arguments: '{"command":["pwd"]}' };
    const rs = { type: 'reasoning', summary: [{ type: 'summary_text', text: 'Need cwd' }] };
    const t1 = httpTx({ ts: 1000, host: 'chatgpt.com', path: '/backend-api/codex/responses', headers: H,
      req: { model: 'gpt-5', instructions: 'sys', input: [user('where am I?')], prompt_cache_key: 'pk-1', stream: true },
      events: sse([{ type: 'response.created', response: { id: 'r1' } }, { type: 'response.output_item.done', output_index: 0, item: rs }, { type: 'response.output_item.done', output_index: 1, item: call },
        { type: 'response.completed', response: { id: 'r1', model: 'gpt-5', output: [rs, call], usage: { input_tokens: 10, output_tokens: 5, total_tokens: 15 } } }]) });
    const t2 = httpTx({ ts: 1010, host: 'chatgpt.com', path: '/backend-api/codex/responses', headers: H,
      req: { model: 'gpt-5', instructions: 'sys', input: [user('where am I?'), rs, call, { type: 'function_call_output', call_id: 'c1', output: '/repo' }], prompt_cache_key: 'pk-1', stream: true },
      events: sse([{ type: 'response.created', response: { id: 'r2' } }, { type: 'response.output_text.delta', output_index: 0, content_index: 0, delta: 'In /repo' },
        { type: 'response.completed', response: { id: 'r2', model: 'gpt-5', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'In /repo.' }] }] } }]) });
    await feed(store, [t2]);
    await feed(store, [t1]);
    const c = publicConversation((await conversationByKey(store, 'openai-responses:pk-1'))!);
    assert.deepEqual(texts(c), ['system:sys', 'user:where am I?', 'assistant:Need cwd|call(c1)', 'tool:result(c1 shell)', 'assistant:In /repo.']);
    assert.equal(c.client, 'codex');
    assert.deepEqual(c.turns.map((t) => t.source), [[t1.id], [t1.id], [t1.id], [t2.id], [t2.id]]);
  });
});

test('previous_response_id chain without prompt_cache_key, incremental and in one rebuild batch', async () => {
  await withStore(async (store) => {
    const t1 = httpTx({ ts: 2000, host: 'api.openai.com', path: '/v1/responses', req: { model: 'gpt-5', input: 'hello' },
      resp: { id: 'ra', status: 'completed', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'hi!' }] }] } });
    const t2 = httpTx({ ts: 2010, host: 'api.openai.com', path: '/v1/responses', req: { model: 'gpt-5', input: 'again', previous_response_id: 'ra' },
      resp: { id: 'rb', status: 'completed', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'hi again!' }] }] } });
    const t3 = httpTx({ ts: 2020, host: 'api.openai.com', path: '/v1/responses', req: { model: 'gpt-5', input: [user('bye')], previous_response_id: 'rb' },
      resp: { id: 'rc', status: 'failed', error: { message: 'boom' }, output: [] } });
    for (const t of [t1, t2, t3]) await feed(store, [t]);
    const convs = [...allConversations(store).values()];
    assert.equal(convs.length, 1);
    assert.deepEqual(texts(convs[0]), ['user:hello', 'assistant:hi!', 'user:again', 'assistant:hi again!', 'user:bye', 'assistant: !response.failed']);
    assert.equal(convs[0].turns[5].error, 'boom');
    assert.equal(convs[0].incomplete, 'response.failed');
    await rebuildConversations(store);
    const again = [...allConversations(store).values()];
    assert.deepEqual(again.map((c) => publicConversation(c as StoredConversation)), convs.map((c) => publicConversation(c as StoredConversation)));
  });
});

test('previous_response_id chain: instructions re-sent with every request are shown once, and again only when they change', async () => {
  await withStore(async (store) => {
    const answer = (id: string, text: string) => sse([
      { type: 'response.created', response: { id, model: 'gpt-4.1', status: 'in_progress' } },
      { type: 'response.completed', response: { id, model: 'gpt-4.1', status: 'completed', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text }] }] } },
    ]);
    // the OpenAI Agents SDK's way: `instructions` on every request (the API does not carry them over), new input only
    const req = (input: string, instructions: string, prev?: string) => ({ model: 'gpt-4.1', instructions, input: [user(input)], stream: true, ...(prev ? { previous_response_id: prev } : {}) });
    const txs = [
      httpTx({ ts: 4000, host: 'api.openai.com', path: '/v1/responses', req: req('q1', 'You are helpful.'), events: answer('resp_1', 'a1') }),
      httpTx({ ts: 4010, host: 'api.openai.com', path: '/v1/responses', req: req('q2', 'You are helpful.', 'resp_1'), events: answer('resp_2', 'a2') }),
      httpTx({ ts: 4020, host: 'api.openai.com', path: '/v1/responses', req: req('q3', 'You are terse.', 'resp_2'), events: answer('resp_3', 'a3') }),
      httpTx({ ts: 4030, host: 'api.openai.com', path: '/v1/responses', req: req('q4', 'You are terse.', 'resp_3'), events: answer('resp_4', 'a4') }),
    ];
    for (const t of txs) await feed(store, [t]);
    const convs = [...allConversations(store).values()];
    assert.equal(convs.length, 1);
    assert.deepEqual(texts(convs[0]), [
      'system:You are helpful.', 'user:q1', 'assistant:a1', 'user:q2', 'assistant:a2',
      'system:You are terse.', 'user:q3', 'assistant:a3', 'user:q4', 'assistant:a4',
    ]);
    await rebuildConversations(store);
    assert.deepEqual([...allConversations(store).values()].map((c) => texts(c)), convs.map((c) => texts(c)));
  });
});

test('chat: an aborted reply stays (incomplete) when the client retries; a regenerate replaces the last reply; an HTTP error is a turn', async () => {
  await withStore(async (store) => {
    const msgs = [{ role: 'user', content: 'write a haiku' }];
    const ok = (id: string, text: string) => ({ id, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }] });
    const cut = httpTx({ ts: 3000, host: 'localhost', path: '/v1/chat/completions', req: { model: 'm', messages: msgs, stream: true },
      events: sse([{ id: 'x1', model: 'm', choices: [{ index: 0, delta: { content: 'Autumn' } }] }], false), error: 'truncated_stream' });
    const retry = httpTx({ ts: 3010, host: 'localhost', path: '/v1/chat/completions', req: { model: 'm', messages: msgs }, resp: ok('x2', 'Autumn moon rises') });
    const regen = httpTx({ ts: 3020, host: 'localhost', path: '/v1/chat/completions', req: { model: 'm', messages: msgs }, resp: ok('x3', 'Cold pond, frog jumps') });
    const next = httpTx({ ts: 3030, host: 'localhost', path: '/v1/chat/completions', req: { model: 'm', messages: [...msgs, { role: 'assistant', content: 'Cold pond, frog jumps' }, { role: 'user', content: 'another' }] }, status: 429, resp: { error: { message: 'rate limited' } } });
    await feed(store, [next, regen, cut, retry]);
    const [c] = [...allConversations(store).values()];
    assert.deepEqual(texts(c), ['user:write a haiku', 'assistant:Autumn !aborted', 'assistant:Cold pond, frog jumps', 'user:another', 'assistant: !error']);
    assert.equal(c.turns[4].error, 'HTTP 429: rate limited');
  });
});

test('Gemini CLI through Code Assist: one conversation per session, two sessions with the same opening stay apart', async () => {
  await withStore(async (store) => {
    const a = geminiCodeAssistSession('aaaaaaaa-0000-4000-8000-000000000001', 5000);
    const b = geminiCodeAssistSession('bbbbbbbb-0000-4000-8000-000000000002', 5005);
    await feed(store, [a[0], b[0]]);
    await feed(store, [b[1], a[1]]);
    const all = allConversations(store);
    assert.deepEqual([...all.keys()].sort(), ['gemini:aaaaaaaa-0000-4000-8000-000000000001', 'gemini:bbbbbbbb-0000-4000-8000-000000000002']);
    for (const [txs, c] of [[a, all.get('gemini:aaaaaaaa-0000-4000-8000-000000000001')!], [b, all.get('gemini:bbbbbbbb-0000-4000-8000-000000000002')!]] as const) {
      assert.equal(c.client, 'gemini-cli');
      assert.equal(c.model, 'gemini-2.5-pro');
      assert.deepEqual(texts(c), ['system:You are Gemini CLI.', 'user:How big is README.md?', 'assistant:Checking the size|call(stat_file)', 'tool:result(stat_file stat_file)', 'assistant:README.md is 1234 bytes.']);
      assert.deepEqual(c.turns.map((t) => t.source), [[txs[0].id], [txs[0].id], [txs[0].id], [txs[1].id], [txs[1].id]]);
    }
  });
});

test('a long session is stored in proportion to its messages, not their square; states stored with whole histories still fold', async () => {
  // 40 requests of one Claude Code session, each re-sending the history with one more tool round, and
  // a side call on a small model every fifth request (a history of its own between two main ones)
  const user = 'user_1_account_2_session_11111111-2222-4333-8444-555555555555';
  const sys = [{ type: 'text', text: 'You are Claude Code.' }];
  const history: unknown[] = [{ role: 'user', content: 'fix the build' }];
  const txs: HttpTransaction[] = [];
  for (let i = 0; i < 40; i++) {
    const call = { type: 'tool_use', id: `toolu_${i}`, name: 'Bash', input: { command: `step ${i}` } };
    txs.push(httpTx({ ts: 10_000 + i * 10, host: 'api.anthropic.com', path: '/v1/messages', req: { model: 'claude-sonnet-4-5', system: sys, messages: [...history], metadata: { user_id: user } },
      resp: { id: `msg_${i}`, type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [call], stop_reason: 'tool_use' } }));
    if (i % 5 === 4) txs.push(httpTx({ ts: 10_000 + i * 10 + 5, host: 'api.anthropic.com', path: '/v1/messages', req: { model: 'claude-haiku-4-5', messages: [{ role: 'user', content: `title ${i}` }], metadata: { user_id: user } },
      resp: { id: `side_${i}`, type: 'message', role: 'assistant', model: 'claude-haiku-4-5', content: [{ type: 'text', text: 'Build fix' }] } }));
    history.push({ role: 'assistant', content: [call] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_${i}`, content: `output ${i}` }] });
  }
  const key = 'anthropic:11111111-2222-4333-8444-555555555555';
  const stored = (s: Store) => conversationByKey(s, key)!._http!;
  const wholeHistory = (tx: HttpTransaction) => dissectHttp(tx).exchange!.history.map((m) => msgSig(m.role, m.blocks));
  let inOrder: Conversation | undefined;
  await withStore(async (store) => {
    for (const tx of txs) await feed(store, [tx]);
    inOrder = publicConversation(conversationByKey(store, key)!);
    const { exchanges, msgs } = stored(store);
    const sigsStored = exchanges.reduce((n, e) => n + e.hist.length, 0);
    const sigsWhole = txs.reduce((n, tx) => n + wholeHistory(tx).length, 0);
    assert.ok(sigsStored <= Object.keys(msgs).length + exchanges.length, `${sigsStored} signatures stored for ${Object.keys(msgs).length} messages (${sigsWhole} whole)`);
    assert.ok(sigsWhole > 10 * sigsStored);
  });
  assert.equal(inOrder!.turns.length, 81);
  assert.deepEqual(texts(inOrder!).slice(0, 2), ['system:You are Claude Code.', 'user:fix the build']);
  assert.deepEqual(texts(inOrder!).slice(-2), ['tool:result(toolu_38 Bash)', 'assistant:call(toolu_39)']);
  await withStore(async (store) => {
    // arrival out of order (a late request lands between earlier ones), then a rebuild: the same line
    const shuffled = [...txs].sort((a, b) => ((a.ts * 7919) % 97) - ((b.ts * 7919) % 97));
    for (const tx of shuffled) await feed(store, [tx]);
    assert.deepEqual(publicConversation(conversationByKey(store, key)!), inOrder);
    await rebuildConversations(store);
    assert.deepEqual(texts(publicConversation(conversationByKey(store, key)!)), texts(inOrder!));
  });
  await withStore(async (store) => {
    // a conversation stored before histories were shared holds each one whole: later requests fold onto it
    for (const tx of txs.slice(0, 20)) await feed(store, [tx]);
    const byId = new Map(txs.map((tx) => [tx.id, tx]));
    await store.updateConversation(key, (c) => {
      const st = (c as StoredConversation)._http!;
      return { ...c!, _http: { msgs: st.msgs, exchanges: st.exchanges.map(({ shares: _, ...e }) => ({ ...e, hist: wholeHistory(byId.get(e.id)!) })) } } as StoredConversation;
    });
    assert.ok(stored(store).exchanges.every((e) => !e.shares));
    for (const tx of txs.slice(20)) await feed(store, [tx]);
    assert.deepEqual(publicConversation(conversationByKey(store, key)!), inOrder);
  });
});

test('a history that begins with the one folded before it is matched from where that one ended in the line, not from its start', () => {
  // the line's turns count the reads of their signatures
  type Counted = LineTurn & { reads: number };
  const turn = (sig: string, optional = false): Counted => ({ turn: { role: sig.startsWith('a') ? 'assistant' : 'user', blocks: [], source: [] }, reads: 0, get sig() { this.reads++; return sig; }, optional });
  const line = () => [turn('u1'), turn('a1'), turn('u2'), turn('a2', true), turn('a2b'), turn('u3'), turn('a3')];
  const R = (s: string[]) => s.map((sig) => ({ sig }));
  const sigs = (l: LineTurn[] | undefined) => l?.map((t) => t.sig);
  for (const hist of [
    ['u1', 'a1', 'u2', 'a2b', 'u3', 'a3', 'u4'], // extends the line, past a cut reply (optional) it leaves out
    ['u1', 'a1', 'u2', 'a2', 'a2b', 'u3', 'a3'], // extends it, the cut reply sent back
    ['u1', 'a1', 'u2', 'a2b', 'u3'], // a retry of the last reply
    ['u1', 'a1', 'u2', 'a2b', 'u9'], // rewritten after a common start
  ]) {
    const at: number[] = [];
    const whole = continueLine(line(), R(hist), undefined, at);
    // resumed past its first three messages, which the line holds before index at[2] + 1
    const T = line();
    const resumed = at.slice(0, 3);
    const c = continueLine(T, R(hist.slice(3)), { i: at[2] + 1, j: 3 }, resumed);
    assert.deepEqual(T.slice(0, 3).map((t) => t.reads), [0, 0, 0], `${hist.join(' ')}: the line's turns before the place are not read`);
    assert.deepEqual([c?.from, sigs(c?.line)], [whole?.from, sigs(whole?.line)], hist.join(' '));
    assert.deepEqual(resumed, at, 'the matched messages\' places in the line');
  }
});

test('a compacted or edited history keeps the turns it replaced, superseded, where they were; a message repeated after it is new', async () => {
  const user = 'user_1_account_2_session_22222222-3333-4444-8555-666666666666';
  const key = 'anthropic:22222222-3333-4444-8555-666666666666';
  const sys = [{ type: 'text', text: 'You are Claude Code.' }];
  let ts = 20_000;
  const ask = (messages: unknown[], reply: unknown[], id: string) => httpTx({ ts: ts += 10, host: 'api.anthropic.com', path: '/v1/messages',
    req: { model: 'claude-sonnet-4-5', system: sys, messages, metadata: { user_id: user } },
    resp: { id, type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: reply, stop_reason: 'end_turn' } });
  const u = (text: string) => ({ role: 'user', content: text }), a = (text: string) => ({ role: 'assistant', content: [{ type: 'text', text }] });
  const txs = [
    ask([u('fix the build')], [{ type: 'text', text: 'fixed' }], 'm1'),
    ask([u('fix the build'), a('fixed'), u('run the tests')], [{ type: 'text', text: 'green' }], 'm2'),
    // Claude Code compacts: the history is now a summary of everything before, then the next prompt
    ask([u('Summary: the build was fixed and the tests are green.'), a('Understood.'), u('run the tests')], [{ type: 'text', text: 'still green' }], 'm3'),
    ask([u('Summary: the build was fixed and the tests are green.'), a('Understood.'), u('run the tests'), a('still green'), u('ship it')], [{ type: 'text', text: 'shipped' }], 'm4'),
  ];
  const expected = ['system:You are Claude Code.', '~user:fix the build', '~assistant:fixed', '~user:run the tests', '~assistant:green',
    'user:Summary: the build was fixed and the tests are green.', 'assistant:Understood.', 'user:run the tests', 'assistant:still green', 'user:ship it', 'assistant:shipped'];
  let live: Conversation | undefined;
  await withStore(async (store) => {
    for (const tx of txs) await feed(store, [tx]);
    live = publicConversation(conversationByKey(store, key)!);
    assert.deepEqual(shownTexts(live), expected);
    assert.equal(live.incomplete, undefined);
    await rebuildConversations(store);
    assert.deepEqual(publicConversation(conversationByKey(store, key)!), live, 'rebuilt');
  });
  await withStore(async (store) => {
    for (const tx of [...txs].reverse()) await feed(store, [tx]);
    assert.deepEqual(publicConversation(conversationByKey(store, key)!), live, 'in any order');
  });
  // an earlier prompt edited, then edited back: the prompt is new again, not the superseded one
  const edits = [
    ask([u('list the files')], [{ type: 'text', text: 'a.ts' }], 'e1'),
    ask([u('list the files'), a('a.ts'), u('read a.ts')], [{ type: 'text', text: 'it exports f' }], 'e2'),
    ask([u('list the files'), a('a.ts'), u('read b.ts')], [{ type: 'text', text: 'no b.ts' }], 'e3'),
    ask([u('list the files'), a('a.ts'), u('read a.ts')], [{ type: 'text', text: 'it exports f, again' }], 'e4'),
  ];
  await withStore(async (store) => {
    for (const tx of edits) await feed(store, [tx]);
    assert.deepEqual(shownTexts(publicConversation(conversationByKey(store, key)!)).slice(1), ['user:list the files', 'assistant:a.ts',
      '~user:read a.ts', '~assistant:it exports f', '~user:read b.ts', '~assistant:no b.ts', 'user:read a.ts', 'assistant:it exports f, again']);
  });
});
