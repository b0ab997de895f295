// The dashboard in headless Chromium against the real API: the activity log lists stored records,
// a live record arrives over SSE, a click shows headers and bodies, the 101 shows its WebSocket
// messages, and the conversations tab lists and opens a conversation. Skipped without Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { chromium } from 'playwright-core';
import { openStore } from '../../src/store/lmdb.js';
import { startApi, RecordEvents } from '../../src/api/server.js';
import { registry } from '../../src/metrics.js';
import { conn, http, tempDir, ws } from '../store/fixtures.js';

const CHROMIUM = '/usr/bin/chromium';

test('dashboard: activity log, live events, transaction detail, WebSocket messages, conversations', { skip: !existsSync(CHROMIUM) && 'no /usr/bin/chromium' }, async (t) => {
  const store = openStore(tempDir(t));
  const events = new RecordEvents();
  const server = await startApi({ host: '127.0.0.1', port: 0, store, registry, caPem: 'pem', health: () => true, events });
  t.after(async () => { await new Promise<void>((r) => server.close(() => r())); await store.close(); });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const c = conn();
  await store.putConnection(c);
  const up = http(c.id, { status: 101, method: 'GET', path: '/v1/realtime', reqBody: undefined, respBody: undefined });
  const post = http(c.id, { path: '/v1/responses', respBody: '{"answer":"<b>not html</b>"}' });
  await store.putTransactions([up, post, ws(c.id, up.id, 'client', 0, { body: '{"type":"response.create"}' }), ws(c.id, up.id, 'server', 0, { body: '{"type":"response.done"}' })]);
  await store.updateConversation('k', () => ({ id: '', key: 'k', client: 'codex', provider: 'openai-ws', model: 'gpt-5', startedTs: 1, updatedTs: 2,
    turns: [{ role: 'user', blocks: [{ type: 'text', text: 'hello there' }], source: [] }, { role: 'assistant', blocks: [{ type: 'tool_call', callId: 'c1', name: 'shell', arguments: { cmd: 'ls' } }], source: [] },
      { role: 'user', blocks: [{ type: 'text', text: 'before the compaction' }], source: [], superseded: true }],
    subagents: [{ callId: 'c1', model: 'gpt-5-mini', turns: [{ role: 'user', blocks: [{ type: 'text', text: 'the sub-agent was asked' }], source: [] }] }] }));
  const parentId = store.getConversationByKey('k')!.id;
  await store.updateConversation('k2', () => ({ id: '', key: 'k2', client: 'claude-code', provider: 'anthropic', startedTs: 1, updatedTs: 3, turns: [], parent: parentId }));
  await store.updateConversation('k', (c) => ({ ...c!, updatedTs: 4 })); // created first, updated last

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] }); // playwright gives it a fresh temporary profile
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/');
  await page.locator('#status', { hasText: 'live' }).waitFor();
  await page.locator(`tr.row[data-id="${post.id}"]`).waitFor();
  assert.equal(await page.locator('tr.row').count(), 4);

  const live = http(c.id, { path: '/v1/live-one' });
  await store.putTransactions([live]);
  events.committed([live.id]);
  await page.locator('tr.row', { hasText: '/v1/live-one' }).waitFor();

  await page.locator(`tr.row[data-id="${post.id}"]`).click();
  await page.locator('#detail h3', { hasText: 'Response body' }).waitFor();
  const detail = await page.locator('#detail').innerText();
  assert.match(detail, /Bearer \[REDACTED\]/);
  assert.match(detail, /"answer": "<b>not html<\/b>"/, 'bodies shown as text, pretty-printed');
  assert.equal(await page.locator('#detail b').count(), 0, 'no markup injected from the body');

  await page.locator(`tr.row[data-id="${up.id}"]`).click();
  await page.locator('#detail a', { hasText: 'WebSocket messages' }).click();
  await page.locator('#detail .msg.server').waitFor();
  const msgs = await page.locator('#detail .msg').allInnerTexts();
  assert.equal(msgs.length, 2);
  assert.match(msgs[0], /→[\s\S]*response\.create/);
  assert.match(msgs[1], /←[\s\S]*response\.done/);

  await page.locator('#tab-conv').click();
  await page.locator('tr.row', { hasText: 'claude-code' }).waitFor();
  assert.deepEqual((await page.locator('tr.row').allInnerTexts()).map((r) => r.split('\t')[1]), ['codex', 'claude-code'], 'most recently updated on top');
  await page.locator('tr.row', { hasText: 'codex' }).click();
  await page.locator('#detail .turn').nth(1).waitFor();
  const conv = await page.locator('#detail').innerText();
  assert.match(conv, /hello there/);
  assert.match(conv, /tool call shell/);
  assert.match(await page.locator('#detail .turn.superseded').innerText(), /^user · superseded: a later history no longer carries it \(compacted or edited\)\s+text\s+before the compaction$/);
  assert.equal(await page.locator('#detail .turn.superseded').count(), 1);
  assert.match(conv, /sub-agent of tool call c1 · gpt-5-mini\s+user\s+text\s+the sub-agent was asked/);
  // a conversation another one's agent started links to it
  assert.match(await page.locator('tr.row', { hasText: 'claude-code' }).innerText(), /0 turns · sub-agent/);
  await page.locator('tr.row', { hasText: 'claude-code' }).click();
  await page.locator('#detail p.parent', { hasText: 'a sub-agent, started by conversation ' + parentId }).waitFor();
  await page.locator('#detail p.parent a').click();
  await page.locator('#detail', { hasText: 'hello there' }).waitFor();
  assert.deepEqual(errors, []);
});

test('dashboard: conversations too large for one listing page come with "more…", which lists the rest', { skip: !existsSync(CHROMIUM) && 'no /usr/bin/chromium' }, async (t) => {
  const store = openStore(tempDir(t));
  const server = await startApi({ host: '127.0.0.1', port: 0, store, registry, caPem: 'pem', health: () => true, events: new RecordEvents() });
  t.after(async () => { await new Promise<void>((r) => server.close(() => r())); await store.close(); });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const n = 30; // ~400 KB each: 12 MB, past one listing page's budget
  for (let i = 0; i < n; i++) {
    await store.updateConversation(`k${i}`, () => ({ id: '', key: `k${i}`, client: 'claude-code', provider: 'anthropic', model: `m${i}`, startedTs: 1, updatedTs: 10 + i,
      turns: Array.from({ length: 50 }, (_, j) => ({ role: j % 2 ? 'assistant' as const : 'user' as const, blocks: [{ type: 'text' as const, text: 'w'.repeat(8000) }], source: [] })) }));
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/');
  await page.locator('#tab-conv').click();
  await page.locator('tr.row', { hasText: `m${n - 1}` }).waitFor();
  const first = await page.locator('tr.row').count();
  assert.ok(first > 0 && first < n, `first page: ${first} rows`);
  while (await page.locator('#list a', { hasText: 'more…' }).count()) {
    const before = await page.locator('tr.row').count();
    await page.locator('#list a', { hasText: 'more…' }).click();
    await page.waitForFunction((k) => document.querySelectorAll('tr.row').length > k, before);
  }
  const models = (await page.locator('tr.row').allInnerTexts()).map((r) => r.split('\t')[3]);
  assert.deepEqual(models, Array.from({ length: n }, (_, i) => `m${n - 1 - i}`), 'every conversation once, most recent first');
  assert.deepEqual(errors, []);
});
