// `greytap conversations --format markdown`: roles, folded scaffolding, tool calls and results
// fenced so their content cannot break out, usage and sources.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conversationMarkdown } from '../../../src/api/conversation-markdown.js';
import type { Conversation } from '../../../src/records.js';

test('conversation rendered as Markdown', () => {
  const c: Conversation = {
    id: 'abc', key: 'k', client: 'codex', provider: 'openai-ws', model: 'gpt-5-codex', startedTs: 0, updatedTs: 1000, incomplete: 'aborted',
    turns: [
      { role: 'user', blocks: [{ type: 'text', text: '<environment_context>\n<cwd>/r</cwd>\n</environment_context>', scaffolding: true }, { type: 'text', text: 'list files' }], source: ['01'] },
      { role: 'assistant', blocks: [{ type: 'reasoning', text: 'Plan\nthen act' }, { type: 'tool_call', callId: 'c1', name: 'shell', arguments: { command: ['ls'] } }], usage: { inputTokens: 10, cachedTokens: 4, outputTokens: 3, reasoningTokens: 1, totalTokens: 13 }, source: ['02', '09'] },
      { role: 'tool', blocks: [{ type: 'tool_result', callId: 'c1', name: 'shell', output: 'a\n```\nb' }], source: ['10'] },
      { role: 'assistant', blocks: [{ type: 'text', text: 'Par' }], incomplete: 'aborted', source: ['11'] },
      { role: 'user', blocks: [{ type: 'text', text: 'summarised away' }], superseded: true, source: ['12'] },
    ],
  };
  const md = conversationMarkdown(c);
  assert.match(md, /^# Conversation abc\n/);
  assert.match(md, /- client: codex\n- provider: openai-ws\n- model: gpt-5-codex\n/);
  assert.match(md, /- incomplete: aborted/);
  assert.match(md, /## 1\. User\n\n<details><summary>scaffolding: &lt;environment_context><\/summary>/);
  assert.match(md, /\nlist files\n/);
  assert.match(md, /> Plan\n> then act/);
  assert.match(md, /\*\*tool call\*\* `shell` \(c1\)\n\n```json\n\{\n  "command": \[\n    "ls"\n  \]\n\}\n```/);
  assert.match(md, /_usage: input 10 \(cached 4\), output 3 \(reasoning 1\), total 13_/);
  assert.match(md, /\*\*tool result\*\* `shell` \(c1\)\n\n````\na\n```\nb\n````/, 'fence longer than the content\'s backticks');
  assert.match(md, /## 4\. Assistant \(incomplete: aborted\)/);
  assert.match(md, /## 5\. User \(superseded: a later history no longer carries it\)\n\nsummarised away\n/);
  assert.match(md, /<sub>source: 02, 09<\/sub>/);
});

test('a sub-agent\'s turns follow the conversation\'s, under the tool call that started it', () => {
  const c: Conversation = {
    id: 'abc', key: 'k', client: 'claude-code', provider: 'anthropic', model: 'claude-sonnet-4-5', startedTs: 0, updatedTs: 1000,
    turns: [
      { role: 'user', blocks: [{ type: 'text', text: 'use a sub-agent' }], source: ['01'] },
      { role: 'assistant', blocks: [{ type: 'tool_call', callId: 'toolu_1', name: 'Agent', arguments: { prompt: 'run it' } }], source: ['01'] },
    ],
    subagents: [{ callId: 'toolu_1', model: 'claude-haiku-5-5', turns: [
      { role: 'user', blocks: [{ type: 'text', text: 'run it' }], source: ['02'] },
      { role: 'assistant', blocks: [{ type: 'text', text: 'done' }], source: ['02'] },
    ] }],
  };
  const md = conversationMarkdown(c);
  assert.doesNotMatch(md, /started by/, 'a sub-agent under a call is not a conversation of its own');
  assert.match(conversationMarkdown({ ...c, subagents: undefined, parent: 'p1' }), /- model: claude-sonnet-4-5\n- a sub-agent, started by conversation p1\n/);
  assert.match(md, /## 2\. Assistant\n\n\*\*tool call\*\* `Agent` \(toolu_1\)[\s\S]*\n## Sub-agent of tool call toolu_1 \(claude-haiku-5-5\)\n\n### 1\. User\n\nrun it\n[\s\S]*### 2\. Assistant\n\ndone\n/);
});

test('a tool result with hundreds of thousands of backtick runs still renders, fenced past its longest run', () => {
  const output = '`x'.repeat(200_000) + '````y';
  const c: Conversation = {
    id: 'big', key: 'k', client: 'codex', provider: 'openai-ws', startedTs: 0, updatedTs: 0,
    turns: [{ role: 'tool', blocks: [{ type: 'tool_result', callId: 'c1', name: 'shell', output }], source: ['01'] }],
  };
  const md = conversationMarkdown(c);
  assert.ok(md.includes('`````\n' + output + '\n`````'), 'a fence of five: one longer than the four-backtick run');
});

test('captured text reaches the terminal without its control characters, and a name or model cannot leave its code span or add HTML', () => {
  const c: Conversation = {
    id: 'abc', key: 'k', client: 'codex', provider: 'openai-ws', model: 'm<img src=x onerror=alert(1)>', startedTs: 0, updatedTs: 1000,
    turns: [
      { role: 'user', blocks: [{ type: 'text', text: 'title \x1b]0;PWNED\x07 clip \x1b]52;c;cHduZWQ=\x07 clear \x1b[2J line1\r\nline2 \x9b31m' }], source: ['01'] },
      { role: 'assistant', blocks: [{ type: 'tool_call', callId: 'c<1>', name: 'sh` <img src=x onerror=alert(7)> `', arguments: {} }], error: 'boom <b>', source: ['02'] },
      { role: 'tool', blocks: [{ type: 'tool_result', callId: 'c<1>', name: '`x', output: 'out\x1b[31mred' }], source: ['03'] },
    ],
  };
  const md = conversationMarkdown(c);
  assert.doesNotMatch(md, /[\x00-\x08\x0b-\x1f\x7f-\x9f]/, 'no control character but tab and newline');
  assert.match(md, /title \\u001b\]0;PWNED\\u0007 clip \\u001b\]52;c;cHduZWQ=\\u0007 clear \\u001b\[2J line1\nline2 \\u009b31m/);
  assert.match(md, /out\\u001b\[31mred/);
  // inside a code span a tag is text (CommonMark); the span's delimiter is longer than any run in the name
  assert.ok(md.includes('**tool call** `` sh` <img src=x onerror=alert(7)> ` `` (c&lt;1>)'), 'the name in a longer code span');
  assert.ok(md.includes('**tool result** `` `x `` (c&lt;1>)'));
  assert.equal(md.split('<img').length, 2, 'the only tag is the one inside the code span');
  assert.match(md, /- model: m&lt;img src=x onerror=alert\(1\)>/);
  // a blank line in a name would end the paragraph, code span and all
  const md2 = conversationMarkdown({ ...c, turns: [{ role: 'assistant', blocks: [{ type: 'tool_call', callId: 'c', name: 'run\n\n<script>x</script>\n', arguments: {} }], source: ['04'] }] });
  assert.ok(md2.includes('**tool call** `run  <script>x</script> ` (c)'), md2);
  assert.match(md, /\*\*error:\*\* boom &lt;b>/);
});
