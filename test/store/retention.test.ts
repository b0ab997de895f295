// Retention over a real LMDB: by age and by size the oldest records go, with their bodies and index
// entries; newer records, and connections/conversations still referenced or recent, stay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rmSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { open } from 'lmdb';
import { BODY_APART_THRESHOLD, openStore, type LmdbStore } from '../../src/store/lmdb.js';
import { startRetention, type RetentionPass } from '../../src/store/retention.js';
import { startRetentionThread } from '../../src/store/retention-thread.js';
import { exportRecords } from '../../src/store/export.js';
import { idAt } from '../../src/store/ids.js';
import { conversationId } from '../../src/workers/assemble.js';
import type { Conversation, HttpTransaction, TransactionRecord } from '../../src/records.js';
import { conn, http, tempDir, tempStore, ws } from './fixtures.js';

const DAY = 86_400_000;
/** No timer sweeps: the test calls sweep() itself. */
const BY_HAND = { intervalMs: 3_600_000, sizeCheckMs: 3_600_000 };
let seq = 0;
/** An id allocated `ms` ago (ids are caller-assigned; retention reads their time). */
const oldId = (msAgo: number) => idAt(Date.now() - msAgo, seq++);
/** A conversation as the assembler makes it: its id is a hash of its key, unrelated to its age. */
const conversation = (key: string, updatedTs: number): Conversation =>
  ({ id: conversationId(key), key, client: 'codex', provider: 'openai-ws', startedTs: updatedTs, updatedTs, turns: [] });

function counts(dir: string) {
  const root = open(join(dir, 'db'), { pageSize: 8192, compression: true, maxDbs: 16 });
  const n = (name: string) => root.openDB({ name }).getKeysCount();
  return { tx: n('transactions'), bodies: n('bodies'), byHost: n('byHost'), byConn: n('byConn'), byKind: n('byKind'), conns: n('connections'), convs: n('conversations'), convKeys: n('convKeys'), convByClientUpdated: n('convByClientUpdated'), wsConns: n('wsConns'), wsConnBuckets: n('wsConnBuckets'), convByUpdated: n('convByUpdated') };
}

test('retention by age removes old transactions, their bodies, index entries, ended connections and stale conversations', async (t) => {
  const { dir, store } = tempStore(t);
  const oldConn = conn({ id: oldId(10 * DAY), startTs: Date.now() - 10 * DAY, endTs: Date.now() - 10 * DAY });
  const newConn = conn();
  // still open (no endTs), idle for 10 days: its record goes, and its wsConns entry with it
  const idleConn = conn({ id: oldId(10 * DAY), startTs: Date.now() - 10 * DAY });
  await store.putConnection(oldConn);
  await store.putConnection(newConn);
  await store.putConnection(idleConn);
  const old: TransactionRecord[] = [];
  for (let i = 0; i < 120; i++) {
    const at = { id: oldId(10 * DAY), ts: Date.now() - 10 * DAY, host: `h${i % 3}` };
    old.push(i % 4 ? http(oldConn.id, { ...at, respBody: 'z'.repeat(i % 10 === 0 ? 9000 : 10) }) : ws(oldConn.id, 'u', 'client', i, at));
  }
  const fresh = [http(newConn.id, { host: 'h0', respBody: 'q'.repeat(9000) }), ws(newConn.id, 'u', 'client', 0)];
  old.push(ws(idleConn.id, 'u', 'server', 0, { id: oldId(10 * DAY), ts: Date.now() - 10 * DAY }));
  await store.putTransactions(old);
  await store.putTransactions(fresh);
  await store.updateConversation('stale', () => conversation('stale', Date.now() - 9 * DAY));
  await store.updateConversation('live', () => conversation('live', Date.now()));

  assert.equal(counts(dir).wsConns, 3, 'three connections carried WebSocket messages');
  const passes: RetentionPass[] = [];
  const r = startRetention(store, { maxAgeMs: 7 * DAY, maxBytes: null, batch: 50, ...BY_HAND, onPass: (p) => passes.push(p) });
  t.after(() => r.stop());
  assert.equal(await r.sweep(), 121);
  // what /metrics counts: one age sweep, what it removed from each table
  assert.deepEqual(passes.map(({ bound, removed, error }) => ({ bound, removed, error })), [{ bound: 'age', removed: { transactions: 121, connections: 2, conversations: 1 }, error: undefined }]);
  assert.ok(passes[0].seconds > 0 && passes[0].seconds < 10, String(passes[0].seconds));
  assert.deepEqual(store.listTransactions({}).items.map((x) => x.id), fresh.map((x) => x.id));
  assert.equal(store.getTransaction(old[0].id), undefined);
  assert.equal(store.getConnection(oldConn.id), undefined);
  assert.equal(store.getConnection(idleConn.id), undefined);
  assert.ok(store.getConnection(newConn.id));
  assert.deepEqual(store.listConversations({}).items.map((c) => c.key), ['live']);
  assert.deepEqual(counts(dir), { tx: 2, bodies: 1, byHost: 1, byConn: 2, byKind: 1, conns: 1, convs: 1, convKeys: 1, convByClientUpdated: 1, wsConns: 1, wsConnBuckets: 1, convByUpdated: 1 });
  assert.equal(await r.sweep(), 0, 'a second sweep finds nothing');
  assert.deepEqual(passes[1].removed, { transactions: 0, connections: 0, conversations: 0 }, 'and reports it');
  // the idle connection speaks again: a new entry, from this message on, makes it reachable by kind
  const late = ws(idleConn.id, 'u', 'server', 1);
  await store.putTransactions([late]);
  assert.deepEqual(store.listTransactions({ kind: 'WS_RESP' }).items.map((x) => x.id), [late.id]);
  assert.deepEqual([counts(dir).wsConns, counts(dir).wsConnBuckets], [2, 2]);
});

test('retention by size removes the oldest until live data fits, keeping the newest', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  await store.updateConversation('stale', () => conversation('stale', Date.now() - DAY));
  const all: TransactionRecord[] = [];
  for (let b = 0; b < 10; b++) {
    const batch = Array.from({ length: 100 }, (_, i) => http(c.id, { host: `h${i % 4}`, respBody: `${b}:${i}:` + 'r'.repeat(6000) }));
    await store.putTransactions(batch);
    all.push(...batch);
  }
  await store.updateConversation('live', () => conversation('live', Date.now()));
  const before = store.dataBytes();
  const maxBytes = Math.floor(before / 3);
  const r = startRetention(store, { maxAgeMs: null, maxBytes, batch: 100, ...BY_HAND });
  t.after(() => r.stop());
  const removed = await r.sweep();
  assert.ok(removed > 0 && removed < 1000, `removed ${removed}`);
  assert.ok(store.dataBytes() <= maxBytes, `${store.dataBytes()} > ${maxBytes}`);
  const left = store.listTransactions({ limit: 1000 }).items.map((x) => x.id);
  assert.deepEqual(left, all.slice(removed).map((x) => x.id), 'exactly the oldest went');
  const n = counts(dir);
  assert.deepEqual([n.tx, n.bodies, n.byHost, n.byConn, n.byKind], [left.length, left.length, left.length, left.length, left.length]);
  assert.ok(store.getConnection(c.id), 'a connection still referenced by records stays');
  assert.deepEqual(store.listConversations({}).items.map((x) => x.key), ['live'], 'a conversation last updated before the oldest record left goes');
  assert.ok((store.getTransaction(left[left.length - 1]) as { respBody: string }).respBody.startsWith('9:99:'));
});

test('retention removes conversations by when they were last updated, not by id; a store without that index gets it on its first read-write open', async (t) => {
  const dir = tempDir(t);
  let store = openStore(dir);
  t.after(() => store.close());
  const now = Date.now();
  const keys = Array.from({ length: 30 }, (_, i) => `openai-ws:conn${i}:cache${i}`);
  for (const [i, key] of keys.entries()) await store.updateConversation(key, () => conversation(key, i < 20 ? now - 30 * DAY : now));
  // one stale conversation assembled again: it moves to the recent end
  await store.updateConversation(keys[0], (c) => ({ ...c!, updatedTs: now }));
  assert.ok(keys.some((k) => conversationId(k) > idAt(now - 7 * DAY)), 'ids that sort after any time-based cutoff');

  // the layout of the version before the index
  await store.close();
  const root = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  await root.openDB({ name: 'convByUpdated' }).drop();
  await root.close();
  store = openStore(dir);
  assert.equal(counts(dir).convByUpdated, 30, 'indexed on the read-write open');
  // an entry left behind (as by an update racing a sweep) removes no conversation, only itself
  const raw = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  raw.openDB({ name: 'convByUpdated' }).putSync([now - 30 * DAY, conversationId(keys[25])], 1);
  await raw.close();

  const r = startRetention(store, { maxAgeMs: 7 * DAY, maxBytes: null, batch: 7, ...BY_HAND });
  t.after(() => r.stop());
  await r.sweep();
  const left = [keys[0], ...keys.slice(20)];
  assert.deepEqual(store.listConversations({ limit: 1000 }).items.map((c) => c.key).sort(), left.sort());
  assert.equal(store.getConversation(conversationId(keys[1])), undefined);
  const n = counts(dir);
  assert.deepEqual([n.convs, n.convKeys, n.convByClientUpdated, n.convByUpdated], [11, 11, 11, 11]);
});

/** The WebSocket messages of each HAR entry, by the entry's URL. */
async function harMessages(store: Parameters<typeof exportRecords>[0]): Promise<Record<string, number>> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  await exportRecords(store, { format: 'har' }, out);
  const entries = JSON.parse(text).log.entries as { request: { url: string }; _webSocketMessages?: unknown[] }[];
  return Object.fromEntries(entries.map((e) => [e.request.url, e._webSocketMessages?.length ?? -1]));
}

/** A record's id and ts `msAgo` ago. */
const at = (msAgo: number) => ({ id: oldId(msAgo), ts: Date.now() - msAgo });

/** Two connections opened ten days ago: a socket still open, and another that ended then. */
async function socketAndOther(store: LmdbStore) {
  const start = Date.now() - 10 * DAY;
  const socket = conn({ id: oldId(10 * DAY), startTs: start });
  const other = conn({ id: oldId(10 * DAY), startTs: start, endTs: start });
  await store.putConnection(socket);
  await store.putConnection(other);
  return { start, socket, other };
}

test('a WebSocket upgrade (101) stays while its socket has later records, without holding retention up, and goes after the last of them', async (t) => {
  const { dir, store } = tempStore(t);
  const { start, socket, other } = await socketAndOther(store);
  const up = http(socket.id, { id: oldId(10 * DAY), ts: start, status: 101, method: 'GET', path: '/ws', scheme: 'wss', reqBody: undefined, respBody: undefined });
  const oldMsgs = [ws(socket.id, up.id, 'client', 0, at(9 * DAY)), ws(socket.id, up.id, 'server', 0, at(9 * DAY))];
  const oldHttp = Array.from({ length: 5 }, () => http(other.id, { ...at(8 * DAY), path: '/old' }));
  const newMsgs = [ws(socket.id, up.id, 'client', 1, at(DAY)), ws(socket.id, up.id, 'server', 1, at(DAY))];
  await store.putTransactions([up, ...oldMsgs, ...oldHttp, ...newMsgs]);

  // batch 1: every batch starts at the 101 and must get past it
  const week = startRetention(store, { maxAgeMs: 7 * DAY, maxBytes: null, batch: 1, ...BY_HAND });
  t.after(() => week.stop());
  assert.equal(await week.sweep(), oldMsgs.length + oldHttp.length);
  assert.deepEqual(store.listTransactions({}).items.map((x) => x.id), [up.id, ...newMsgs.map((m) => m.id)]);
  assert.ok(store.getConnection(socket.id), 'the socket\'s connection stays with its records');
  assert.equal(store.getConnection(other.id), undefined);
  assert.deepEqual(await harMessages(store), { 'wss://api.openai.com/ws': newMsgs.length }, 'the remaining messages are exported under their 101');

  // the socket's last messages age out: the 101 and the connection go with them, in the same sweep
  const hours = startRetention(store, { maxAgeMs: 12 * 3_600_000, maxBytes: null, batch: 1, ...BY_HAND });
  t.after(() => hours.stop());
  assert.equal(await hours.sweep(), newMsgs.length + 1);
  assert.deepEqual(counts(dir).tx, 0);
  assert.equal(store.getConnection(socket.id), undefined);
});

test('a 101 kept among removed records keeps its body stored apart, and theirs go (one pass over the span of ids, not a lookup per record)', async (t) => {
  const { dir, store } = tempStore(t);
  const { socket, other } = await socketAndOther(store);
  const big = (c: string) => c.repeat(3 * BODY_APART_THRESHOLD);
  const before = Array.from({ length: 3 }, () => http(other.id, { ...at(9 * DAY), respBody: big('b') }));
  const up = http(socket.id, { ...at(9 * DAY), status: 101, method: 'GET', path: '/ws', scheme: 'wss', reqBody: big('u'), respBody: undefined });
  const after = Array.from({ length: 3 }, () => http(other.id, { ...at(9 * DAY), respBody: big('a') }));
  const live = ws(socket.id, up.id, 'server', 0, at(DAY));
  await store.putTransactions([...before, up, ...after, live]);
  assert.equal(counts(dir).bodies, 7, 'every big body is stored apart');

  const r = startRetention(store, { maxAgeMs: 7 * DAY, maxBytes: null, ...BY_HAND });
  t.after(() => r.stop());
  assert.equal(await r.sweep(), before.length + after.length);
  assert.deepEqual(store.listTransactions({}).items.map((x) => x.id), [up.id, live.id]);
  assert.equal((store.getTransaction(up.id) as HttpTransaction).reqBody, big('u'), 'the kept 101 keeps its body');
  assert.equal(counts(dir).bodies, 1);
});

test('retention by size gets past a long-lived socket\'s 101 and keeps it', async (t) => {
  const { store } = tempStore(t);
  const socket = conn(), c = conn();
  await store.putConnection(socket);
  await store.putConnection(c);
  const up = http(socket.id, { status: 101, method: 'GET', path: '/ws', scheme: 'wss', reqBody: undefined, respBody: undefined });
  await store.putTransactions([up]);
  for (let b = 0; b < 6; b++) await store.putTransactions(Array.from({ length: 100 }, () => http(c.id, { respBody: 'r'.repeat(6000) })));
  const msg = ws(socket.id, up.id, 'server', 0);
  await store.putTransactions([msg]);
  const maxBytes = Math.floor(store.dataBytes() / 3);
  const r = startRetention(store, { maxAgeMs: null, maxBytes, batch: 50, ...BY_HAND });
  t.after(() => r.stop());
  assert.ok((await r.sweep()) > 0);
  assert.ok(store.dataBytes() <= maxBytes, `${store.dataBytes()} > ${maxBytes}`);
  assert.ok(store.getTransaction(up.id), 'the 101 stays while its message does');
  assert.deepEqual(await harMessages(store).then((m) => m['wss://api.openai.com/ws']), 1);
});

test('a connection that never closed (greytap killed while it was open) leaves no wsConns entry or bucket behind once its records age out', async (t) => {
  const { dir, store } = tempStore(t);
  const start = Date.now() - 10 * DAY;
  const c = conn({ id: oldId(10 * DAY), startTs: start });
  await store.putConnection(c);
  const up = http(c.id, { id: oldId(10 * DAY), ts: start, status: 101, method: 'GET', scheme: 'wss', reqBody: undefined, respBody: undefined });
  // messages over two days: the entry spans many buckets
  const msgs = [0, 1, 2].map((d) => ws(c.id, up.id, 'client', d, { id: oldId((10 - d) * DAY), ts: start + d * DAY }));
  await store.putTransactions([up, ...msgs]);
  assert.ok(counts(dir).wsConnBuckets > 100);
  const r = startRetention(store, { maxAgeMs: 5 * DAY, maxBytes: null, ...BY_HAND });
  t.after(() => r.stop());
  assert.equal(await r.sweep(), 4);
  const n = counts(dir);
  assert.deepEqual([n.tx, n.byConn, n.conns, n.wsConns, n.wsConnBuckets], [0, 0, 0, 0, 0]);
});

test('serve\'s retention thread sweeps the store beside the main thread and stops cleanly', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn({ id: oldId(10 * DAY), startTs: Date.now() - 10 * DAY, endTs: Date.now() - 10 * DAY });
  await store.putConnection(c);
  const old = Array.from({ length: 30 }, () => http(c.id, { id: oldId(10 * DAY), ts: Date.now() - 10 * DAY }));
  const fresh = http(conn().id);
  await store.putTransactions([...old, fresh]);
  await store.updateConversation('stale', () => conversation('stale', Date.now() - 9 * DAY));
  const thread = startRetentionThread(dir, { maxAgeMs: 7 * DAY, maxBytes: null, intervalMs: 50 })!;
  const deadline = Date.now() + 10_000;
  while (store.listTransactions({}).items.length > 1 || store.getConnection(c.id) || store.getConversation(conversationId('stale'))) {
    assert.ok(Date.now() < deadline, 'swept within 10 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(store.listTransactions({}).items.map((x) => x.id), [fresh.id]);
  await thread.stop();
  assert.equal(startRetentionThread(dir, { maxAgeMs: null, maxBytes: null }), null, 'no thread without a bound');
});

test('a retention thread that dies is counted as a failed sweep of its bound and started again; once it can open the store it sweeps', async (t) => {
  const dir = tempDir(t);
  // the data directory is a file: the thread's openStore throws at start, a real failure
  const dataDir = join(dir, 'data');
  writeFileSync(dataDir, 'not a directory');
  const seen: RetentionPass[] = [];
  const thread = startRetentionThread(dataDir, { maxAgeMs: null, maxBytes: 1 << 30, sizeCheckMs: 50 }, undefined, (s) => seen.push(s), 100)!;
  t.after(() => thread.stop());
  const until = async (what: string, ok: () => boolean) => {
    for (const deadline = Date.now() + 10_000; !ok(); await new Promise((r) => setTimeout(r, 20))) assert.ok(Date.now() < deadline, what);
  };
  await until('two deaths, the second after a restart', () => seen.filter((s) => s.error).length >= 2);
  assert.ok(seen.every((s) => s.bound === 'size' && /^retention thread: .*(ENOTDIR|not a directory|EEXIST)/i.test(s.error!)), JSON.stringify(seen));
  rmSync(dataDir);
  await until('a sweep that succeeds after a restart', () => seen.some((s) => s.error === undefined));
  await thread.stop();
  const n = seen.length;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(seen.length, n, 'nothing runs after stop()');
});

test('size retention measures what is left by the oldest removable record, not a 101 kept for a live socket', async (t) => {
  const { store } = tempStore(t);
  const socket = conn({ id: oldId(10 * DAY), startTs: Date.now() - 10 * DAY });
  const other = conn({ id: oldId(9 * DAY), startTs: Date.now() - 9 * DAY, endTs: Date.now() - 9 * DAY });
  await store.putConnection(socket);
  await store.putConnection(other);
  const up = http(socket.id, { id: oldId(10 * DAY), ts: Date.now() - 10 * DAY, status: 101, reqBody: undefined, respBody: undefined });
  const bulk = Array.from({ length: 200 }, () => http(other.id, { id: oldId(5 * DAY), ts: Date.now() - 5 * DAY, respBody: 'z'.repeat(9000) }));
  await store.putTransactions([up]);
  await store.putTransactions([ws(socket.id, up.id, 'client', 0)]); // the socket is alive: a fresh message
  await store.updateConversation('old', () => conversation('old', Date.now() - 5 * DAY));
  // the bound: what is there without the bulk (retention takes no more than it must)
  const maxBytes = store.dataBytes() + 8192;
  await store.putTransactions(bulk);
  const r = startRetention(store, { maxAgeMs: null, maxBytes, batch: 50, ...BY_HAND });
  t.after(() => r.stop());
  assert.equal(await r.sweep(), 200);
  assert.ok(store.getTransaction(up.id), 'the live socket\'s 101 stays');
  assert.equal(store.getConnection(other.id), undefined, 'a connection with nothing left goes');
  assert.equal(store.getConversation(conversationId('old')), undefined, 'a conversation older than what is left goes');
});

test('retention by size takes only what is over the bound, however big the records: 19 bodies of 1 MiB against 8 MiB leave ~8 MiB', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  const all: TransactionRecord[] = [];
  for (let i = 0; i < 19; i++) {
    const rec = http(c.id, { respBody: `${i}:` + 'm'.repeat(1 << 20) });
    await store.putTransactions([rec]);
    all.push(rec);
  }
  const maxBytes = 8 << 20;
  const r = startRetention(store, { maxAgeMs: null, maxBytes, ...BY_HAND }); // the default batch, 500
  t.after(() => r.stop());
  const removed = await r.sweep();
  const left = store.listTransactions({ limit: 100 }).items.map((x) => x.id);
  assert.ok(store.dataBytes() <= maxBytes, `${store.dataBytes()} > ${maxBytes}`);
  assert.ok(left.length >= 6 && left.length <= 8, `${left.length} left (${removed} removed)`);
  assert.deepEqual(left, all.slice(removed).map((x) => x.id), 'the oldest went');
});

test('retention by size does not overshoot when the oldest records are bigger than the rest', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  for (let i = 0; i < 10; i++) await store.putTransactions([http(c.id, { respBody: `${i}:` + 'o'.repeat(1 << 20) })]);
  for (let i = 0; i < 2000; i += 500) await store.putTransactions(Array.from({ length: 500 }, () => http(c.id)));
  const maxBytes = store.dataBytes() - (1.5 * (1 << 20));
  const passes: RetentionPass[] = [];
  const r = startRetention(store, { maxAgeMs: null, maxBytes, ...BY_HAND, onPass: (p) => passes.push(p) });
  t.after(() => r.stop());
  const removed = await r.sweep();
  assert.ok(store.dataBytes() <= maxBytes, `${store.dataBytes()} > ${maxBytes}`);
  assert.ok(removed >= 2 && removed <= 3, `${removed} removed for 1.5 MiB over the bound, the oldest being 1 MiB each`);
  assert.deepEqual(passes.map((p) => [p.bound, p.removed]), [['size', { transactions: removed, connections: 0, conversations: 0 }]], 'the connection is still referenced');
});

test('a sweep that fails reports its bound and error (counted in /metrics as result="error") and rejects; the next one runs', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  for (let i = 0; i < 4; i++) await store.putTransactions([http(c.id, { respBody: 'f'.repeat(1 << 20) })]);
  const passes: RetentionPass[] = [];
  const r = startRetention(store, { maxAgeMs: null, maxBytes: 1 << 20, ...BY_HAND, onPass: (p) => passes.push(p) });
  t.after(() => r.stop());
  const purge = store.purgeTransactions;
  store.purgeTransactions = async () => { throw new Error('MDB_MAP_FULL: Environment mapsize limit reached'); };
  await assert.rejects(r.sweep(), /MDB_MAP_FULL/);
  assert.deepEqual(passes.map((p) => [p.bound, p.removed.transactions, p.error]), [['size', 0, 'MDB_MAP_FULL: Environment mapsize limit reached']]);
  store.purgeTransactions = purge;
  assert.ok((await r.sweep()) >= 3);
  assert.equal(passes[1].error, undefined);
});

test('the size bound is checked every few seconds, apart from the age sweep\'s interval: a store pushed over it comes back without a sweep by hand', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  const maxBytes = store.dataBytes() + 1.5 * (1 << 20); // room for one of the records below
  // checked once an age interval (an hour here), the store would stay 3 MiB over its bound that long
  const r = startRetention(store, { maxAgeMs: 7 * DAY, maxBytes, intervalMs: 3_600_000, sizeCheckMs: 100 });
  t.after(() => r.stop());
  const big = Array.from({ length: 4 }, (_, i) => http(c.id, { respBody: `${i}:` + 's'.repeat(1 << 20) }));
  for (const rec of big) await store.putTransactions([rec]);
  assert.ok(store.dataBytes() > maxBytes + (2 << 20));
  const deadline = Date.now() + 10_000;
  while (store.dataBytes() > maxBytes && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  assert.ok(store.dataBytes() <= maxBytes, `${store.dataBytes()} > ${maxBytes} after 10 s`);
  assert.deepEqual(store.listTransactions({ limit: 10 }).items.map((x) => x.id), [big[3].id], 'the newest stays');
});
