// What real coding agents sent, replayed. Each fixture in ./fixtures was captured by greytap from
// the real client (bench/agents.sh: the client's own binary through `greytap serve`, against
// bench/agent-origin.ts) and saved by bench/agent-fixture.ts. Here every recorded request goes again
// through the real proxy (CONNECT, TLS interception, worker pool, LMDB) to the fake origin, which
// answers with the recorded response, and the conversation greytap assembles is checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, type Greytap } from '../helpers/harness.js';
import { conversationId } from '../../src/workers/assemble.js';
import type { Conversation } from '../../src/records.js';
import { HOP_HEADERS, type AgentFixture } from '../../bench/agent-fixture.js';
import { postJson, startLlmHttpOrigin, type LlmHttpOrigin } from './llm-http-origin.js';

const pki = makeTestPki();
let g: Greytap;
let llm: LlmHttpOrigin;

before(async () => {
  llm = await startLlmHttpOrigin(pki);
  g = await startGreytap(['--upstream-ca', pki.caPath, ...['api.anthropic.test', 'gemini.test', 'openai.test'].flatMap((h) => ['--map', `${h}:443=127.0.0.1:${llm.port}`])]);
});

after(async () => {
  await llm?.close();
  await g?.stop();
});

function fixture(name: string): AgentFixture {
  return JSON.parse(readFileSync(fileURLToPath(new URL(`../../../test/conversations/fixtures/${name}`, import.meta.url)), 'utf8'));
}

/** Sends the fixture's requests in order to `host`; the origin answers each with its recorded response. Returns the transactions' request bodies. */
async function replay(f: AgentFixture, host: string, route = `${host} ${f.exchanges[0].path.split('?')[0]}`): Promise<any[]> {
  let n = 0;
  llm.scripts.set(route, () => {
    const x = f.exchanges[n++];
    const type = x.respHeaders.find(([k]) => k.toLowerCase() === 'content-type')?.[1] ?? 'application/json';
    return { recorded: { status: x.status, contentType: type, body: x.respBody } };
  });
  for (const x of f.exchanges) {
    const headers = Object.fromEntries(x.reqHeaders.filter(([k]) => !HOP_HEADERS.has(k.toLowerCase())));
    const r = await postJson(g, host, x.path, x.reqBody, headers);
    assert.equal(r.status, x.status);
    assert.equal(r.body, x.respBody, 'the client got the recorded response unchanged');
  }
  return f.exchanges.map((x) => JSON.parse(x.reqBody));
}

async function conversationOf(key: string, done: (c: Conversation) => boolean): Promise<Conversation> {
  let last: Conversation | undefined;
  try {
    await waitFor(async () => {
      await g.drain();
      last = await apiGet<Conversation>(g, `/api/conversations/${conversationId(key)}`).catch(() => undefined);
      return last && done(last);
    }, `conversation ${key}`, 10_000);
  } catch (e) {
    if (!last) throw e;
  }
  return last!;
}

/**
 * The conversations once `ready` holds of them (clients without a session id are keyed by their
 * opening, so their conversation is found by what it is, not by its key).
 */
async function conversationsWhen(what: string, ready: (all: Conversation[]) => boolean): Promise<Conversation[]> {
  let convs: Conversation[] = [];
  await waitFor(async () => {
    await g.drain();
    convs = (await apiGet(g, '/api/conversations?limit=100')).items;
    return ready(convs);
  }, what, 10_000).catch(() => assert.fail(`${what}: not in ${JSON.stringify(convs.map((c) => [c.client, c.provider, c.model, c.turns.length]))}`));
  return convs;
}

/**
 * claude -p with one Bash call → one conversation: prompt, text + tool call, result, answer. `tool`
 * gives the tool turn's blocks from the recorded tool_result (2.1.332 appends a reminder to it).
 */
async function claudeBash(name: string, tool: (result: any, callId: string) => object[], answer: (result: any) => string): Promise<void> {
  const f = fixture(name);
  const [first, second] = await replay(f, 'api.anthropic.test', 'api.anthropic.test /v1/messages');
  const session = JSON.parse(first.metadata.user_id).session_id;
  const call = second.messages[1].content.find((b: any) => b.type === 'tool_use');
  const result = second.messages[2].content[0];

  const conv = await conversationOf(`anthropic:${session}`, (c) => c.turns.length >= 5);
  assert.equal(conv.client, 'claude-code');
  assert.equal(conv.model, 'claude-sonnet-4-5');
  assert.deepEqual(conv.turns.map((t) => t.role), ['system', 'user', 'assistant', 'tool', 'assistant'], 'every request continues the same line');
  const [sys, user, asked, toolTurn, answered] = conv.turns;
  // Claude Code's first system block is a billing header whose cch= changes with every request: not part of the prompt
  assert.match(first.system[0].text, /^x-anthropic-billing-header: .*cch=/);
  assert.notEqual(first.system[0].text, second.system[0].text);
  assert.deepEqual(sys.blocks.map((b: any) => b.text), first.system.slice(1).map((b: any) => b.text));
  assert.deepEqual(user.blocks.filter((b: any) => !b.scaffolding).map((b: any) => b.text), ['Run echo hi and tell me what it printed']);
  assert.deepEqual(asked.blocks, [
    { type: 'text', text: 'I will run it.' },
    { type: 'tool_call', callId: call.id, name: 'Bash', arguments: { command: 'echo hi', description: 'Print hi' } },
  ]);
  assert.deepEqual(toolTurn.blocks, tool(result, call.id));
  assert.deepEqual(answered.blocks, [{ type: 'text', text: answer(result) }]);
  const ids = (await apiGet(g, '/api/transactions?kind=HTTP&host=api.anthropic.test&limit=100')).items.map((t: any) => t.id).sort();
  const [tx1, tx2] = ids.slice(-2);
  assert.deepEqual(conv.turns.map((t) => t.source), [[tx1], [tx1], [tx1], [tx2], [tx2]]);
}

test('claude-code 2.1.197: -p with one Bash call → one conversation: prompt, text + tool call, result, answer', async () => {
  await claudeBash('claude-code-bash.json', (result, callId) => {
    assert.match(String(result.content), /^hi\b/);
    return [{ type: 'tool_result', callId, output: result.content, name: 'Bash' }];
  }, (result) => `The command printed: ${String(result.content).trim()}`);
});

test('claude-code 2.1.332: the reminder it appends to the Bash output is scaffolding of the tool turn, the output is "hi"', async () => {
  await claudeBash('claude-code-2.1.332-bash.json', (result, callId) => {
    const [output, reminder] = String(result.content).split('\n\n');
    assert.equal(output, 'hi');
    assert.match(reminder, /^<system-reminder>\n[\s\S]*\n<\/system-reminder>$/);
    return [{ type: 'tool_result', callId, output: 'hi', name: 'Bash' }, { type: 'text', text: reminder, scaffolding: true }];
  }, () => 'The command printed: hi');
});

test('gemini-cli 0.61.0: -p with one shell call → one conversation: its session context is scaffolding, the call and its result pair up', async () => {
  const f = fixture('gemini-cli-0.61.0-shell.json');
  const [first, second] = await replay(f, 'gemini.test');
  const call = second.contents[1].parts.find((p: any) => p.functionCall).functionCall;
  const response = second.contents[2].parts[0].functionResponse;
  const whole = (c: Conversation) => c.provider === 'gemini' && c.turns.length >= 5;
  const conv = (await conversationsWhen('the gemini conversation', (all) => all.some(whole))).find(whole)!;
  assert.equal(conv.client, 'gemini-cli');
  assert.equal(conv.model, 'gemini-2.5-pro');
  assert.deepEqual(conv.turns.map((t) => t.role), ['system', 'user', 'assistant', 'tool', 'assistant']);
  const [sys, user, asked, tool, answer] = conv.turns;
  assert.deepEqual(sys.blocks.map((b: any) => b.text), first.systemInstruction.parts.map((p: any) => p.text));
  assert.match(first.contents[0].parts[0].text, /^<session_context>\nThis is the Gemini CLI/);
  assert.deepEqual(user.blocks, [{ type: 'text', text: first.contents[0].parts[0].text, scaffolding: true }, { type: 'text', text: 'Run echo hi and tell me what it printed' }]);
  assert.equal(asked.blocks.length, 2);
  assert.deepEqual(asked.blocks[0], { type: 'text', text: 'I will run it.' });
  assert.deepEqual(tool.blocks.length, 1);
  const [callBlock, resultBlock] = [asked.blocks[1] as any, tool.blocks[0] as any];
  assert.deepEqual([callBlock.type, callBlock.name, callBlock.arguments], ['tool_call', 'run_shell_command', { command: 'echo hi' }]);
  assert.deepEqual([resultBlock.type, resultBlock.name, resultBlock.output], ['tool_result', 'run_shell_command', response.response]);
  assert.equal(resultBlock.callId, callBlock.callId, 'the result answers the call');
  assert.equal(call.id, response.id);
  assert.match(String(response.response.output), /Output: hi/);
  assert.match((answer.blocks[0] as any).text, /^The command printed: .*Output: hi/s);
});

test('opencode 1.18.33: run with one bash call → one conversation (no session id: keyed by its opening); its title request is a conversation of its own', async () => {
  const f = fixture('opencode-1.18.33-bash.json');
  const [title, first, second] = await replay(f, 'api.anthropic.test');
  assert.match(title.messages[0].content[0].text, /^Generate a title/);
  const call = second.messages[1].content.find((b: any) => b.type === 'tool_use');
  const result = second.messages[2].content.find((b: any) => b.type === 'tool_result');
  const mine = (all: Conversation[], model: string) => all.filter((c) => c.client === 'opencode' && c.model === model);
  const convs = await conversationsWhen('the opencode conversations', (all) => mine(all, 'claude-sonnet-4-5').some((c) => c.turns.length >= 5) && mine(all, title.model).length > 0);
  const [conv] = mine(convs, 'claude-sonnet-4-5');
  assert.equal(mine(convs, 'claude-sonnet-4-5').length, 1, 'both turns in one conversation');
  assert.deepEqual(conv.turns.map((t) => t.role), ['system', 'user', 'assistant', 'tool', 'assistant']);
  const [sys, user, asked, tool, answer] = conv.turns;
  assert.deepEqual(sys.blocks.map((b: any) => b.text), first.system.map((b: any) => b.text));
  assert.deepEqual(user.blocks, [{ type: 'text', text: first.messages[0].content[0].text }]);
  assert.deepEqual(asked.blocks, [
    { type: 'text', text: 'I will run it.' },
    { type: 'tool_call', callId: call.id, name: 'bash', arguments: { command: 'echo hi', description: 'Print hi' } },
  ]);
  assert.deepEqual(tool.blocks, [{ type: 'tool_result', callId: call.id, output: result.content, name: 'bash' }]);
  assert.deepEqual(answer.blocks, [{ type: 'text', text: 'The command printed: hi' }]);
  assert.equal(mine(convs, title.model).length, 1);
});

test('qwen-code 0.15.10: -p with one shell call over Chat Completions → one conversation; its context message is scaffolding, the tool\'s text parts are its output', async () => {
  const f = fixture('qwen-code-0.15.10-shell.json');
  const [first, second] = await replay(f, 'openai.test');
  const call = second.messages[4].tool_calls[0];
  const result = second.messages[5];
  assert.equal(result.role, 'tool');
  assert.deepEqual(result.content.map((p: any) => p.type), ['text'], 'the tool message\'s content is text parts');
  const whole = (c: Conversation) => c.client === 'qwen-code' && c.turns.length >= 7;
  const conv = (await conversationsWhen('the qwen-code conversation', (all) => all.some(whole))).find(whole)!;
  assert.equal(conv.provider, 'openai-chat');
  assert.equal(conv.model, 'qwen3-coder-plus');
  assert.deepEqual(conv.turns.map((t) => t.role), ['system', 'user', 'assistant', 'user', 'assistant', 'tool', 'assistant']);
  const [, context, , prompt, asked, tool, answer] = conv.turns;
  assert.match(first.messages[1].content[0].text, /^This is the Qwen Code\. We are setting up the context for our chat\./);
  assert.deepEqual(context.blocks, [{ type: 'text', text: first.messages[1].content[0].text, scaffolding: true }]);
  assert.deepEqual(prompt.blocks, [{ type: 'text', text: 'Run echo hi and tell me what it printed' }]);
  assert.deepEqual(asked.blocks, [
    { type: 'text', text: 'I will run it.' },
    { type: 'tool_call', callId: call.id, name: 'run_shell_command', arguments: { command: 'echo hi' }, argumentsRaw: call.function.arguments },
  ]);
  assert.deepEqual(tool.blocks, [{ type: 'tool_result', callId: call.id, output: result.content[0].text, name: 'run_shell_command' }]);
  assert.match(result.content[0].text, /Output: hi/);
  assert.match((answer.blocks[0] as any).text, /^The command printed: Command: echo hi/);
});

test('claude-code 2.1.332: a sub-agent (Agent tool, on haiku, its line longer than its parent\'s) is the call\'s sub-agent; the session\'s line stays the parent\'s', async () => {
  const f = fixture('claude-code-2.1.332-subagent.json');
  const bodies = await replay(f, 'api.anthropic.test', 'api.anthropic.test /v1/messages');
  const [parent1, , , , , parent2] = bodies;
  const session = JSON.parse(parent1.metadata.user_id).session_id;
  const call = parent2.messages[1].content.find((b: any) => b.type === 'tool_use');
  assert.equal(call.name, 'Agent');
  const subBodies = bodies.filter((b) => b.model !== parent1.model);
  assert.equal(subBodies.length, 4);
  assert.ok(subBodies.every((b) => JSON.parse(b.metadata.user_id).session_id === session), 'the sub-agent\'s requests carry the session\'s id');
  assert.ok(subBodies[3].messages.length > parent2.messages.length, 'its history is the longer one');
  assert.ok(subBodies[3].messages.some((m: any) => m.role === 'system'), 'it sends system messages among its turns');

  const conv = await conversationOf(`anthropic:${session}`, (c) => c.turns.length >= 5 && (c.subagents?.[0]?.turns.length ?? 0) >= 13);
  assert.equal(conv.model, parent1.model);
  assert.deepEqual(conv.turns.map((t) => t.role), ['system', 'user', 'assistant', 'tool', 'assistant']);
  assert.deepEqual(conv.turns[1].blocks.filter((b: any) => !b.scaffolding).map((b: any) => b.text), ['Use a subagent to run echo hi and tell me what it printed']);
  assert.deepEqual(conv.turns[2].blocks[1], { type: 'tool_call', callId: call.id, name: 'Agent', arguments: call.input });
  assert.equal((conv.turns[3].blocks[0] as any).callId, call.id);

  assert.equal(conv.subagents?.length, 1);
  const [sub] = conv.subagents!;
  assert.equal(sub.callId, call.id);
  assert.equal(sub.model, subBodies[0].model);
  assert.deepEqual(sub.turns.map((t) => t.role), ['system', 'user', 'system', 'assistant', 'tool', 'system', 'assistant', 'tool', 'system', 'assistant', 'tool', 'system', 'assistant']);
  assert.deepEqual(sub.turns[1].blocks.filter((b: any) => !b.scaffolding).map((b: any) => b.text), [call.input.prompt]);
  const bash = sub.turns.flatMap((t) => t.blocks).filter((b: any) => b.type === 'tool_call');
  assert.deepEqual(bash.map((b: any) => [b.name, b.arguments.command]), [['Bash', 'echo hi'], ['Bash', 'echo hi'], ['Bash', 'echo hi']]);
  assert.deepEqual(sub.turns.filter((t) => t.role === 'tool').map((t) => (t.blocks[0] as any).output), ['hi', 'hi', 'hi']);
  assert.deepEqual((sub.turns[12].blocks[0] as any).text, 'The command printed: hi');

  const ids = (await apiGet(g, '/api/transactions?kind=HTTP&host=api.anthropic.test&limit=100')).items.map((t: any) => t.id).sort().slice(-6);
  assert.deepEqual([...new Set(conv.turns.flatMap((t) => t.source))].sort(), [ids[0], ids[5]], 'the parent\'s turns come from its two requests');
  assert.deepEqual([...new Set(sub.turns.flatMap((t) => t.source))].sort(), ids.slice(1, 5), 'the sub-agent\'s from its four');
});
