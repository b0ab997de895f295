// The LMDB store with real environments in temp dirs: every record kind round-trips (big bodies
// stored apart), listing filters and cursor paging, cross-thread writers, atomic conversation
// updates across threads, and a kill -9 mid-capture leaving a consistent store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'lmdb';
import { openStore, StoreError, BODY_APART_THRESHOLD, MAP_BYTES, type LmdbStore } from '../../src/store/lmdb.js';
import { lazyBody } from '../../src/store/body-bytes.js';
import { idAt, idSharedBuffer, nextId } from '../../src/store/ids.js';
import { conversationId } from '../../src/workers/assemble.js';
import type { HttpTransaction, TransactionRecord, WsMessageRecord } from '../../src/records.js';
import { conn, http, tempDir, tempStore, ws } from './fixtures.js';

const child = fileURLToPath(new URL('./store-child.js', import.meta.url));
const BODY_FIELDS = ['body', 'bodyBase64', 'reqBody', 'reqBodyBase64', 'respBody', 'respBodyBase64', 'respEvents'];

type Query = Parameters<LmdbStore['listTransactions']>[0];

/** Every id a query lists, paging forward with `after`. */
function forwardIds(store: LmdbStore, q: Query, limit: number): string[] {
  const ids: string[] = [];
  for (let after: string | null | undefined = undefined, n = 0; n < 2000; n++) {
    const p: { items: TransactionRecord[]; next: string | null } = store.listTransactions({ ...q, after: after ?? undefined, limit });
    ids.push(...p.items.map((r) => r.id));
    if (!(after = p.next)) return ids;
  }
  throw new Error('paging did not end');
}

/** Every id a query lists, paging backward with `before` from the newest, in id order. */
function backwardIds(store: LmdbStore, q: Query, limit: number): string[] {
  const ids: string[] = [];
  for (let before: string | null = 'ffffffffffffffff', n = 0; before && n < 2000; n++) {
    const p = store.listTransactions({ ...q, before, limit });
    ids.unshift(...p.items.map((r) => r.id));
    before = p.next;
  }
  return ids;
}

test('every record kind round-trips; big bodies are stored apart and listing omits bodies', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn({ sni: 'api.openai.com', alpn: 'http/1.1', clientUser: 'agent-1' });
  await store.putConnection(c);
  const big = 'é'.repeat(BODY_APART_THRESHOLD * 3);
  const small = http(c.id);
  const bigHttp = http(c.id, {
    reqBody: big, respBody: undefined, respBodyBase64: Buffer.alloc(20000, 7).toString('base64'),
    respEvents: Array.from({ length: 300 }, (_, i) => ({ event: 'response.output_text.delta', data: `{"delta":"${i}"}` })),
  });
  const up = http(c.id, { status: 101, statusText: 'Switching Protocols', reqBody: undefined, respBody: undefined });
  const msgs: WsMessageRecord[] = [
    ws(c.id, up.id, 'client', 0),
    ws(c.id, up.id, 'server', 0, { body: big }),
    ws(c.id, up.id, 'server', 1, { kind: 'WS_RESP', opcode: 'binary', body: undefined, bodyBase64: 'AAEC' }),
    ws(c.id, up.id, 'client', 1, { kind: 'WS_CTRL', opcode: 'close', body: undefined, closeCode: 1000, closeReason: 'bye', error: 'invalid_utf8' }),
  ];
  await store.putTransactions([small, bigHttp, up, ...msgs]);

  assert.deepEqual(store.getConnection(c.id), c);
  const redacted = (r: HttpTransaction): HttpTransaction => ({
    ...r,
    reqHeaders: r.reqHeaders.map(([n, v]) => [n, n === 'Authorization' ? 'Bearer [REDACTED]' : v]),
    respHeaders: r.respHeaders.map(([n, v]) => [n, n === 'Set-Cookie' ? '[REDACTED]' : v]),
  });
  for (const r of [small, bigHttp, up]) assert.deepEqual(store.getTransaction(r.id), JSON.parse(JSON.stringify(redacted(r))));
  for (const m of msgs) assert.deepEqual(store.getTransaction(m.id), JSON.parse(JSON.stringify(m)));
  assert.equal(store.getTransaction('ffffffffffffffff'), undefined);
  // As stored: a small text body inline as text (its UTF-8 bytes, as msgpack writes strings), a big
  // one apart as bytes, base64 as its decoded bytes.
  const raw = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16, readOnly: true });
  t.after(() => raw.close());
  const stored = (id: string) => raw.openDB({ name: 'transactions' }).get(id) as Record<string, unknown>;
  const apart = (id: string, f: string) => raw.openDB({ name: 'bodies', encoding: 'binary' }).get([id, f]) as Buffer | undefined;
  assert.equal(stored(msgs[0].id).body, msgs[0].body);
  assert.equal(apart(msgs[0].id, 'body'), undefined);
  assert.equal(stored(msgs[1].id).body, undefined);
  assert.deepEqual(apart(msgs[1].id, 'body'), Buffer.from(big));
  assert.deepEqual(Buffer.from(stored(msgs[2].id).bodyBase64 as Uint8Array), Buffer.from([0, 1, 2]));

  const listed = store.listTransactions({});
  assert.deepEqual(listed.items.map((r) => r.id), [small, bigHttp, up, ...msgs].map((r) => r.id));
  for (const r of listed.items) for (const f of BODY_FIELDS) assert.equal(f in r, false, `${f} listed`);
  assert.equal(listed.next, null);
  assert.equal((listed.items[0] as HttpTransaction).reqHeaders[1][1], 'Bearer [REDACTED]');
  assert.ok(store.sizeBytes() > 0);
});

test('the store file is mapped once as it grows: RSS counts each of its pages once, not once per map lmdb-js outgrew', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  // 40 MiB: from lmdb-js's own 128 KiB start that is nine maps, each twice the one before
  for (let i = 0; i < 40; i++) await store.putTransactions([http(c.id, { respBody: `${i}:` + 'm'.repeat(1 << 20) })]);
  assert.ok(store.sizeBytes() > 40 << 20, String(store.sizeBytes()));
  const file = join(dir, 'db', 'data.mdb');
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(' ' + file));
  assert.equal(maps.length, 1, maps.join('\n'));
  const [from, to] = maps[0].split(' ')[0].split('-').map((x) => parseInt(x, 16));
  assert.equal(to - from, MAP_BYTES, 'address space only: the file itself is ~40 MiB');
});

test('writes of one event turn commit as one transaction on the writing thread; a failing write fails that whole turn, not the next', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  const env = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  const txnId = () => (env.getStats() as { lastTxnId: number }).lastTxnId;
  const before = txnId();
  // what the worker does with a multi task: several parts queue writes before their first await
  const a = http(c.id);
  const b = ws(c.id, a.id, 'client', 0);
  const ended = { ...c, endTs: Date.now(), closeReason: 'closed' };
  const writes = [store.putTransactions([a]), store.putTransactions([b]), store.putConnection(ended)];
  // committed synchronously at the end of the turn, before any I/O callback could run
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(txnId(), before + 1, 'one write transaction for the turn');
  assert.ok(store.getTransaction(a.id) && store.getTransaction(b.id));
  await Promise.all(writes);
  assert.deepEqual(store.getConnection(c.id), ended);

  // msgpack cannot encode a cycle: the put throws inside the transaction, which is aborted whole
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const good = http(c.id);
  const bad = http(c.id, { path: '/cyclic' });
  (bad as unknown as Record<string, unknown>).extra = cyclic;
  const results = await Promise.allSettled([store.putTransactions([good]), store.putTransactions([bad])]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.ok((r as PromiseRejectedResult).reason instanceof StoreError);
  }
  assert.equal(store.getTransaction(good.id), undefined, 'the turn was rolled back together');
  const next = http(c.id);
  await store.putTransactions([next]);
  assert.equal(store.getTransaction(next.id)?.id, next.id, 'the next turn commits');
});

test('listing filters by kind, host, conn and since, and pages with after/before cursors', async (t) => {
  const { store } = tempStore(t);
  const a = conn(), b = conn();
  const all: TransactionRecord[] = [];
  for (let i = 0; i < 30; i++) {
    const c = i % 2 ? a : b;
    const host = i % 3 ? 'api.openai.com' : 'api.anthropic.com';
    all.push(i % 5 === 0 ? ws(c.id, 'u', 'client', i, { host }) : http(c.id, { host, ts: 1_000 + i }));
  }
  await store.putTransactions(all.slice(0, 10));
  await store.putTransactions(all.slice(10));

  const pageAll = (q: Parameters<typeof store.listTransactions>[0]): string[] => {
    const ids: string[] = [];
    let after: string | undefined;
    for (let n = 0; n < 100; n++) {
      const p = store.listTransactions({ ...q, after, limit: 4 });
      assert.ok(p.items.length <= 4);
      ids.push(...p.items.map((r) => r.id));
      if (!p.next) return ids;
      after = p.next;
    }
    throw new Error('paging did not end');
  };
  const want = (f: (r: TransactionRecord) => boolean) => all.filter(f).map((r) => r.id);
  assert.deepEqual(pageAll({}), want(() => true));
  assert.deepEqual(pageAll({ kind: 'WS_REQ' }), want((r) => r.kind === 'WS_REQ'));
  assert.deepEqual(pageAll({ host: 'api.anthropic.com' }), want((r) => r.host === 'api.anthropic.com'));
  assert.deepEqual(pageAll({ conn: a.id }), want((r) => r.conn === a.id));
  assert.deepEqual(pageAll({ conn: a.id, host: 'api.openai.com', kind: 'HTTP' }), want((r) => r.conn === a.id && r.host === 'api.openai.com' && r.kind === 'HTTP'));
  assert.deepEqual(pageAll({ since: 1_020 }), want((r) => r.ts >= 1_020));
  assert.deepEqual(pageAll({ host: 'nowhere' }), []);
  // after a cursor: strictly larger ids
  assert.deepEqual(store.listTransactions({ after: all[27].id }).items.map((r) => r.id), [all[28].id, all[29].id]);

  // before: the newest page first, oldest-first inside a page, next pages further back
  const last = store.listTransactions({ before: 'ffffffffffffffff', limit: 4 });
  assert.deepEqual(last.items.map((r) => r.id), all.slice(26).map((r) => r.id));
  assert.equal(last.next, all[26].id);
  const back: string[] = [];
  for (let before: string | null = 'ffffffffffffffff'; before;) {
    const p = store.listTransactions({ before, kind: 'HTTP', limit: 5 });
    back.unshift(...p.items.map((r) => r.id));
    before = p.next;
  }
  assert.deepEqual(back, want((r) => r.kind === 'HTTP'));
  // limit is clamped to 1..1000
  assert.equal(store.listTransactions({ limit: 0 }).items.length, 1);
});

test('WebSocket messages are reached by host and kind through their connections: two index puts per message, id order and cursors kept, earlier stores still listed once', async (t) => {
  const dir = tempDir(t);
  let store = openStore(dir);
  const conns = [conn(), conn(), conn({ host: 'ws.example' })];
  const all: TransactionRecord[] = [];
  // 3 connections' WebSocket messages interleaved with HTTP exchanges: the merge alternates sources within a page
  for (let i = 0; i < 160; i++) {
    const c = conns[i % 3];
    const host = c.host === 'ws.example' ? 'ws.example' : i % 2 ? 'api.openai.com' : 'chatgpt.com';
    const kind = i % 7 === 0 ? { kind: 'WS_CTRL' as const, opcode: 'ping' as const } : {};
    all.push(i % 4 === 3 ? http(c.id, { host }) : ws(c.id, 'u', i % 5 < 2 ? 'server' : 'client', i, { host, ...kind }));
  }
  for (let i = 0; i < all.length; i += 25) await store.putTransactions(all.slice(i, i + 25));

  const raw = () => open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  const root = raw();
  const count = (name: string) => root.openDB({ name }).getKeysCount();
  const nHttp = all.filter((r) => r.kind === 'HTTP').length;
  assert.deepEqual([count('byHost'), count('byKind'), count('byConn'), count('wsConns')], [nHttp, nHttp, all.length, 3], 'WebSocket messages add no host or kind entries');

  const pages = (q: Query, limit: number) => forwardIds(store, q, limit);
  const backPages = (q: Query, limit: number) => backwardIds(store, q, limit);
  const queries: [Query, (r: TransactionRecord) => boolean][] = [
    [{ host: 'api.openai.com' }, (r) => r.host === 'api.openai.com'],
    [{ host: 'ws.example' }, (r) => r.host === 'ws.example'],
    [{ kind: 'WS_REQ' }, (r) => r.kind === 'WS_REQ'],
    [{ kind: 'WS_CTRL' }, (r) => r.kind === 'WS_CTRL'],
    [{ kind: 'HTTP' }, (r) => r.kind === 'HTTP'],
    [{ host: 'chatgpt.com', kind: 'WS_RESP' }, (r) => r.host === 'chatgpt.com' && r.kind === 'WS_RESP'],
    [{ host: 'api.openai.com', kind: 'HTTP' }, (r) => r.host === 'api.openai.com' && r.kind === 'HTTP'],
    [{ conn: conns[1].id, kind: 'WS_CTRL' }, (r) => r.conn === conns[1].id && r.kind === 'WS_CTRL'],
    [{ kind: 'WS_RESP', since: all[80].ts }, (r) => r.kind === 'WS_RESP' && r.ts >= all[80].ts],
  ];
  const check = (label: string) => {
    for (const [q, f] of queries) {
      const want = all.filter(f).map((r) => r.id);
      assert.ok(want.length > 0, JSON.stringify(q));
      for (const limit of [1, 7, 1000]) {
        assert.deepEqual(pages(q, limit), want, `${label} ${JSON.stringify(q)} forward, limit ${limit}`);
        assert.deepEqual(backPages(q, limit), want, `${label} ${JSON.stringify(q)} backward, limit ${limit}`);
      }
    }
    const mid = all[100].id;
    assert.deepEqual(store.listTransactions({ host: 'api.openai.com', after: mid, limit: 3 }).items.map((r) => r.id),
      all.filter((r) => r.host === 'api.openai.com' && r.id > mid).slice(0, 3).map((r) => r.id), `${label}: after a cursor`);
  };
  check('new layout');

  // The layout of earlier versions: every record in byHost and byKind, byConn valued 1, no wsConns.
  await store.close();
  const byHost = root.openDB({ name: 'byHost' }), byKind = root.openDB({ name: 'byKind' });
  const byConn = root.openDB({ name: 'byConn' }), wsConns = root.openDB({ name: 'wsConns' });
  // conns[2] written wholly by the earlier version, the others' first 90 records
  const legacy = all.filter((r, i) => r.kind !== 'HTTP' && (i < 90 || r.conn === conns[2].id));
  root.transactionSync(() => {
    for (const r of legacy) {
      byHost.putSync([r.host, r.id], 1);
      byKind.putSync([r.kind, r.id], 1);
      byConn.putSync([r.conn, r.id], 1);
    }
    wsConns.removeSync(conns[2].id);
  });
  await root.close();
  store = openStore(dir);
  t.after(() => store.close());
  // a new message on conns[2] gives it a wsConns entry from its oldest record on (those stay listed once)
  const reput = ws(conns[2].id, 'u', 'client', 999, { host: 'ws.example' });
  await store.putTransactions([reput]);
  all.push(reput);
  check('mixed layouts');

  // an entry gone while its connection still had records (retention no longer removes an open
  // connection's; this is the guard): the next commit's entry covers every record id of the
  // connection again (its hosts are those committed since)
  await store.close();
  const again = raw();
  again.openDB({ name: 'wsConns' }).removeSync(conns[1].id);
  await again.close();
  store = openStore(dir);
  assert.ok(pages({ kind: 'WS_RESP' }, 1000).length < all.filter((r) => r.kind === 'WS_RESP').length, 'conns[1] unreachable without its entry');
  const next = ws(conns[1].id, 'u', 'server', 2000);
  await store.putTransactions([next]);
  all.push(next);
  for (const kind of ['WS_RESP', 'WS_CTRL'] as const) {
    const want = all.filter((r) => r.kind === kind).map((r) => r.id);
    for (const limit of [1, 7, 1000]) {
      assert.deepEqual(pages({ kind }, limit), want, `entry re-created: ${kind} forward, limit ${limit}`);
      assert.deepEqual(backPages({ kind }, limit), want, `entry re-created: ${kind} backward, limit ${limit}`);
    }
  }

  // an id at its millisecond's floor is inside `since`, paging forward and backward
  const ts = Date.now() + 60_000;
  const edge = ws(conns[0].id, 'u', 'client', 1000, { id: (BigInt(ts) << 12n).toString(16).padStart(16, '0'), ts });
  await store.putTransactions([edge]);
  for (const q of [{ since: ts }, { since: ts, kind: 'WS_REQ' as const }, { since: ts, host: 'api.openai.com' }, { since: ts, conn: conns[0].id }]) {
    assert.deepEqual(store.listTransactions(q).items.map((r) => r.id), [edge.id], JSON.stringify(q));
    assert.deepEqual(store.listTransactions({ ...q, before: 'ffffffffffffffff' }).items.map((r) => r.id), [edge.id], `${JSON.stringify(q)} backward`);
  }
});

test('a filtered page finds WebSocket connections by the ~17-minute id buckets their messages span: any bucket, either direction, a store without buckets indexed on its first read-write open', async (t) => {
  const dir = tempDir(t);
  let store = openStore(dir);
  t.after(() => store.close());
  let n = 0;
  const idOf = (ms: number) => idAt(ms, n++ % 4096);
  const BUCKET_MS = 2 ** 20;
  const base = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS - 30 * 86_400_000;
  const all: TransactionRecord[] = [];
  let buckets = 0;
  // 48 connections 7 hours apart: most last a minute (one bucket), every 8th two days, crossing
  // the others' buckets; each sends 6 messages spread over its life, and some carry HTTP too
  for (let i = 0; i < 48; i++) {
    const c = conn({ host: `h${i % 3}.example` });
    const start = base + i * 7 * 3_600_000 + (i % 5) * 60_000;
    const life = i % 8 === 0 ? 2 * 86_400_000 : 60_000;
    for (let k = 0; k < 6; k++) {
      const ms = start + Math.floor((life * k) / 5);
      const at = { id: idOf(ms), ts: ms, host: c.host };
      all.push(k === 2 && i % 4 === 1 ? http(c.id, at) : ws(c.id, 'u', k % 2 ? 'server' : 'client', k, k === 5 && i % 6 === 0 ? { ...at, kind: 'WS_CTRL', opcode: 'ping' } : at));
    }
    buckets += Math.floor((start + life) / BUCKET_MS) - Math.floor(start / BUCKET_MS) + 1;
  }
  all.sort((a, b) => (a.id < b.id ? -1 : 1));
  for (let i = 0; i < all.length; i += 40) await store.putTransactions(all.slice(i, i + 40));

  const raw = () => open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  let root = raw();
  assert.equal(root.openDB({ name: 'wsConnBuckets' }).getKeysCount(), buckets, 'one entry per bucket each connection spans');
  await root.close();

  const mid = all[all.length >> 1];
  const queries: [Query, (r: TransactionRecord) => boolean][] = [
    [{ kind: 'WS_REQ' }, (r) => r.kind === 'WS_REQ'],
    [{ kind: 'WS_CTRL' }, (r) => r.kind === 'WS_CTRL'],
    [{ host: 'h1.example' }, (r) => r.host === 'h1.example'],
    [{ host: 'h0.example', kind: 'WS_RESP' }, (r) => r.host === 'h0.example' && r.kind === 'WS_RESP'],
    [{ kind: 'WS_RESP', since: mid.ts }, (r) => r.kind === 'WS_RESP' && r.ts >= mid.ts],
  ];
  const check = (label: string) => {
    for (const [q, f] of queries) {
      const want = all.filter(f).map((r) => r.id);
      assert.ok(want.length > 0, JSON.stringify(q));
      for (const limit of [1, 5, 1000]) {
        assert.deepEqual(forwardIds(store, q, limit), want, `${label} ${JSON.stringify(q)} forward, limit ${limit}`);
        assert.deepEqual(backwardIds(store, q, limit), want, `${label} ${JSON.stringify(q)} backward, limit ${limit}`);
      }
      // a page from a cursor in the middle of the long connections' span, both ways
      const after = all.filter((r) => f(r) && r.id > mid.id).slice(0, 4).map((r) => r.id);
      assert.deepEqual(store.listTransactions({ ...q, after: mid.id, limit: 4 }).items.map((r) => r.id), after, `${label} ${JSON.stringify(q)} after the middle`);
      const before = all.filter((r) => f(r) && r.id < mid.id).slice(-4).map((r) => r.id);
      assert.deepEqual(store.listTransactions({ ...q, before: mid.id, limit: 4 }).items.map((r) => r.id), before, `${label} ${JSON.stringify(q)} before the middle`);
    }
  };
  check('bucketed');

  // The layout of the version before buckets: wsConns without wsConnBuckets.
  await store.close();
  root = raw();
  await root.openDB({ name: 'wsConnBuckets' }).drop();
  await root.close();
  store = openStore(dir, { readOnly: true });
  check('read-only, no buckets');
  await store.close();
  store = openStore(dir);
  root = raw();
  assert.equal(root.openDB({ name: 'wsConnBuckets' }).getKeysCount(), buckets, 'indexed again on the read-write open');
  await root.close();
  check('indexed on open');

  // a store from before wsConns, opened read-only (lmdb-js cannot create sub-databases then): its
  // WebSocket records are in byHost and byKind, and filtered pages list them
  const older = tempDir(t);
  const o = open(join(older, 'db'), { pageSize: 8192, compression: true, maxDbs: 16 });
  const r = ws(conn().id, 'u', 'client', 0);
  o.transactionSync(() => {
    o.openDB({ name: 'transactions', compression: true }).putSync(r.id, r);
    o.openDB({ name: 'byHost', compression: true }).putSync([r.host, r.id], 1);
    o.openDB({ name: 'byKind', compression: true }).putSync([r.kind, r.id], 1);
    o.openDB({ name: 'byConn', compression: true }).putSync([r.conn, r.id], 1);
  });
  await o.close();
  const ro = openStore(older, { readOnly: true });
  t.after(() => ro.close());
  for (const q of [{ kind: 'WS_REQ' as const }, { host: r.host }, { kind: 'WS_REQ' as const, before: 'ffffffffffffffff' }]) {
    assert.deepEqual(ro.listTransactions(q).items.map((x) => x.id), [r.id], `read-only, before wsConns: ${JSON.stringify(q)}`);
  }
  assert.ok(ro.dataBytes() > 0);
});

test('wsMessages returns a connection\'s messages in wire order', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  const up = http(c.id, { status: 101 });
  const s0 = ws(c.id, up.id, 'server', 0, { ts: 100 });
  const c0 = ws(c.id, up.id, 'client', 0, { ts: 50 });
  const c1 = ws(c.id, up.id, 'client', 1, { ts: 150 });
  const s1 = ws(c.id, up.id, 'server', 1, { ts: 150 });
  // committed out of wire order across directions (two workers)
  await store.putTransactions([s0, s1]);
  await store.putTransactions([c0, c1, up]);
  const got = store.wsMessages(c.id);
  // by ts; client1 and server1 tie at 150 and fall back to id (commit) order
  assert.deepEqual(got.map((m) => `${m.direction}${m.seq}`), ['client0', 'server0', 'client1', 'server1']);
  assert.equal(got[0].body, c0.body);
  assert.deepEqual(store.wsMessages('nope'), []);
});

test('wsMessagesAfter: each direction past its mark in seq order, client first, known ids left out, each record read from the store as it is iterated', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  const up = http(c.id, { status: 101 });
  const big = 'x'.repeat(BODY_APART_THRESHOLD * 4); // stored apart: read only when its record is loaded
  const msgs = [0, 1, 2, 3].flatMap((seq) => [
    ws(c.id, up.id, 'client', seq, { ts: 10 * seq }),
    ws(c.id, up.id, 'server', seq, { ts: 10 * seq + 5, body: `{"seq":${seq},"pad":"${big}"}` }),
  ]);
  await store.putTransactions([up, ...msgs]);
  const known = new Set([msgs[5].id]); // server 2: the caller has it
  const after = store.wsMessagesAfter(c.id, { client: 2, server: 0 }, known);
  assert.equal(after.length, 3, 'counted by the scan, before any record is loaded');
  const first = [...after];
  assert.deepEqual(first.map((m) => `${m.direction}${m.seq}`), ['client3', 'server1', 'server3']);
  assert.equal(first[1].body, msgs[3].body, 'bodies stored apart come with their records');
  const again = [...after];
  assert.notEqual(again[1], first[1], 'iterating again reads the records again: nothing of them is held in between');
  assert.deepEqual(again, first);
  assert.equal(store.wsMessagesAfter(c.id, { client: Infinity, server: 3 }).length, 0);
});

test('conversations: created by key with an id, updated in place, listed most recently updated first, by client, with paging', async (t) => {
  const { store } = tempStore(t);
  const made = [];
  for (let i = 0; i < 5; i++) {
    made.push(await store.updateConversation(`k${i}`, (c) => {
      assert.equal(c, undefined);
      return { id: '', key: `k${i}`, client: i % 2 ? 'codex' : 'claude-code', provider: 'openai-ws', startedTs: i, updatedTs: i, turns: [] };
    }));
  }
  const first = made[0]!;
  assert.match(first.id, /^[0-9a-f]{16}$/);
  const upd = await store.updateConversation('k0', (c) => ({ ...c!, model: 'gpt-5', updatedTs: 99 }));
  assert.equal(upd!.id, first.id);
  assert.equal(store.getConversation(first.id)!.model, 'gpt-5');
  assert.equal(await store.updateConversation('k0', () => undefined), undefined);
  assert.equal(store.getConversation(first.id)!.model, 'gpt-5', 'undefined from fn leaves it unchanged');
  assert.deepEqual(store.listConversations({ client: 'codex' }).items.map((c) => c.key), ['k3', 'k1']);
  const p1 = store.listConversations({ limit: 3 });
  assert.deepEqual(p1.items.map((c) => c.key), ['k0', 'k4', 'k3']);
  const p2 = store.listConversations({ limit: 3, after: p1.next! });
  assert.deepEqual(p2.items.map((c) => c.key), ['k2', 'k1']);
  assert.equal(p2.next, null);
  // a client change moves the conversation between client indexes
  await store.updateConversation('k1', (c) => ({ ...c!, client: 'aider' }));
  assert.deepEqual(store.listConversations({ client: 'codex' }).items.map((c) => c.key), ['k3']);
  assert.deepEqual(store.listConversations({ client: 'aider' }).items.map((c) => c.key), ['k1']);
  // fn's own errors propagate and change nothing
  await assert.rejects(store.updateConversation('k2', () => { throw new Error('boom'); }), /boom/);
});

/** Every conversation key a listing gives, paging with `after`. */
function listedKeys(store: LmdbStore, q: { client?: string; listedOnly?: boolean }, limit: number): string[] {
  const keys: string[] = [];
  for (let after: string | undefined, n = 0; n < 100; n++) {
    const p = store.listConversations({ ...q, after, limit });
    keys.push(...p.items.map((c) => c.key));
    if (!p.next) return keys;
    after = p.next;
  }
  throw new Error('listing does not end');
}

test('a listing for users leaves the assembler\'s internal objects out by their index entries, unread, also after the indexes are rebuilt; other listings keep them', async (t) => {
  const dir = tempDir(t);
  let store = openStore(dir);
  t.after(() => store.close());
  for (let i = 0; i < 5; i++) {
    await store.updateConversation(`k${i}`, () => ({ id: '', key: `k${i}`, client: 'codex', provider: 'openai-ws', startedTs: i, updatedTs: i, turns: [], ...(i % 2 ? { internal: true } : {}) }));
  }
  const expect = (what: string) => {
    assert.deepEqual(listedKeys(store, {}, 2), ['k4', 'k3', 'k2', 'k1', 'k0'], what);
    for (const q of [{ listedOnly: true }, { listedOnly: true, client: 'codex' }]) assert.deepEqual(listedKeys(store, q, 1), ['k4', 'k2', 'k0'], what);
  };
  expect('written');
  await store.close();
  const raw = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  const values = (name: string) => Array.from(raw.openDB({ name }).getRange({}), ({ value }) => value);
  assert.deepEqual(values('convByUpdated'), [1, 0, 1, 0, 1], 'the internal objects\' entries say so');
  for (const name of ['convByUpdated', 'convByClientUpdated']) raw.openDB({ name }).clearSync();
  await raw.close();
  store = openStore(dir); // backfills the emptied indexes
  expect('backfilled');
});

test('conversations of a store from before the recency indexes: listed newest first read-only too, indexed on the first read-write open; an entry an earlier version left behind lists its conversation once', async (t) => {
  const dir = tempDir(t);
  // the layout before them, as that version wrote it (conversation ids: hashes of their keys)
  const old = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  const convs = old.openDB({ name: 'conversations' });
  const stored = (key: string, client: string, updatedTs: number) => ({ id: conversationId(key), key, client, provider: 'openai-ws', startedTs: 1, updatedTs, turns: [] });
  for (const [key, client, ts] of [['a', 'aider', 30], ['b', 'codex', 10], ['c', 'aider', 50], ['d', 'codex', 20], ['e', 'aider', 40]] as const) {
    const c = stored(key, client, ts);
    convs.putSync(c.id, c);
    old.openDB({ name: 'convKeys' }).putSync(key, c.id);
    old.openDB({ name: 'convByClient' }).putSync([client, c.id], 1);
  }
  await old.close();
  const expect = (s: LmdbStore, all: string[], what: string) => {
    assert.deepEqual(listedKeys(s, {}, 2), all, what);
    assert.deepEqual(listedKeys(s, { client: 'aider' }, 2), all.filter((k) => 'ace'.includes(k)), what);
    assert.deepEqual(listedKeys(s, { client: 'codex' }, 1), all.filter((k) => 'bd'.includes(k)), what);
  };

  const ro = openStore(dir, { readOnly: true });
  expect(ro, ['c', 'e', 'a', 'd', 'b'], 'read-only, without the indexes');
  await ro.close();
  let store = openStore(dir);
  t.after(() => store.close());
  const count = (name: string) => open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 }).openDB({ name }).getKeysCount();
  assert.deepEqual(['convByUpdated', 'convByClientUpdated', 'convByClient'].map(count), [5, 5, 0], 'indexed; the [client, id] index emptied');
  expect(store, ['c', 'e', 'a', 'd', 'b'], 'indexed');

  // an earlier version updates `b` without moving its entries: listed at its old place...
  await store.close();
  const raw = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16 });
  raw.openDB({ name: 'conversations' }).putSync(conversationId('b'), stored('b', 'codex', 60));
  await raw.close();
  store = openStore(dir);
  expect(store, ['c', 'e', 'a', 'd', 'b'], 'a stale entry');
  // ...until this version updates it: then at its new place only
  await store.updateConversation('b', (c) => ({ ...c!, updatedTs: 70 }));
  expect(store, ['b', 'c', 'e', 'a', 'd'], 'updated again');
});

test('opening a path twice in one thread shares the environment; read-only handles refuse writes with store_error', async (t) => {
  const dir = tempDir(t);
  const a = openStore(dir);
  const b = openStore(dir);
  const r = http(conn().id);
  await a.putTransactions([r]);
  assert.equal(b.getTransaction(r.id)!.id, r.id);
  await b.close();
  assert.equal(a.getTransaction(r.id)!.id, r.id, 'closing one handle keeps the other usable');
  await a.close();
  const ro = openStore(dir, { readOnly: true });
  assert.equal(ro.getTransaction(r.id)!.id, r.id);
  await assert.rejects(ro.putTransactions([http('c')]), (e: unknown) => e instanceof StoreError && e.code === 'store_error');
  await ro.close();
  assert.throws(() => openStore(dir + '-missing', { readOnly: true }), StoreError);
  // a batch with an unstorable record (key over LMDB's limit) is refused whole, and the store stays usable
  const rw = openStore(dir);
  const ok = http('c');
  await assert.rejects(rw.putTransactions([ok, http('c', { id: 'f'.repeat(5000) })]), (e: unknown) => e instanceof StoreError && e.code === 'store_error');
  assert.equal(rw.getTransaction(ok.id), undefined, 'nothing of the refused batch was written');
  await rw.putTransactions([ok]);
  assert.ok(rw.getTransaction(ok.id));
  await rw.close();
});

test('bodies handed over as bytes (lazy fields) are stored without making their strings, and read back exact: inline, apart, text, base64, SSE events', async (t) => {
  const { store } = tempStore(t);
  const never = () => { throw new Error('the store made a body string'); };
  const big = Buffer.from('{"delta":"ünïcode"} '.repeat(20_000)); // ~440 KiB: apart
  const bin = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 255)); // apart, base64 field
  const small = Buffer.from('{"type":"response.output_text.delta","delta":"hé"}'); // inline
  const h = http(conn().id, { respEvents: Array.from({ length: 400 }, (_, i) => ({ event: 'message', data: `{"i":${i},"pad":"${'x'.repeat(20)}"}` })) });
  delete (h as Partial<HttpTransaction>).respBody;
  lazyBody(h, 'respBody', big, never);
  lazyBody(h, 'reqBodyBase64', bin, never);
  const w = ws(h.conn, h.id, 'server', 0);
  delete (w as Partial<WsMessageRecord>).body;
  lazyBody(w, 'body', small, never);
  await store.putTransactions([h, w]);
  const gh = store.getTransaction(h.id) as HttpTransaction;
  assert.equal(gh.respBody, big.toString('utf8'));
  assert.equal(gh.reqBodyBase64, bin.toString('base64'));
  assert.deepEqual(gh.respEvents, h.respEvents);
  assert.equal((store.getTransaction(w.id) as WsMessageRecord).body, small.toString('utf8'));
  assert.deepEqual(store.wsMessages(h.conn).map((m) => m.body), [small.toString('utf8')]);
  for (const f of BODY_FIELDS) assert.equal((store.getTransactionMeta(h.id) as unknown as Record<string, unknown>)[f], undefined, `listing omits ${f}`);
  // a record whose field was assigned after the fact stores the assigned value
  const w2 = ws(h.conn, h.id, 'server', 1);
  lazyBody(w2, 'body', small, never);
  w2.body = 'replaced';
  await store.putTransactions([w2]);
  assert.equal((store.getTransaction(w2.id) as WsMessageRecord).body, 'replaced');
});

test('a store written by an earlier version (LZ4-compressed values, no format marker) still reads and takes writes; new stores are uncompressed', async (t) => {
  const dir = tempDir(t);
  // the earlier layout, written the way that version opened it
  const old = open(join(dir, 'db'), { pageSize: 8192, compression: true, maxDbs: 16 });
  const body = JSON.stringify({ type: 'response.output_text.delta', delta: 'lorem ipsum '.repeat(300) });
  const r = ws(conn().id, 'u1', 'server', 0, { body: body.slice(0, 3000) });
  await old.openDB({ name: 'transactions' }).put(r.id, r);
  await old.close();
  const store = openStore(dir);
  assert.equal((store.getTransaction(r.id) as WsMessageRecord).body, r.body, 'a compressed value reads back');
  const r2 = ws(r.conn, 'u1', 'server', 1, { body: body.slice(0, 3500) });
  await store.putTransactions([r2]);
  assert.equal((store.getTransaction(r2.id) as WsMessageRecord).body, r2.body);
  await store.close();
  const again = openStore(dir, { readOnly: true });
  assert.deepEqual([(again.getTransaction(r.id) as WsMessageRecord).body, (again.getTransaction(r2.id) as WsMessageRecord).body], [r.body, r2.body]);
  await again.close();

  // a new store: values as written (the record's body text appears verbatim in the data file)
  const fresh = tempDir(t);
  const s2 = openStore(fresh);
  const r3 = ws(conn().id, 'u1', 'server', 0, { body: body.slice(0, 3000) });
  await s2.putTransactions([r3]);
  await s2.close();
  assert.ok(readFileSync(join(fresh, 'db', 'data.mdb')).includes(Buffer.from(r3.body!.slice(0, 200))));
});

test('two worker threads write concurrently and the main thread sees every record, ids sorted; conversation updates are never lost', async (t) => {
  const { dir, store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  const run = () => new Promise<string[]>((resolve, reject) => {
    const w = new Worker(child, { workerData: { dir, ids: idSharedBuffer(), connId: c.id, batches: 20, size: 50, convKey: 'shared', increments: 40 } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  nextId(); // the shared sequence is live in this thread too
  const [w1, w2] = await Promise.all([run(), run()]);
  assert.equal(w1.length + w2.length, 2000);
  const seen: string[] = [];
  for (let after: string | undefined; ;) {
    const p = store.listTransactions({ conn: c.id, after, limit: 1000 });
    seen.push(...p.items.map((r) => r.id));
    if (!p.next) break;
    after = p.next;
  }
  assert.deepEqual(seen, [...w1, ...w2].sort());
  assert.equal(new Set(seen).size, 2000, 'ids unique across threads');
  const big = store.getTransaction(w1[0]) as HttpTransaction;
  assert.equal(big.respBody, 'x'.repeat(6000));
  const conv = store.listConversations({}).items;
  assert.equal(conv.length, 1);
  assert.equal(conv[0].turns.length, 80, 'every increment from both threads kept');
});

test('kill -9 during heavy capture: the store reopens consistent with every acknowledged record', async (t) => {
  const dir = tempDir(t);
  const acked: string[] = [];
  const proc = spawn(process.execPath, [child, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`child exited early (${code})`)));
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      acked.push(...lines.filter(Boolean));
      if (acked.length >= 3000) {
        proc.removeAllListeners('exit');
        proc.kill('SIGKILL');
        proc.once('exit', () => resolve());
      }
    });
  });
  const store = openStore(dir);
  t.after(() => store.close());
  for (const id of acked) assert.ok(store.getTransaction(id), `acknowledged ${id} lost`);
  // consistency: every record is reachable through its indexes and every index entry has its record
  const all: TransactionRecord[] = [];
  for (let after: string | undefined; ;) {
    const p = store.listTransactions({ after, limit: 1000 });
    all.push(...p.items);
    if (!p.next) break;
    after = p.next;
  }
  assert.ok(all.length >= acked.length);
  const conns = new Set(all.map((r) => r.conn));
  let viaConn = 0;
  for (const cid of conns) {
    assert.ok(store.getConnection(cid));
    for (let after: string | undefined; ;) {
      const p = store.listTransactions({ conn: cid, after, limit: 1000 });
      viaConn += p.items.length;
      if (!p.next) break;
      after = p.next;
    }
  }
  assert.equal(viaConn, all.length);
  let bigSeen = 0;
  for (const r of all) if (r.kind === 'WS_RESP' && (r as WsMessageRecord).seq === 3) {
    assert.ok((store.getTransaction(r.id) as WsMessageRecord).body === 'y'.repeat(9000), 'big body stored apart survives with its record');
    bigSeen++;
  }
  assert.ok(bigSeen > 0);
  // and the store takes writes again
  await store.putTransactions([http(all[0].conn)]);
});

test('a filtered page that matches little ends at its scan budget with a cursor; following the cursors yields every match once, in order, both ways', async (t) => {
  const { store } = tempStore(t, { listScanBudget: 100 });
  const recs: WsMessageRecord[] = [];
  for (let c = 0; c < 3; c++) {
    const cn = conn();
    await store.putConnection(cn);
    const batch: WsMessageRecord[] = [];
    for (let i = 0; i < 300; i++) {
      const ctrl = i % 97 === 50;
      batch.push(ws(cn.id, 'u', i % 2 ? 'server' : 'client', i, ctrl ? { kind: 'WS_CTRL', opcode: 'ping' } : {}));
    }
    await store.putTransactions(batch);
    recs.push(...batch);
  }
  const want = recs.filter((r) => r.kind === 'WS_CTRL').map((r) => r.id).sort();
  assert.equal(want.length, 9);
  const follow = (backward: boolean) => {
    const got: string[] = [];
    let pages = 0, short = 0;
    for (let cursor: string | undefined; ;) {
      const page = store.listTransactions({ kind: 'WS_CTRL', limit: 5, ...(backward ? { before: cursor ?? 'ffffffffffffffff' } : { after: cursor }) });
      pages++;
      if (page.items.length < 5 && page.next) short++;
      got.push(...page.items.map((r) => r.id));
      if (!page.next) break;
      cursor = page.next;
      assert.ok(pages < 100, 'pages make progress');
    }
    return { got, short };
  };
  const fwd = follow(false);
  assert.deepEqual(fwd.got, want);
  assert.ok(fwd.short > 0, 'some pages ended at the budget, short of the limit');
  const bwd = follow(true);
  assert.deepEqual(bwd.got.sort(), want, 'backward: the same ids');
  assert.equal(store.listTransactions({ limit: 1000 }).items.length, 900, 'an unfiltered page is not cut: every entry it reads is a match');
});
