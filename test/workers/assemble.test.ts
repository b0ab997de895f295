// Conversation assembly from committed records, against the store (the real LMDB store on a temp
// dir once it exists): codex over WebSocket in any interleaving of its two directions, Claude
// Code's SSE, chat completions with parallel tool calls, Gemini, aborted and failed streams, and
// rebuild == incremental.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assembleRecords, connectionEnded, conversationByKey, conversationId, publicConversation, rebuildConversations, type StoredConversation } from '../../src/workers/assemble.js';
import { deriveWs } from '../../src/workers/dissect/openai-ws.js';
import type { Conversation, TransactionRecord, Turn, WsMessageRecord } from '../../src/records.js';
import type { Store } from '../../src/store/store.js';
import { waitFor } from '../helpers/harness.js';
import { allConversations, conv, feed, httpTx, shownTexts, sse, testStore, turnTexts, withStore } from './dissect/session-fixtures.js';
import { CC_SESSION, CODEX_INSTRUCTIONS, chatSession, claudeCodeSession, codexAnswer, codexCreate, codexSession, codexSocket, geminiSession, msg, type CodexLanes } from './dissect/sessions.js';

function chunks<T>(a: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < a.length; i += n) out.push(a.slice(i, i + n));
  return out;
}

const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1);

/** A socket's connection state (the assembler's internal object for it). */
const storedState = (store: Store, conn: string) => store.getConversation(conversationId('openai-ws:' + conn)) as StoredConversation;

const noSource = (turns: Turn[]) => turns.map(({ source: _s, ...t }) => t);

const usage = (inputTokens: number, cachedTokens: number, outputTokens: number, reasoningTokens: number) => ({ inputTokens, cachedTokens, outputTokens, reasoningTokens, totalTokens: inputTokens + outputTokens });

function expectedCodexTurns(end: 'completed' | 'failed' | 'close'): Omit<Turn, 'source'>[] {
  const last: Omit<Turn, 'source'> = end === 'completed'
    ? { role: 'assistant', blocks: [{ type: 'text', text: 'Only . and ..' }], usage: usage(5300, 5120, 10, 0), responseId: 'resp_3', model: 'gpt-5-codex' }
    : end === 'failed'
      ? { role: 'assistant', blocks: [{ type: 'text', text: 'Only . and ..' }], usage: usage(5300, 0, 2, 0), responseId: 'resp_3', model: 'gpt-5-codex', incomplete: 'response.failed', error: 'The server had an error' }
      : { role: 'assistant', blocks: [{ type: 'text', text: 'Only . and ..' }], responseId: 'resp_3', model: 'gpt-5-codex', incomplete: 'aborted' };
  return [
    { role: 'system', blocks: [{ type: 'text', text: CODEX_INSTRUCTIONS }] },
    { role: 'developer', blocks: [{ type: 'text', text: '<permissions instructions>\nsandbox: workspace-write\n</permissions instructions>', scaffolding: true }] },
    { role: 'user', blocks: [
      { type: 'text', text: '# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>be brief</INSTRUCTIONS>', scaffolding: true },
      { type: 'text', text: '<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>', scaffolding: true },
      { type: 'text', text: 'list the files' }] },
    { role: 'assistant', blocks: [
      { type: 'reasoning', text: '**Listing files** with ls' },
      { type: 'tool_call', callId: 'call_1', name: 'shell', arguments: { command: ['ls', '-a'] }, argumentsRaw: '{"command":["ls","-a"]}' }],
      usage: usage(5000, 4096, 120, 64), responseId: 'resp_1', model: 'gpt-5-codex' },
    { role: 'tool', blocks: [{ type: 'tool_result', callId: 'call_1', output: '.\n..\nREADME.md\nsrc', name: 'shell' }] },
    { role: 'assistant', blocks: [{ type: 'text', text: 'Two entries: README.md and src.' }], usage: usage(5200, 4992, 30, 0), responseId: 'resp_2', model: 'gpt-5-codex' },
    { role: 'user', blocks: [{ type: 'text', text: 'and the hidden ones?' }] },
    last,
  ];
}

/** Source ids: each request turn from its client message, each response from its first and last server event. */
function expectedCodexSources(l: CodexLanes): string[][] {
  const text = (r: WsMessageRecord) => r.body ?? '';
  const resp = (id: string) => {
    const evs = l.server.filter((r) => text(r).includes(`"id":"${id}"`) || false);
    const first = l.server.indexOf(evs[0]);
    const next = l.server.findIndex((r, i) => i > first && text(r).includes('"type":"response.created"'));
    const last = next === -1 ? l.server[l.server.length - 1] : l.server[next - 1];
    return [evs[0].id, last.id];
  };
  const c = l.client;
  return [[c[0].id], [c[1].id], [c[1].id], resp('resp_1'), [c[2].id], resp('resp_2'), [c[3].id], resp('resp_3')];
}

test('codex over WebSocket: pre-warm, reasoning, tool call paired with its output, usage per response', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-A', 1_700_000_000_000);
    await feed(store, [l.upgrade]);
    const all = [...l.client, ...l.server].sort(byId); // wire/commit order
    for (const b of chunks(all, 5)) await feed(store, b);
    const c = await conv(store, 'openai-ws:sess-A');
    assert.deepEqual(noSource(c.turns), expectedCodexTurns('completed'));
    assert.deepEqual(c.turns.map((t) => t.source), expectedCodexSources(l));
    assert.equal(c.client, 'codex');
    assert.equal(c.provider, 'openai-ws');
    assert.equal(c.model, 'gpt-5-codex');
    assert.equal(c.incomplete, undefined);
    assert.deepEqual(publicConversation(store.getConversation(c.id) as StoredConversation), c, 'readable by its id');
    assert.equal(c.id, conversationId('openai-ws:sess-A'), 'the id derives from the key (the store keeps a given id)');
    assert.deepEqual([...allConversations(store).keys()], ['openai-ws:sess-A'], 'one visible conversation; the connection state stays internal');
  });
});

test('codex over WebSocket: the connection state, rewritten at every assembly, keeps the repeated instructions once and a completed response\'s output alone', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-S', 1_700_000_050_000);
    await feed(store, [l.upgrade, ...[...l.client, ...l.server].sort(byId)]);
    const s = storedState(store, l.upgrade.conn)._ws!;
    const json = JSON.stringify(s);
    assert.equal(json.split(CODEX_INSTRUCTIONS).length - 1, 1, 'the instructions of 4 requests, stored once');
    assert.ok(!json.includes('encrypted_content'), 'reasoning ciphertext is shown nowhere and not kept');
    assert.deepEqual(s.responses.map((r) => r.fold.items.length), [0, 0, 0, 0], 'the streamed items are superseded by each completed output');
    assert.deepEqual(noSource((await conv(store, 'openai-ws:sess-S')).turns), expectedCodexTurns('completed'));
  });
});

test('codex over WebSocket: the result does not depend on which direction is assembled first, batching or re-delivery', async () => {
  const t0 = 1_700_000_100_000;
  const l = codexSession('sess-B', t0);
  const key = 'openai-ws:sess-B';
  const results: Conversation[] = [];
  const orders: [string, (s: Store) => Promise<void>][] = [
    ['server first', async (s) => { for (const b of chunks(l.server, 7)) await feed(s, b); for (const b of chunks(l.client, 2)) await feed(s, b); }],
    ['client first', async (s) => { for (const b of chunks(l.client, 1)) await feed(s, b); for (const b of chunks(l.server, 3)) await feed(s, b); }],
    ['concurrent lanes', async (s) => {
      await Promise.all([(async () => { for (const b of chunks(l.server, 1)) await feed(s, b); })(), (async () => { for (const b of chunks(l.client, 1)) await feed(s, b); })()]);
    }],
    ['re-delivered batches', async (s) => { for (const b of chunks(l.server, 4)) { await feed(s, b); await feed(s, b); } for (const b of chunks(l.client, 2)) { await feed(s, b); await feed(s, b); } }],
  ];
  for (const [name, run] of orders) {
    await withStore(async (store) => {
      await feed(store, [l.upgrade]);
      await run(store);
      const c = await conv(store, key);
      assert.deepEqual(noSource(c.turns), expectedCodexTurns('completed'), name);
      assert.deepEqual(c.turns.map((t) => t.source), expectedCodexSources(l), name);
      results.push(c);
    });
  }
  const noId = ({ id: _i, ...c }: Conversation) => c; // each run has its own store
  for (const r of results.slice(1)) assert.deepEqual(noId(r), noId(results[0]));
});

test('codex: server events assembled before the upgrade and the request still end up in the right conversation (client from x-codex-turn-metadata)', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-C', 1_700_000_200_000);
    for (const b of chunks(l.server, 6)) await feed(store, b);
    assert.equal(allConversations(store).size, 0, 'responses with no request known yet are held in the connection state');
    await feed(store, l.client); // the 101 transaction was never committed
    const c = await conv(store, 'openai-ws:sess-C');
    assert.deepEqual(noSource(c.turns), expectedCodexTurns('completed'));
    assert.equal(c.client, 'codex');
  });
});

test('two concurrent codex sessions on two sockets never interleave', async () => {
  await withStore(async (store) => {
    const t0 = 1_700_000_300_000;
    const a = codexSession('sess-X', t0);
    const b = codexSession('sess-Y', t0 + 2, 'failed'); // overlapping in time, one ms apart per event
    await feed(store, [a.upgrade, b.upgrade]);
    const lanes = [a.client, a.server, b.client, b.server];
    await Promise.all(lanes.map(async (lane) => { for (const ch of chunks(lane, 3)) await feed(store, ch); }));
    const ca = await conv(store, 'openai-ws:sess-X');
    const cb = await conv(store, 'openai-ws:sess-Y');
    assert.deepEqual(noSource(ca.turns), expectedCodexTurns('completed'));
    assert.deepEqual(noSource(cb.turns), expectedCodexTurns('failed'));
    assert.deepEqual(ca.turns.map((t) => t.source), expectedCodexSources(a));
    assert.deepEqual(cb.turns.map((t) => t.source), expectedCodexSources(b));
    assert.equal(cb.incomplete, 'response.failed');
    assert.equal(allConversations(store).size, 2);
  });
});

test('codex sub-agents (spawn_agent) send their parent\'s prompt_cache_key: each is the conversation of its own thread, linked to its parent\'s, over WebSocket and HTTP, and the parent\'s stays whole', async () => {
  const t0 = 1_700_000_340_000;
  const sub = (thread: string, parent: string) => ({ client_metadata: { 'x-openai-subagent': 'collab_spawn', 'x-codex-turn-metadata': JSON.stringify({ session_id: parent, thread_id: thread, parent_thread_id: parent, subagent_kind: 'thread_spawn', thread_source: 'subagent' }) } });
  const spawn = { type: 'function_call', call_id: 'call_s', name: 'spawn_agent', namespace: 'multi_agent_v1', arguments: '{"message":"Run ls"}' };
  const spawned = { type: 'function_call_output', call_id: 'call_s', output: '{"agent_id":"thr-child"}' };
  const ls = { type: 'function_call', call_id: 'call_l', name: 'shell', arguments: '{"command":["ls"]}' };
  const listed = { type: 'function_call_output', call_id: 'call_l', output: 'README.md' };
  // the parent's socket, and the sub-agent's own socket opened while the parent waits
  const parent = codexSocket([
    { request: codexCreate('thr-parent', [msg('user', 'Use a subagent to run ls')]), events: codexAnswer('resp_p1', [spawn]) },
    { request: codexCreate('thr-parent', [spawned], { previous_response_id: 'resp_p1' }), events: codexAnswer('resp_p2', [msg('assistant', 'It found README.md.')]) },
  ], t0);
  const child = codexSocket([
    { request: codexCreate('thr-parent', [msg('user', 'Run ls')], sub('thr-child', 'thr-parent')), events: codexAnswer('resp_c1', [ls]) },
    { request: codexCreate('thr-parent', [listed], { previous_response_id: 'resp_c1', ...sub('thr-child', 'thr-parent') }), events: codexAnswer('resp_c2', [msg('assistant', 'README.md')]) },
  ], t0 + 2);
  const wire = (l: CodexLanes) => [...l.client, ...l.server].sort(byId);
  // the sub-agent names the conversation that started it (its parent thread's), the parent none
  const assertParentLink = async (store: Store, provider: string) => {
    const [p, c] = [await conv(store, `${provider}:thr-parent`), await conv(store, `${provider}:thr-child`)];
    assert.equal(c.parent, p.id, provider);
    assert.equal(p.parent, undefined, provider);
  };
  await withStore(async (store) => {
    await feed(store, [parent.upgrade, child.upgrade]);
    for (const r of [...wire(child), ...wire(parent)]) await feed(store, [r]); // the sub-agent's socket assembled first
    assert.deepEqual(turnTexts(await conv(store, 'openai-ws:thr-parent')), [`system:${CODEX_INSTRUCTIONS}`, 'user:Use a subagent to run ls', 'assistant:call(call_s)', 'tool:result(call_s spawn_agent)', 'assistant:It found README.md.']);
    assert.deepEqual(turnTexts(await conv(store, 'openai-ws:thr-child')), [`system:${CODEX_INSTRUCTIONS}`, 'user:Run ls', 'assistant:call(call_l)', 'tool:result(call_l shell)', 'assistant:README.md']);
    await assertParentLink(store, 'openai-ws');
  });
  // over HTTP (a custom provider): every request re-sends the thread's history
  const post = (ts: number, body: object, output: unknown[]) => httpTx({ ts, host: 'api.openai.com', path: '/v1/responses', headers: [['originator', 'codex_exec']], req: body, events: sse(codexAnswer(`resp_${ts}`, output)) });
  const txs = [
    post(t0 + 10, codexCreate('thr-parent', [msg('user', 'Use a subagent to run ls')]), [spawn]),
    post(t0 + 11, codexCreate('thr-parent', [msg('user', 'Run ls')], sub('thr-child', 'thr-parent')), [ls]),
    post(t0 + 12, codexCreate('thr-parent', [msg('user', 'Run ls'), ls, listed], sub('thr-child', 'thr-parent')), [msg('assistant', 'README.md')]),
    post(t0 + 13, codexCreate('thr-parent', [msg('user', 'Use a subagent to run ls'), spawn, spawned]), [msg('assistant', 'It found README.md.')]),
  ];
  await withStore(async (store) => {
    for (const t of [...txs].reverse()) await feed(store, [t]);
    assert.deepEqual(turnTexts(await conv(store, 'openai-responses:thr-parent')), [`system:${CODEX_INSTRUCTIONS}`, 'user:Use a subagent to run ls', 'assistant:call(call_s)', 'tool:result(call_s spawn_agent)', 'assistant:It found README.md.']);
    assert.deepEqual(turnTexts(await conv(store, 'openai-responses:thr-child')), [`system:${CODEX_INSTRUCTIONS}`, 'user:Run ls', 'assistant:call(call_l)', 'tool:result(call_l shell)', 'assistant:README.md']);
    await assertParentLink(store, 'openai-responses');
  });
});

test('codex reconnects (a new socket re-sends the whole history): one conversation for the session, the same in any order and rebuilt', async () => {
  const t0 = 1_700_000_350_000;
  const call = { type: 'function_call', call_id: 'call_7', name: 'shell', arguments: '{"command":["ls"]}' };
  const out = { type: 'function_call_output', call_id: 'call_7', output: 'README.md' };
  const h = [msg('user', 'list the files'), call, out, msg('assistant', 'Just README.md.')];
  const ask = msg('user', 'what is in it?');
  // the first socket: its last request is refused at the connection's time limit
  const limit = { type: 'error', status: 400, error: { type: 'invalid_request_error', code: 'websocket_connection_limit_reached', message: 'Responses websocket connection limit reached (60 minutes).' } };
  const a = codexSocket([
    { request: codexCreate('sess-G', h.slice(0, 1)), events: codexAnswer('resp_1', [call]) },
    { request: codexCreate('sess-G', [out], { previous_response_id: 'resp_1' }), events: codexAnswer('resp_2', [h[3]]) },
    { request: codexCreate('sess-G', [ask], { previous_response_id: 'resp_2' }), events: [limit], closeAfter: true },
  ], t0);
  // so codex opens another: the whole history with the prompt again, then new items only
  const b = codexSocket([
    { request: codexCreate('sess-G', [...h, ask]), events: codexAnswer('resp_3', [msg('assistant', 'A title.')]) },
    { request: codexCreate('sess-G', [msg('user', 'thanks')], { previous_response_id: 'resp_3' }), events: codexAnswer('resp_4', [msg('assistant', 'Welcome.')]) },
  ], t0 + 100);
  // another session on a socket of its own at the same time stays apart
  const other = codexSession('sess-H', t0 + 50);
  const expected = [
    `system:${CODEX_INSTRUCTIONS}`, 'user:list the files', 'assistant:call(call_7)', 'tool:result(call_7 shell)', 'assistant:Just README.md.',
    'user:what is in it?', 'assistant: !error', 'assistant:A title.', 'user:thanks', 'assistant:Welcome.',
  ];
  const wire = (l: CodexLanes) => [...l.client, ...l.server].sort(byId);
  const orders: [string, (s: Store) => Promise<void>][] = [
    ['in order', async (s) => { for (const l of [a, other, b]) for (const ch of chunks(wire(l), 3)) await feed(s, ch); }],
    ['the new socket first', async (s) => { for (const l of [b, other, a]) for (const ch of chunks(wire(l), 2)) await feed(s, ch); }],
    ['concurrently', async (s) => { await Promise.all([a, b, other].map(async (l) => { for (const ch of chunks(wire(l), 1)) await feed(s, ch); })); }],
  ];
  const results: Conversation[] = [];
  for (const [name, run] of orders) {
    await withStore(async (store) => {
      await feed(store, [a.upgrade, b.upgrade, other.upgrade]);
      await run(store);
      const c = await conv(store, 'openai-ws:sess-G');
      assert.deepEqual(turnTexts(c), expected, name);
      const [a1, a2, a3] = a.client.map((r) => [r.id]), [, b2] = b.client.map((r) => [r.id]);
      assert.deepEqual(c.turns.filter((t) => t.role !== 'assistant').map((t) => t.source), [a1, a1, a2, a3, b2], `${name}: what the first socket showed keeps its sources`);
      assert.equal(c.incomplete, undefined, name);
      assert.equal(c.startedTs, a.client[0].ts, name);
      assert.equal(c.updatedTs, b.server.at(-1)!.ts, name);
      assert.deepEqual(noSource((await conv(store, 'openai-ws:sess-H')).turns), expectedCodexTurns('completed'), name);
      assert.equal(allConversations(store).size, 2, name);
      results.push(c);
      await rebuildConversations(store);
      assert.deepEqual(await conv(store, 'openai-ws:sess-G'), c, `${name}: rebuilt`);
    });
  }
  const noId = ({ id: _i, ...c }: Conversation) => c;
  for (const r of results.slice(1)) assert.deepEqual(noId(r), noId(results[0]));
});

test('codex reconnects twice, the middle socket\'s line updated late: the same conversation as in order and as rebuilt, each socket\'s turns stored once', async () => {
  const t0 = 1_700_000_370_000;
  const limit = { type: 'error', status: 400, error: { type: 'invalid_request_error', code: 'websocket_connection_limit_reached', message: 'Responses websocket connection limit reached (60 minutes).' } };
  const call = (n: number) => ({ type: 'function_call', call_id: `call_${n}`, name: 'shell', arguments: `{"command":["ls","${n}"]}` });
  const out = (n: number) => ({ type: 'function_call_output', call_id: `call_${n}`, output: `file ${n}` });
  const u = (n: number) => msg('user', `ask ${n}`), said = (n: number) => msg('assistant', `answer ${n}`);
  const a = codexSocket([
    { request: codexCreate('sess-M', [u(1)]), events: codexAnswer('resp_1', [call(1)]) },
    { request: codexCreate('sess-M', [out(1)], { previous_response_id: 'resp_1' }), events: codexAnswer('resp_2', [said(1)]) },
    { request: codexCreate('sess-M', [u(2)], { previous_response_id: 'resp_2' }), events: [limit], closeAfter: true },
  ], t0);
  const b = codexSocket([
    { request: codexCreate('sess-M', [u(1), call(1), out(1), said(1), u(2)]), events: codexAnswer('resp_3', [call(2)]) },
    { request: codexCreate('sess-M', [out(2)], { previous_response_id: 'resp_3' }), events: codexAnswer('resp_4', [said(2)]) },
    { request: codexCreate('sess-M', [u(3)], { previous_response_id: 'resp_4' }), events: [limit], closeAfter: true },
  ], t0 + 100);
  const c = codexSocket([
    { request: codexCreate('sess-M', [u(1), call(1), out(1), said(1), u(2), call(2), out(2), said(2), u(3)]), events: codexAnswer('resp_5', [said(3)]) },
    { request: codexCreate('sess-M', [u(4)], { previous_response_id: 'resp_5' }), events: codexAnswer('resp_6', [said(4)]) },
  ], t0 + 200);
  const expected = [
    `system:${CODEX_INSTRUCTIONS}`, 'user:ask 1', 'assistant:call(call_1)', 'tool:result(call_1 shell)', 'assistant:answer 1',
    'user:ask 2', 'assistant: !error', 'assistant:call(call_2)', 'tool:result(call_2 shell)', 'assistant:answer 2',
    'user:ask 3', 'assistant: !error', 'assistant:answer 3', 'user:ask 4', 'assistant:answer 4',
  ];
  const [a1, a2, a3] = a.client.map((r) => [r.id]), [, b2, b3] = b.client.map((r) => [r.id]), [, c2] = c.client.map((r) => [r.id]);
  const wire = (l: CodexLanes) => [...l.client, ...l.server].sort(byId);
  const inOrder = async (s: Store, n = 3) => { for (const l of [a, b, c]) for (const ch of chunks(wire(l), n)) await feed(s, ch); };
  // the middle socket's last responses arrive after the last socket was assembled (a lagging direction): the last
  // socket's whole history then cuts the line short of what the middle socket shows in the end
  const bLate = b.server.findIndex((r) => r.body!.includes('"resp_4"'));
  const orders: [string, (s: Store) => Promise<void>][] = [
    ['in order', (s) => inOrder(s)],
    ['the middle socket\'s responses late', async (s) => {
      for (const ch of chunks(wire(a), 2)) await feed(s, ch);
      for (const ch of chunks([...b.client, ...b.server.slice(0, bLate)].sort(byId), 2)) await feed(s, ch);
      for (const ch of chunks(wire(c), 2)) await feed(s, ch);
      for (const r of b.server.slice(bLate)) await feed(s, [r]);
    }],
    ['the last socket first, the first last', async (s) => { for (const l of [c, b, a]) for (const ch of chunks(wire(l), 4)) await feed(s, ch); }],
    ['concurrently', async (s) => { await Promise.all([a, b, c].map(async (l) => { for (const ch of chunks(wire(l), 1)) await feed(s, ch); })); }],
    ['re-delivered, the middle socket again at the end', async (s) => {
      for (const l of [a, b, c]) for (const ch of chunks(wire(l), 3)) { await feed(s, ch); await feed(s, ch); }
      for (const ch of chunks(wire(b), 5)) await feed(s, ch);
    }],
  ];
  const results: Conversation[] = [];
  for (const [name, run] of orders) {
    await withStore(async (store) => {
      await feed(store, [a.upgrade, b.upgrade, c.upgrade]);
      await run(store);
      const got = await conv(store, 'openai-ws:sess-M');
      assert.deepEqual(turnTexts(got), expected, name);
      assert.deepEqual(got.turns.filter((t) => t.role !== 'assistant').map((t) => t.source), [a1, a1, a2, a3, b2, b3, c2], `${name}: each turn from the first socket that showed it`);
      assert.equal(got.startedTs, a.client[0].ts, name);
      assert.equal(got.updatedTs, c.server.at(-1)!.ts, name);
      const stored = (await conversationByKey(store, 'openai-ws:sess-M'))!;
      assert.deepEqual(Object.keys(stored._lines!), [a.upgrade.conn, b.upgrade.conn, c.upgrade.conn], `${name}: a line per socket, in the order they started`);
      assert.ok(Object.values(stored._lines!).every((l) => !('turns' in l) && !('rest' in l)), `${name}: no socket's turns stored again (${JSON.stringify(stored._lines)})`);
      // for connectionEnded (which runs when the socket's Connection record is committed): an update that changes nothing of the line
      await connectionEnded(store, b.upgrade.conn, b.client.at(-1)!.ts);
      assert.deepEqual(await conv(store, 'openai-ws:sess-M'), got, `${name}: the middle socket's end changes nothing`);
      results.push(got);
      await rebuildConversations(store);
      assert.deepEqual(await conv(store, 'openai-ws:sess-M'), got, `${name}: rebuilt`);
    });
  }
  const noId = ({ id: _i, ...x }: Conversation) => x;
  for (const r of results.slice(1)) assert.deepEqual(noId(r), noId(results[0]));
});

const ask = (n: number) => msg('user', `ask ${n}`), said = (n: number) => msg('assistant', `answer ${n}`);
/** A codex socket that asks twice (the second continuing the first response) and closes. */
function askedTwice(pck: string, t0: number): CodexLanes {
  return codexSocket([
    { request: codexCreate(pck, [ask(1)]), events: codexAnswer('resp_1', [said(1)]) },
    { request: codexCreate(pck, [ask(2)], { previous_response_id: 'resp_1' }), events: codexAnswer('resp_2', [said(2)]), closeAfter: true },
  ], t0);
}

test('codex: a later socket that re-sends a rewritten history (compaction) shows what it cut away as superseded, and keeps it for a late update of an earlier socket; a conversation stored with every line\'s turns folds on', async () => {
  const t0 = 1_700_000_380_000;
  const a = askedTwice('sess-N', t0);
  // the next socket starts from a compacted history: the first prompt, then a summary
  const summary = msg('assistant', 'summary: asked 1 and 2');
  const b = codexSocket([
    { request: codexCreate('sess-N', [ask(1), summary, ask(3)]), events: codexAnswer('resp_3', [said(3)]) },
  ], t0 + 100);
  // the turns the compaction replaced stay where they were, superseded (~)
  const expected = [`system:${CODEX_INSTRUCTIONS}`, 'user:ask 1', '~assistant:answer 1', '~user:ask 2', 'assistant:summary: asked 1 and 2', 'user:ask 3', 'assistant:answer 3'];
  const late = [...expected.slice(0, 4), '~assistant:answer 2', ...expected.slice(4)];
  const wire = (l: CodexLanes) => [...l.client, ...l.server].sort(byId);
  const aLate = wire(a).findIndex((r) => r.body?.includes('"resp_2"'));
  await withStore(async (store) => {
    await feed(store, [a.upgrade, b.upgrade]);
    await feed(store, wire(a).slice(0, aLate));
    await feed(store, wire(b));
    let stored = (await conversationByKey(store, 'openai-ws:sess-N'))!;
    assert.deepEqual(shownTexts(stored), expected);
    assert.deepEqual(stored._lines![b.upgrade.conn].rest?.map((t) => t.blocks), [[{ type: 'text', text: 'answer 1' }], [{ type: 'text', text: 'ask 2' }]], 'what the rewritten history cut away is kept');
    await feed(store, wire(a).slice(aLate)); // the first socket's last answer and close, late
    const live = await conv(store, 'openai-ws:sess-N');
    assert.deepEqual(shownTexts(live), late);
    stored = (await conversationByKey(store, 'openai-ws:sess-N'))!;
    assert.equal(stored._lines![b.upgrade.conn].rest?.length, 3, 'now with the late answer');
    await rebuildConversations(store);
    assert.deepEqual(await conv(store, 'openai-ws:sess-N'), live, 'rebuilt');

    // as stored before checkpoints: every line with its turns (derived from each socket's state)
    const lineTurns = (conn: string) => deriveWs((storedState(store, conn))._ws!)[0].turns;
    await store.updateConversation('openai-ws:sess-N', (x) => {
      const s = x as StoredConversation;
      const _lines = Object.fromEntries(Object.entries(s._lines!).map(([k, { base: _b, rest: _r, ...l }]) => [k, { ...l, turns: lineTurns(k) }]));
      return { ...s, _lines } as StoredConversation;
    });
    const more = codexSocket([
      { request: codexCreate('sess-N', [ask(1), summary, ask(3), said(3), ask(4)]), events: codexAnswer('resp_4', [said(4)]) },
    ], t0 + 200);
    await feed(store, [more.upgrade, ...wire(more)]);
    const c = await conv(store, 'openai-ws:sess-N');
    assert.deepEqual(shownTexts(c), [...late, 'user:ask 4', 'assistant:answer 4']);
    stored = (await conversationByKey(store, 'openai-ws:sess-N'))!;
    assert.ok(Object.values(stored._lines!).every((l) => !('turns' in l)), 'stored again without them');
    await rebuildConversations(store);
    assert.deepEqual(await conv(store, 'openai-ws:sess-N'), c, 'rebuilt');
  });
});

test('codex: a socket that re-sends the history and then rewrites it itself (compaction after a reconnect) supersedes what an earlier socket showed, as one socket would', async () => {
  const t0 = 1_700_000_390_000;
  const a = askedTwice('sess-R', t0);
  // the next socket re-sends the whole history and goes on, then compacts: a history rewritten after `ask 1`
  const b = codexSocket([
    { request: codexCreate('sess-R', [ask(1), said(1), ask(2), said(2), ask(3)]), events: codexAnswer('resp_3', [said(3)]) },
    { request: codexCreate('sess-R', [ask(1), msg('assistant', 'summary'), ask(4)]), events: codexAnswer('resp_4', [said(4)]) },
  ], t0 + 100);
  const expected = [`system:${CODEX_INSTRUCTIONS}`, 'user:ask 1', '~assistant:answer 1', '~user:ask 2', '~assistant:answer 2', '~user:ask 3', '~assistant:answer 3',
    'assistant:summary', 'user:ask 4', 'assistant:answer 4'];
  const wire = (l: CodexLanes) => [...l.client, ...l.server].sort(byId);
  for (const sockets of [[b], [a, b], [b, a]]) {
    await withStore(async (store) => {
      for (const s of sockets) await feed(store, [s.upgrade, ...wire(s)]);
      const c = await conv(store, 'openai-ws:sess-R');
      assert.deepEqual(shownTexts(c), expected, `${sockets.length} socket(s)`);
      await rebuildConversations(store);
      assert.deepEqual(await conv(store, 'openai-ws:sess-R'), c, 'rebuilt');
    });
  }
});

test('codex: socket closed mid-response → last turn aborted with the folded deltas, earlier turns intact', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-D', 1_700_000_400_000, 'close');
    const key = 'openai-ws:sess-D';
    await feed(store, [l.upgrade]);
    await feed(store, l.client.slice(0, -1));
    await feed(store, l.server);
    const live = await conv(store, key);
    assert.equal(live.turns[7].incomplete, undefined, 'still streaming before the close is seen');
    assert.deepEqual(live.turns[7].blocks, [{ type: 'text', text: 'Only . and ..' }], 'live view shows the deltas so far');
    await feed(store, l.client.slice(-1)); // the close frame
    const c = await conv(store, key);
    assert.deepEqual(noSource(c.turns), expectedCodexTurns('close'));
    assert.equal(c.incomplete, 'aborted');
  });
});

test('codex: a new response.created while the previous response was open marks that one aborted', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-E', 1_700_000_500_000, 'close');
    const server = [...l.server];
    // drop everything after resp_1's first delta, as if the stream was cut, then resp_2 starts
    const cut = server.findIndex((r) => r.body!.includes('function_call_arguments.delta'));
    const resp2 = server.findIndex((r) => r.body!.includes('"resp_2"'));
    await feed(store, [l.upgrade, ...l.client.slice(0, 3)]);
    await feed(store, [...server.slice(0, cut), ...server.slice(resp2, resp2 + 8)]);
    const c = await conv(store, 'openai-ws:sess-E');
    const t = c.turns[3];
    assert.equal(t.incomplete, 'aborted');
    assert.deepEqual(t.blocks, [{ type: 'reasoning', text: '**Listing files** with ls' }, { type: 'tool_call', callId: 'call_1', name: 'shell', arguments: '', argumentsRaw: '' }]);
    assert.deepEqual(c.turns[5].blocks, [{ type: 'text', text: 'Two entries: README.md and src.' }]);
    assert.equal(c.turns[5].incomplete, undefined);
  });
});

test('codex over WebSocket: a request with no previous_response_id re-sends the whole history — only what is new is added, changed instructions shown where they change', async () => {
  await withStore(async (store) => {
    const call = { type: 'function_call', call_id: 'call_9', name: 'shell', arguments: '{"command":["ls"]}' };
    const out = { type: 'function_call_output', call_id: 'call_9', output: 'README.md' };
    const h1 = [msg('user', 'list the files')];
    const h2 = [...h1, call, out, msg('assistant', 'Just README.md.'), msg('user', 'summarise it')];
    const gpt5 = { model: 'gpt-5', instructions: 'You are GPT-5.' };
    const l = codexSocket([
      { request: codexCreate('sess-F', h1), events: codexAnswer('resp_1', [call]) },
      { request: codexCreate('sess-F', [out], { previous_response_id: 'resp_1' }), events: codexAnswer('resp_2', [msg('assistant', 'Just README.md.')]) },
      // after /model codex-rs sends the whole history on the same socket, with that model's instructions
      { request: codexCreate('sess-F', h2, gpt5), events: codexAnswer('resp_3', [msg('assistant', 'A readme.')], 'gpt-5') },
      // and again when the request does not extend the last one (tools changed, say): same instructions
      { request: codexCreate('sess-F', [...h2, msg('assistant', 'A readme.'), msg('user', 'thanks')], gpt5), events: codexAnswer('resp_4', [msg('assistant', 'Welcome.')], 'gpt-5') },
    ], 1_700_000_600_000);
    await feed(store, [l.upgrade, ...[...l.client, ...l.server].sort(byId)]);
    const c = await conv(store, 'openai-ws:sess-F');
    assert.deepEqual(turnTexts(c), [
      `system:${CODEX_INSTRUCTIONS}`, 'user:list the files', 'assistant:call(call_9)', 'tool:result(call_9 shell)', 'assistant:Just README.md.',
      'system:You are GPT-5.', 'user:summarise it', 'assistant:A readme.', 'user:thanks', 'assistant:Welcome.',
    ]);
    const [r1, r2, r3, r4] = l.client.map((r) => [r.id]);
    assert.deepEqual(c.turns.filter((t) => t.role !== 'assistant').map((t) => t.source), [r1, r1, r2, r3, r3, r4], 'each turn from the request that first carried it');
    assert.equal(c.model, 'gpt-5');
  });
});

const EXPECTED_CC: Omit<Turn, 'source'>[] = [
  { role: 'system', blocks: [{ type: 'text', text: "You are Claude Code, Anthropic's official CLI for Claude." }] },
  { role: 'user', blocks: [{ type: 'text', text: '<system-reminder>\nThe date is 2026-11-25.\n</system-reminder>', scaffolding: true }, { type: 'text', text: 'fix the failing test' }] },
  { role: 'assistant', blocks: [
    { type: 'reasoning', text: 'The test fails; read it first.' },
    { type: 'text', text: "I'll read the test." },
    { type: 'tool_call', callId: 'toolu_01', name: 'Read', arguments: { file_path: '/repo/test/a.test.ts' } }],
    usage: { inputTokens: 9312, cachedTokens: 9000, outputTokens: 87, totalTokens: 9399 }, responseId: 'msg_01A', model: 'claude-sonnet-4-5-20250929' },
  { role: 'tool', blocks: [{ type: 'tool_result', callId: 'toolu_01', output: 'expect(add(1, 1)).toBe(3)', name: 'Read' }] },
  { role: 'assistant', blocks: [{ type: 'text', text: 'The expectation is wrong: 1 + 1 is 2.' }],
    usage: { inputTokens: 9340, cachedTokens: 9300, outputTokens: 15, totalTokens: 9355 }, responseId: 'msg_01B', model: 'claude-sonnet-4-5-20250929' },
];

test('Claude Code SSE session: thinking, tool_use from input_json_delta, tool_result paired, usage; side call on another model left out', async () => {
  await withStore(async (store) => {
    const txs = claudeCodeSession(1_700_001_000_000);
    for (const t of [txs[2], txs[0], txs[1]]) await feed(store, [t]); // workers finish in any order
    const c = await conv(store, `anthropic:${CC_SESSION}`);
    assert.deepEqual(noSource(c.turns), EXPECTED_CC);
    assert.deepEqual(c.turns.map((t) => t.source), [[txs[0].id], [txs[0].id], [txs[0].id], [txs[2].id], [txs[2].id]]);
    assert.equal(c.client, 'claude-code');
    assert.equal(c.provider, 'anthropic');
    assert.equal(c.model, 'claude-sonnet-4-5');
  });
});

// Claude Code requests of one session, answered as JSON (sub-agents: haiku, a system prompt of their own)
const ccText = (t: string) => ({ type: 'text', text: t });
const ccUse = (id: string, name: string, input: object) => ({ type: 'tool_use', id, name, input });
const ccResult = (id: string, content: string) => ({ role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content }] });
const ccTx = (ts: number, model: string, messages: object[], content: object[]) => httpTx({
  ts, host: 'api.anthropic.com', path: '/v1/messages', headers: [['User-Agent', 'claude-cli/2.1.332 (external, cli)']],
  req: { model, system: [ccText(model.includes('haiku') ? 'You are a sub-agent.' : 'You are Claude Code.')], messages, metadata: { user_id: `user_x_account_0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0_session_${CC_SESSION}` } },
  resp: { id: `msg_${ts}`, type: 'message', role: 'assistant', model, content, stop_reason: 'end_turn', usage: { input_tokens: 10, output_tokens: 2 } },
});
/** A conversation's roles and, per turn, which of `txs` it came from; its sub-agents' the same. */
const lineShape = (c: Conversation, txs: TransactionRecord[]) => {
  const turns = (list: Turn[]) => list.map((t) => [t.role, t.source.map((id) => txs.findIndex((x) => x.id === id))]);
  return { model: c.model, main: turns(c.turns), subagents: (c.subagents ?? []).map((s) => ({ callId: s.callId, model: s.model, turns: turns(s.turns) })) };
};

test('Claude Code sub-agent: its exchanges are the Agent call\'s line, whatever the order they are assembled in; the parent keeps the session even when the sub-agent\'s history is longer and its prompt repeats the user\'s', async () => {
  const t0 = 1_700_001_200_000;
  const prompt = 'Look around the repo';
  const ask = { role: 'user', content: [ccText(prompt)] };
  const agentCall = [ccUse('toolu_A', 'Agent', { description: 'Look around', prompt, subagent_type: 'Explore' })];
  const ls = [ccUse('toolu_1', 'Bash', { command: 'ls' })], cat = [ccUse('toolu_2', 'Bash', { command: 'cat a' })];
  const txs = [
    ccTx(t0, 'claude-sonnet-4-5', [ask], agentCall),
    ccTx(t0 + 1, 'claude-haiku-4-5', [ask], ls),
    ccTx(t0 + 2, 'claude-haiku-4-5', [ask, { role: 'assistant', content: ls }, ccResult('toolu_1', 'a b')], cat),
    ccTx(t0 + 3, 'claude-haiku-4-5', [ask, { role: 'assistant', content: ls }, ccResult('toolu_1', 'a b'), { role: 'assistant', content: cat }, ccResult('toolu_2', 'x')], [ccText('Found a and b.')]),
    ccTx(t0 + 4, 'claude-sonnet-4-5', [ask, { role: 'assistant', content: agentCall }, ccResult('toolu_A', 'Found a and b.')], [ccText('The repo has a and b.')]),
  ];
  const shape = (c: Conversation) => lineShape(c, txs);
  const want = {
    model: 'claude-sonnet-4-5',
    main: [['system', [0]], ['user', [0]], ['assistant', [0]], ['tool', [4]], ['assistant', [4]]],
    subagents: [{ callId: 'toolu_A', model: 'claude-haiku-4-5', turns: [['system', [1]], ['user', [1]], ['assistant', [1]], ['tool', [2]], ['assistant', [2]], ['tool', [3]], ['assistant', [3]]] }],
  };
  for (const order of [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [3, 0, 4, 1, 2]]) {
    await withStore(async (store) => {
      for (const i of order) await feed(store, [txs[i]]);
      const c = await conv(store, `anthropic:${CC_SESSION}`);
      assert.deepEqual(shape(c), want, `assembled in the order ${order}`);
      assert.deepEqual(c.subagents![0].turns.filter((t) => t.role === 'tool').map((t) => t.blocks[0]), [
        { type: 'tool_result', callId: 'toolu_1', output: 'a b', name: 'Bash' }, { type: 'tool_result', callId: 'toolu_2', output: 'x', name: 'Bash' }]);
      await rebuildConversations(store);
      assert.deepEqual(shape(await conv(store, `anthropic:${CC_SESSION}`)), want, 'rebuilt');
    });
  }
});

test('Claude Code: two sub-agents started by one reply, their requests interleaved, are two lines under their two calls', async () => {
  const t0 = 1_700_001_300_000;
  const ask = { role: 'user', content: [ccText('Find the config and the tests')] };
  const calls = [ccUse('toolu_A', 'Agent', { description: 'config', prompt: 'Find the config' }), ccUse('toolu_B', 'Agent', { description: 'tests', prompt: 'Find the tests' })];
  const sub = (ts: number, p: string, step: 0 | 1) => {
    const first = { role: 'user', content: [ccText(p)] };
    const ls = [ccUse(`${p}-ls`, 'Bash', { command: 'ls' })];
    return step === 0 ? ccTx(ts, 'claude-haiku-4-5', [first], ls)
      : ccTx(ts, 'claude-haiku-4-5', [first, { role: 'assistant', content: ls }, ccResult(`${p}-ls`, 'a b')], [ccText(`${p}: done`)]);
  };
  const txs = [
    ccTx(t0, 'claude-sonnet-4-5', [ask], calls),
    sub(t0 + 1, 'Find the config', 0), sub(t0 + 2, 'Find the tests', 0), sub(t0 + 3, 'Find the tests', 1), sub(t0 + 4, 'Find the config', 1),
    ccTx(t0 + 5, 'claude-sonnet-4-5', [ask, { role: 'assistant', content: calls }, { role: 'user', content: [
      { type: 'tool_result', tool_use_id: 'toolu_A', content: 'config: done' }, { type: 'tool_result', tool_use_id: 'toolu_B', content: 'tests: done' }] }], [ccText('Both found.')]),
  ];
  await withStore(async (store) => {
    for (const i of [2, 5, 0, 4, 1, 3]) await feed(store, [txs[i]]);
    assert.deepEqual(lineShape(await conv(store, `anthropic:${CC_SESSION}`), txs), {
      model: 'claude-sonnet-4-5',
      main: [['system', [0]], ['user', [0]], ['assistant', [0]], ['tool', [5]], ['assistant', [5]]],
      subagents: [
        { callId: 'toolu_A', model: 'claude-haiku-4-5', turns: [['system', [1]], ['user', [1]], ['assistant', [1]], ['tool', [4]], ['assistant', [4]]] },
        { callId: 'toolu_B', model: 'claude-haiku-4-5', turns: [['system', [2]], ['user', [2]], ['assistant', [2]], ['tool', [3]], ['assistant', [3]]] },
      ],
    });
  });
});

test('Claude Code fork sub-agent: it re-sends the parent\'s history up to the call, then the directive; its line starts after the call, and the parent\'s line is not rebased by it', async () => {
  const t0 = 1_700_001_400_000;
  const prompt = 'Run ls';
  const ask = { role: 'user', content: [ccText('Fork one to run ls')] };
  const call = [ccText('Forking.'), ccUse('toolu_F', 'Agent', { description: 'ls', prompt, subagent_type: 'fork' })];
  // the fork's copy of the call drops the text; its result says the fork started, with the directive
  const directive = { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_F', content: [ccText('Fork started.')] }, ccText(`<fork-boilerplate>\nYou are a worker fork.\n</fork-boilerplate>\n\nYour directive: ${prompt}`)] };
  const inherited = [ask, { role: 'assistant', content: [call[1]] }, directive];
  const ls = [ccUse('toolu_L', 'Bash', { command: 'ls' })];
  const txs = [
    ccTx(t0, 'claude-sonnet-4-5', [ask], call),
    ccTx(t0 + 1, 'claude-sonnet-4-5', inherited, ls),
    ccTx(t0 + 2, 'claude-sonnet-4-5', [...inherited, { role: 'assistant', content: ls }, ccResult('toolu_L', 'a b')], [ccText('a and b')]),
    ccTx(t0 + 3, 'claude-sonnet-4-5', [ask, { role: 'assistant', content: call }, ccResult('toolu_F', 'a and b')], [ccText('The fork found a and b.')]),
  ];
  for (const order of [[0, 1, 2, 3], [3, 2, 1, 0]]) {
    await withStore(async (store) => {
      for (const i of order) await feed(store, [txs[i]]);
      assert.deepEqual(lineShape(await conv(store, `anthropic:${CC_SESSION}`), txs), {
        model: 'claude-sonnet-4-5',
        main: [['system', [0]], ['user', [0]], ['assistant', [0]], ['tool', [3]], ['assistant', [3]]],
        subagents: [{ callId: 'toolu_F', model: 'claude-sonnet-4-5', turns: [['user', [1]], ['assistant', [1]], ['tool', [2]], ['assistant', [2]]] }],
      }, `assembled in the order ${order}`);
    });
  }
});

test('Claude Code: a stream cut short leaves the turn aborted with its partial text, earlier turns intact', async () => {
  await withStore(async (store) => {
    const txs = claudeCodeSession(1_700_001_100_000, { abortSecond: true });
    await feed(store, txs);
    const c = await conv(store, `anthropic:${CC_SESSION}`);
    assert.deepEqual(noSource(c.turns.slice(0, 4)), EXPECTED_CC.slice(0, 4));
    assert.deepEqual(noSource(c.turns.slice(4)), [{ role: 'assistant', blocks: [{ type: 'text', text: 'The expectation is wrong: ' }], usage: { inputTokens: 9340, cachedTokens: 9300, outputTokens: 1, totalTokens: 9341 }, responseId: 'msg_01B', model: 'claude-sonnet-4-5-20250929', incomplete: 'aborted' }]);
    assert.equal(c.incomplete, 'aborted');
  });
});

test('chat completions: two parallel streamed tool calls by index, results paired by tool_call_id', async () => {
  await withStore(async (store) => {
    const txs = chatSession(1_700_002_000_000);
    await feed(store, txs);
    const convs = [...allConversations(store).values()];
    assert.equal(convs.length, 1);
    const c = convs[0];
    assert.match(c.key, /^openai-chat:prefix:[0-9a-f]{16}$/);
    assert.equal(c.client, 'aider');
    assert.deepEqual(noSource(c.turns), [
      { role: 'system', blocks: [{ type: 'text', text: 'Act as an expert software developer.' }] },
      { role: 'user', blocks: [{ type: 'text', text: 'What is the weather in Paris and Rome?' }] },
      { role: 'assistant', blocks: [
        { type: 'text', text: 'Checking both.' },
        { type: 'tool_call', callId: 'call_p', name: 'get_weather', arguments: { city: 'Paris' }, argumentsRaw: '{"city":"Paris"}' },
        { type: 'tool_call', callId: 'call_r', name: 'get_weather', arguments: { city: 'Rome' }, argumentsRaw: '{"city":"Rome"}' }],
        usage: { inputTokens: 120, cachedTokens: 64, outputTokens: 40, totalTokens: 160 }, responseId: 'chatcmpl-1', model: 'qwen3-32b' },
      { role: 'tool', blocks: [
        { type: 'tool_result', callId: 'call_p', output: '18°C, sunny', name: 'get_weather' },
        { type: 'tool_result', callId: 'call_r', output: '24°C, cloudy', name: 'get_weather' }] },
      { role: 'assistant', blocks: [{ type: 'text', text: 'Paris 18°C sunny; Rome 24°C cloudy.' }], usage: { inputTokens: 200, outputTokens: 12, totalTokens: 212 }, responseId: 'chatcmpl-2', model: 'qwen3-32b' },
    ]);
  });
});

test('Gemini: streamed thought + functionCall, functionResponse paired by name, usage with thoughts', async () => {
  await withStore(async (store) => {
    const txs = geminiSession(1_700_003_000_000);
    await feed(store, [txs[1]]);
    await feed(store, [txs[0]]);
    const [c] = [...allConversations(store).values()];
    assert.equal(c.client, 'gemini-cli');
    assert.equal(c.provider, 'gemini');
    assert.equal(c.model, 'gemini-2.5-pro');
    assert.deepEqual(noSource(c.turns), [
      { role: 'system', blocks: [{ type: 'text', text: 'You are Gemini CLI.' }] },
      { role: 'user', blocks: [{ type: 'text', text: 'How big is README.md?' }] },
      { role: 'assistant', blocks: [{ type: 'reasoning', text: 'Checking the size' }, { type: 'tool_call', callId: 'stat_file', name: 'stat_file', arguments: { path: 'README.md' } }],
        usage: { inputTokens: 50, cachedTokens: 32, outputTokens: 30, reasoningTokens: 20, totalTokens: 80 }, responseId: 'g1', model: 'gemini-2.5-pro' },
      { role: 'tool', blocks: [{ type: 'tool_result', callId: 'stat_file', name: 'stat_file', output: { size: 1234 } }] },
      { role: 'assistant', blocks: [{ type: 'text', text: 'README.md is 1234 bytes.' }], usage: { inputTokens: 90, outputTokens: 8, totalTokens: 98 }, responseId: 'g2', model: 'gemini-2.5-pro' },
    ]);
  });
});

test('bad data is counted, never thrown', async () => {
  await withStore(async (store) => {
    const l = codexSession('sess-bad', 1_700_004_000_000);
    const junk: WsMessageRecord = { ...l.server[0], id: l.server[0].id, body: '{"type":"response.created", broken' };
    const chat = chatSession(1_700_004_000_100)[0];
    const badChat = { ...chat, reqBody: '{not json' };
    await store.putTransactions([junk, badChat]);
    const m = await assembleRecords(store, [junk, badChat]);
    assert.equal(m.decodeErrors?.dissect_failed, 2);
  });
});

test('a corrupt stored WebSocket record is counted once and passed over: the socket goes on', async () => {
  // The record is not routed to the socket itself (no text to peek at), so the next assembly reads
  // it back from the store past the state's marks: it must be counted and passed over there, once,
  // or every later assembly of the socket would stop at it. (Checked both ways: with the fold
  // finding it bad, as it does, and with a fold made to throw on it, which assemble-ws passes over.)
  const l = codexSession('sess-throws', 1_700_004_100_000);
  const i = l.server.findIndex((r) => r.body?.includes('"response.output_text.delta"'));
  assert.ok(i > 0, 'the script streams a delta');
  // as a corrupt (or foreign) store could hand it back: a text message whose body is no string
  const corrupt = { ...l.server[i], body: 42 } as unknown as WsMessageRecord;
  const wire = (server: WsMessageRecord[]) => [...l.client, ...server].sort(byId);
  const expected = await (async () => {
    let c: Conversation | undefined;
    await withStore(async (store) => {
      await feed(store, [l.upgrade]);
      for (const r of wire(l.server.filter((_, j) => j !== i))) await feed(store, [r]);
      c = conv(store, 'openai-ws:sess-throws');
    });
    return c!;
  })();
  await withStore(async (store) => {
    await feed(store, [l.upgrade]);
    let failed = 0;
    for (const r of wire(l.server.map((r, j) => (j === i ? corrupt : r)))) {
      await store.putTransactions([r]);
      const m = await assembleRecords(store, [r]);
      failed += m.decodeErrors?.dissect_failed ?? 0;
    }
    assert.equal(failed, 1, 'the corrupt record is counted once');
    assert.deepEqual(conv(store, 'openai-ws:sess-throws').turns, expected.turns);
  });
});

test('rebuildConversations gives the same conversations as incremental assembly', async () => {
  await withStore(async (store) => {
    const a = codexSession('sess-R', 1_700_005_000_000, 'close');
    const b = codexSession('sess-S', 1_700_005_000_003);
    const http = [...claudeCodeSession(1_700_005_000_010), ...chatSession(1_700_005_000_020), ...geminiSession(1_700_005_000_030)];
    await feed(store, [a.upgrade, b.upgrade]);
    // incremental: directions and connections in an awkward order
    for (const ch of chunks(b.server, 4)) await feed(store, ch);
    for (const ch of chunks([...a.server, ...a.client].sort(byId), 3)) await feed(store, ch);
    for (const t of [...http].reverse()) await feed(store, [t]);
    await feed(store, b.client);
    const before = allConversations(store);
    assert.equal(before.size, 5);
    const n = await rebuildConversations(store);
    assert.equal(n, 5);
    const after = allConversations(store);
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const [k, c] of before) assert.deepEqual(publicConversation(after.get(k) as StoredConversation), publicConversation(c as StoredConversation), k);
  });
});

test('a long streamed answer: 3000 deltas in small batches fold to exactly the completed text; a 100 KiB prompt is kept whole', async () => {
  await withStore(async (store) => {
    const { WsLane, upgradeTx } = await import('./dissect/session-fixtures.js');
    const { codexCreate } = await import('./dissect/sessions.js');
    const up = upgradeTx('conn-long', 1_700_006_000_000, [['originator', 'codex_cli_rs']]);
    const c = new WsLane(up.conn, up.id, 'client'), s = new WsLane(up.conn, up.id, 'server');
    const prompt = 'x'.repeat(100 * 1024 - 3) + 'end';
    const pieces = Array.from({ length: 3000 }, (_, i) => `w${i} `);
    const full = pieces.join('');
    let ts = 1_700_006_000_001;
    await feed(store, [up, c.msg(ts++, codexCreate('long', [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: prompt }] }]))]);
    const server = [s.msg(ts++, { type: 'response.created', response: { id: 'rl' } }), s.msg(ts++, { type: 'response.output_item.added', output_index: 0, item: { type: 'message', role: 'assistant', content: [] } })];
    for (const d of pieces) server.push(s.msg(ts, { type: 'response.output_text.delta', output_index: 0, content_index: 0, delta: d }));
    for (const b of chunks(server, 16)) await feed(store, b);
    const key = 'openai-ws:long';
    assert.deepEqual((await conv(store, key)).turns[2].blocks, [{ type: 'text', text: full }], 'live view: the deltas so far');
    await feed(store, [s.msg(ts++, { type: 'response.completed', response: { id: 'rl', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: full }] }], usage: { input_tokens: 25000, output_tokens: 6000, total_tokens: 31000 } } })]);
    const done = await conv(store, key);
    assert.deepEqual(done.turns[1].blocks, [{ type: 'text', text: prompt }]);
    assert.deepEqual(done.turns[2].blocks, [{ type: 'text', text: full }]);
    assert.deepEqual(done.turns[2].usage, { inputTokens: 25000, outputTokens: 6000, totalTokens: 31000 });
  });
});

test('live (throttled) assembly: skipped delta batches fold from the worker\'s memory — or from the store after a gap — to the exact text', async () => {
  const { WsLane, upgradeTx } = await import('./dissect/session-fixtures.js');
  const { codexCreate } = await import('./dissect/sessions.js');
  for (const gap of [false, true]) {
    await withStore(async (real) => {
      const readBack = new Set<string>(); // record ids the assembler's catch-up read from the store
      const store = new Proxy(real, {
        // counts records read back from the store by the assembler's catch-up
        get: (t, p) => (p === 'wsMessagesAfter' ? (...a: unknown[]) => { const got = (t.wsMessagesAfter as (...x: unknown[]) => Iterable<WsMessageRecord>)(...a); for (const r of got) readBack.add(r.id); return got; } : Reflect.get(t, p)),
      }) as Store;
      const live = async (records: TransactionRecord[]) => {
        await store.putTransactions(records);
        await assembleRecords(store, records, { throttle: true });
      };
      const up = upgradeTx(`conn-live-${gap}`, 1_700_007_000_000, [['originator', 'codex_cli_rs']]);
      const c = new WsLane(up.conn, up.id, 'client'), s = new WsLane(up.conn, up.id, 'server');
      let ts = 1_700_007_000_001;
      await live([up, c.msg(ts++, codexCreate('live', [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'go' }] }]))]);
      const pieces = Array.from({ length: 2000 }, (_, i) => `w${i} `);
      const server = [s.msg(ts++, { type: 'response.created', response: { id: 'rv' } }), s.msg(ts++, { type: 'response.output_item.added', output_index: 0, item: { type: 'message', role: 'assistant', content: [] } })];
      for (const d of pieces) server.push(s.msg(ts, { type: 'response.output_text.delta', output_index: 0, content_index: 0, delta: d }));
      readBack.clear();
      const batches = chunks(server, 10);
      for (let i = 0; i < batches.length; i++) {
        // gap: one batch committed by another worker that never assembled it
        if (gap && i === 50) await store.putTransactions(batches[i]);
        else await live(batches[i]);
      }
      const key = 'openai-ws:live';
      const text = async () => ((await conv(store, key)).turns.at(-1)?.blocks[0] as { text?: string } | undefined)?.text;
      // the trailing assembly folds what the last skips left
      await waitFor(async () => (await text()) === pieces.join(''), 'the live view catches up with every delta', 5000);
      // Without a gap only a trailing assembly that fires between a batch's commit and its hand-over
      // to the assembler reads that batch from the store (correct, and rare); the rest comes from
      // memory. After a gap, everything past the state's mark is read from the store once.
      if (gap) assert.ok(batches[50].every((r) => readBack.has(r.id)), 'the batch nobody assembled here is read from the store');
      else assert.ok(readBack.size <= 200, `${readBack.size} of 2,000 skipped records read back from the store`);
      await live([s.msg(ts++, { type: 'response.completed', response: { id: 'rv', output: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: pieces.join('') }] }] } })]);
      const done = await conv(store, key);
      assert.deepEqual(done.turns.slice(-2).map((t) => t.role), ['user', 'assistant']);
      assert.deepEqual(done.turns.at(-1)!.blocks, [{ type: 'text', text: pieces.join('') }]);
      assert.equal(done.incomplete, undefined);
    });
  }
});

test('live (throttled) assembly: a response\'s items and parts added and done are paced like its deltas; its start and end are assembled at once', async () => {
  const { WsLane, upgradeTx } = await import('./dissect/session-fixtures.js');
  const { codexCreate } = await import('./dissect/sessions.js');
  await withStore(async (store) => {
    const live = async (records: TransactionRecord[]) => {
      await store.putTransactions(records);
      await assembleRecords(store, records, { throttle: true });
    };
    const up = upgradeTx('conn-items', 1_700_008_000_000, [['originator', 'codex_cli_rs']]);
    const c = new WsLane(up.conn, up.id, 'client'), s = new WsLane(up.conn, up.id, 'server');
    let ts = 1_700_008_000_001;
    const version = () => storedState(store, up.conn)._v;
    await live([up, c.msg(ts++, codexCreate('items', [msg('user', 'go')]))]);
    await live([s.msg(ts++, { type: 'response.created', response: { id: 'ri' } })]);
    const atStart = version();
    const item = { type: 'message', id: 'm1', role: 'assistant', content: [{ type: 'output_text', text: 'Done.' }] };
    for (const e of [
      { type: 'response.output_item.added', output_index: 0, item: { ...item, content: [] } },
      { type: 'response.content_part.added', output_index: 0, content_index: 0, part: { type: 'output_text', text: '' } },
      { type: 'response.output_text.delta', output_index: 0, content_index: 0, delta: 'Done.' },
      { type: 'response.output_text.done', output_index: 0, content_index: 0, text: 'Done.' },
      { type: 'response.content_part.done', output_index: 0, content_index: 0, part: { type: 'output_text', text: 'Done.' } },
      { type: 'response.output_item.done', output_index: 0, item },
    ]) await live([s.msg(ts++, e)]);
    // (at most one: the pace allows one a quarter of a second after the start, on a slow machine)
    const beforeEnd = version()!;
    assert.ok(beforeEnd - atStart! <= 1, `six streamed events moments after the response started: ${beforeEnd - atStart!} assemblies`);
    await live([s.msg(ts++, { type: 'response.completed', response: { id: 'ri', output: [item] } })]);
    assert.equal(version(), beforeEnd + 1, 'the end: assembled at once, with what was skipped');
    assert.deepEqual(turnTexts(await conv(store, 'openai-ws:items')).slice(-2), ['user:go', 'assistant:Done.']);
  });
});

test('a rebuild removes the conversations no stored record rebuilds (the rules or the records that made them are gone)', async () => {
  const { store, done } = await testStore();
  try {
    await feed(store, chatSession(1_000));
    const built = allConversations(store);
    assert.equal(built.size, 1);
    // as if built live under dissect rules a rebuild no longer has, or from records since purged
    await store.updateConversation('anthropic:gone', () => ({ id: conversationId('anthropic:gone'), key: 'anthropic:gone', client: 'claude-code', provider: 'anthropic', startedTs: 1, updatedTs: 2, turns: [] }));
    assert.equal(allConversations(store).size, 2);
    await rebuildConversations(store);
    assert.deepEqual([...allConversations(store).keys()], [...built.keys()]);
    assert.equal(store.getConversationByKey('anthropic:gone'), undefined);
    assert.equal(store.listConversations({ client: 'claude-code' }).items.length, 0, 'its recency entries went with it');
  } finally {
    await done();
  }
});
