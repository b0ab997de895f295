// The real API server over HTTP on 127.0.0.1 with a real LMDB store: every route, its 400/404/405
// answers, SSE live events, Last-Event-ID resumption across the replay/live hand-over (no gap, no
// duplicate), heartbeats, slow SSE clients being cut off, live events made by the capture workers
// in a running greytap, and /metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerResponse, createServer, get, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { openStore, type LmdbStore } from '../../src/store/lmdb.js';
import { startApi, RecordEvents } from '../../src/api/server.js';
import { registry } from '../../src/metrics.js';
import type { Conversation, TransactionRecord } from '../../src/records.js';
import { conversationId } from '../../src/workers/assemble.js';
import { getPublicConversation } from '../../src/api/public-conversations.js';
import { conn, http, tempDir, ws } from '../store/fixtures.js';
import { curl, startGreytap, waitFor } from '../helpers/harness.js';
import { MAX_WRITERS } from '../../src/api/body-json.js';

interface Ctx { base: string; server: Server; store: LmdbStore; events: RecordEvents; healthy: { v: boolean } }

async function setup(t: { after(fn: () => unknown): void }, sse?: { heartbeatMs?: number; maxBufferBytes?: number }): Promise<Ctx> {
  const store = openStore(tempDir(t));
  const events = new RecordEvents();
  const healthy = { v: true };
  const server = await startApi({ host: '127.0.0.1', port: 0, store, registry, caPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', health: () => healthy.v, events, sse });
  t.after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await store.close();
  });
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, store, events, healthy };
}

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const r = await fetch(url);
  return { status: r.status, body: await r.json() };
}

test('REST routes: listing with filters and cursors, details with bodies, connections with messages, conversations', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  const up = http(c.id, { status: 101, respBody: undefined, reqBody: undefined });
  const recs: TransactionRecord[] = [http(c.id, { respBody: 'B'.repeat(9000) }), up, ws(c.id, up.id, 'client', 0, { ts: 1 }), ws(c.id, up.id, 'server', 0, { ts: 2 }), http(conn().id, { host: 'example.com' })];
  await store.putTransactions(recs);
  recs.sort((a, b) => (a.id < b.id ? -1 : 1)); // the 101 was allocated first
  await store.updateConversation('k', () => ({ id: '', key: 'k', client: 'codex', provider: 'openai-ws', startedTs: 1, updatedTs: 2, turns: [] }));

  let r = await getJson(`${base}/api/transactions`);
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), recs.map((x) => x.id));
  assert.equal(r.body.next, null);
  assert.equal('respBody' in r.body.items[0], false, 'listing has no bodies');
  r = await getJson(`${base}/api/transactions?limit=2`);
  assert.equal(r.body.items.length, 2);
  assert.equal(r.body.next, recs[1].id);
  assert.equal(recs[0].id, up.id);
  r = await getJson(`${base}/api/transactions?after=${r.body.next}&limit=2`);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), [recs[2].id, recs[3].id]);
  r = await getJson(`${base}/api/transactions?kind=WS_RESP`);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), [recs[3].id]);
  r = await getJson(`${base}/api/transactions?host=example.com`);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), [recs[4].id]);
  r = await getJson(`${base}/api/transactions?conn=${c.id}&kind=HTTP`);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), [up.id, recs[1].id]);
  r = await getJson(`${base}/api/transactions?before=ffffffffffffffff&limit=1`);
  assert.deepEqual(r.body.items.map((x: TransactionRecord) => x.id), [recs[4].id]);

  r = await getJson(`${base}/api/transactions/${recs[1].id}`);
  assert.equal(r.status, 200);
  assert.equal(r.body.respBody, 'B'.repeat(9000));
  assert.equal(r.body.reqHeaders[1][1], 'Bearer [REDACTED]');

  r = await getJson(`${base}/api/connections/${c.id}`);
  assert.equal(r.status, 200);
  assert.equal(r.body.clientAddr, c.clientAddr);
  assert.deepEqual(r.body.messages.map((m: { id: string }) => m.id), [recs[2].id, recs[3].id]);
  assert.equal(r.body.messages[0].body, (recs[2] as { body: string }).body);

  r = await getJson(`${base}/api/conversations?client=codex`);
  assert.equal(r.body.items.length, 1);
  const convId = r.body.items[0].id;
  assert.equal((await getJson(`${base}/api/conversations?client=aider`)).body.items.length, 0);
  r = await getJson(`${base}/api/conversations/${convId}`);
  assert.equal(r.body.key, 'k');
  // written a turn at a time, the same JSON as the conversation whole
  const one = await fetch(`${base}/api/conversations/${convId}`);
  assert.equal(one.headers.get('content-length'), null);
  assert.deepEqual(await one.json(), JSON.parse(JSON.stringify(getPublicConversation(store, convId))));

  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type')!, /text\/html/);
  assert.match(await page.text(), /<title>greytap<\/title>[\s\S]*EventSource\('\/api\/events'\)/);
  const ca = await fetch(`${base}/ca.pem`);
  assert.equal(ca.status, 200);
  assert.match(await ca.text(), /BEGIN CERTIFICATE/);
});

test('conversations are listed most recently updated first, by client too; a cursor pages through each once while conversations move', async (t) => {
  const { base, store } = await setup(t);
  // ids as the assembler makes them: hashes of the keys, in no relation to recency
  const keys = Array.from({ length: 8 }, (_, i) => `openai-ws:conn${i}:cache${i}`);
  const client = (i: number) => (i % 2 ? 'codex' : 'claude-code');
  for (const [i, key] of keys.entries()) {
    // (fractions of a millisecond: a WebSocket record's ts has them, and updatedTs is a record's ts)
    await store.updateConversation(key, () => ({ id: conversationId(key), key, client: client(i), provider: 'openai-ws', startedTs: 1000 + i, updatedTs: 1000 + i + 0.25, turns: [] }));
  }
  const touch = (i: number, updatedTs: number) => store.updateConversation(keys[i], (c) => ({ ...c!, updatedTs }));
  await touch(2, 2000); // assembled again: first now
  const order = [2, 7, 6, 5, 4, 3, 1, 0];
  const ids = (i: number[]) => i.map((n) => conversationId(keys[n]));
  assert.notDeepEqual(ids(order), ids(order).sort(), 'id order is not recency');
  const list = async (q: string) => {
    const r = await getJson(`${base}/api/conversations?${q}`);
    assert.equal(r.status, 200, q);
    return r.body as { items: Conversation[]; next: string | null };
  };
  const listed = async (q: string) => (await list(q)).items.map((c) => c.id);

  assert.deepEqual(await listed(''), ids(order));
  assert.deepEqual(await listed('client=codex'), ids(order.filter((i) => client(i) === 'codex')));
  assert.deepEqual(await listed('client=claude-code&limit=2'), ids([2, 6]));

  // Keyset paging: the cursor is a place in recency order, not an item. A conversation updated
  // between pages moves to the front: already listed, it is not listed again; not yet listed, this
  // pass passes it by (a new listing shows it first). Every other one comes exactly once.
  const seen: string[] = [];
  let page = await list('limit=3');
  seen.push(...page.items.map((c) => c.id));
  assert.deepEqual(seen, ids([2, 7, 6]));
  await touch(7, 3000); // listed already
  await touch(3, 3001); // not yet listed
  await touch(5, 500); // not yet listed, moves back: still listed once, at its new place
  while (page.next) {
    page = await list(`limit=3&after=${encodeURIComponent(page.next)}`);
    seen.push(...page.items.map((c) => c.id));
  }
  assert.deepEqual(seen, ids([2, 7, 6, 4, 1, 0, 5]));
  assert.deepEqual(await listed(''), ids([3, 7, 2, 6, 4, 1, 0, 5]));

  const byClient: string[] = [];
  for (let next: string | null = null, first = true; first || next; first = false) {
    page = await list(`client=codex&limit=1${next ? `&after=${encodeURIComponent(next)}` : ''}`);
    byClient.push(...page.items.map((c) => c.id));
    next = page.next;
  }
  assert.deepEqual(byClient, ids([3, 7, 1, 5]));
  for (const q of ['after=nope', `after=${conversationId(keys[0])}`, 'after=12-']) assert.equal((await getJson(`${base}/api/conversations?${q}`)).status, 400, q);
});

test('bad parameters are 400 with a reason, unknown ids and routes 404, other methods 405; healthz and HEAD', async (t) => {
  const { base, healthy } = await setup(t);
  for (const q of ['kind=HTTPS', 'limit=0', 'limit=1001', 'limit=abc', 'after=zz', 'conn=nothex', 'since=-1', 'colour=red', 'limit=1&limit=2', 'after=0000000000000001&before=0000000000000002', 'host=']) {
    const r = await getJson(`${base}/api/transactions?${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(typeof r.body.error, 'string', q);
    assert.ok(r.body.error.length > 5, q);
  }
  assert.equal((await getJson(`${base}/api/conversations?limit=x`)).status, 400);
  assert.equal((await getJson(`${base}/api/connections/abc?limit=0`)).status, 400);
  for (const p of ['/api/transactions/0000000000000001', '/api/connections/0000000000000001', '/api/conversations/0000000000000001', '/api/transactions/a/b', '/nope', '/api']) {
    const r = await getJson(`${base}${p}`);
    assert.equal(r.status, 404, p);
    assert.ok(r.body.error, p);
  }
  for (const m of ['POST', 'PUT', 'DELETE']) {
    const r = await fetch(`${base}/api/transactions`, { method: m });
    assert.equal(r.status, 405, m);
    assert.equal(r.headers.get('allow'), 'GET, HEAD');
  }
  let h = await fetch(`${base}/healthz`);
  assert.equal(h.status, 200);
  assert.equal((await h.text()).trim(), 'ok');
  healthy.v = false;
  h = await fetch(`${base}/healthz`);
  assert.equal(h.status, 503);
  const head = await fetch(`${base}/api/transactions`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
});

test('/metrics serves the registry in Prometheus text format with store_bytes filled in', async (t) => {
  const { base, store } = await setup(t);
  await store.putTransactions([http(conn().id)]);
  const r = await fetch(`${base}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), registry.contentType);
  const text = await r.text();
  for (const m of ['greytap_connections_active', 'greytap_capture_dropped_total{reason="store_error"}', 'greytap_store_records_total', 'greytap_process_cpu_seconds_total']) assert.ok(text.includes(m), m);
  const bytes = /^greytap_store_bytes (\d+)/m.exec(text);
  assert.ok(bytes && Number(bytes[1]) > 0, 'store_bytes reports the data file size');
});

/** A minimal SSE client over node:http that collects parsed events. */
function sse(url: string, headers: Record<string, string> = {}) {
  const got: { id?: string; event?: string; data: string }[] = [];
  const comments: string[] = [];
  let res: IncomingMessage | undefined;
  let closed = false;
  const waiters: (() => void)[] = [];
  const ready = new Promise<IncomingMessage>((resolve, reject) => {
    const req = get(url, { headers }, (r) => {
      res = r;
      let buf = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev: { id?: string; event?: string; data: string } = { data: '' };
          let isEvent = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line);
            else { isEvent = true; const k = line.slice(0, line.indexOf(':')); const v = line.slice(line.indexOf(':') + 2); if (k === 'data') ev.data = v; else if (k === 'id') ev.id = v; else if (k === 'event') ev.event = v; }
          }
          if (isEvent) got.push(ev);
        }
        for (const w of waiters.splice(0)) w();
      });
      r.on('close', () => { closed = true; for (const w of waiters.splice(0)) w(); });
      resolve(r);
    });
    req.on('error', reject);
  });
  const until = async (cond: () => boolean) => {
    while (!cond()) {
      if (closed) throw new Error('SSE stream closed');
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { got, comments, ready, until, close: () => res?.destroy(), isClosed: () => closed };
}

test('SSE: live events carry id, kind and the record without bodies; heartbeats flow', async (t) => {
  const { base, store, events } = await setup(t, { heartbeatMs: 30 });
  const s = sse(`${base}/api/events`);
  const r = await s.ready;
  t.after(() => s.close());
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type']!, /text\/event-stream/);
  const c = conn();
  const recs = [http(c.id, { respBody: 'x'.repeat(5000) }), ws(c.id, 'u', 'server', 0)];
  await store.putTransactions(recs);
  events.committed(recs.map((x) => x.id));
  events.committed([c.id]); // not a transaction: no event
  await s.until(() => s.got.length >= 2);
  assert.deepEqual(s.got.map((e) => [e.id, e.event]), [[recs[0].id, 'HTTP'], [recs[1].id, 'WS_RESP']]);
  const data = JSON.parse(s.got[0].data);
  assert.equal(data.id, recs[0].id);
  assert.equal('respBody' in data, false);
  await s.until(() => s.comments.some((l) => l.startsWith(': heartbeat')));
  const bad = await fetch(`${base}/api/events`, { headers: { 'last-event-id': 'nope' } });
  assert.equal(bad.status, 400);
});

test('SSE in a running greytap: while a client listens, the capture workers make the events; the forwarding thread reads no record for them', async (t) => {
  const origin = createServer((req, res) => res.end(`ok ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const g = await startGreytap(['--map', `live.test:80=127.0.0.1:${(origin.address() as AddressInfo).port}`]);
  t.after(() => g.stop());
  // every store of this thread (the API's among them) shares the class: count the records it reads
  const probe = openStore(tempDir(t));
  t.after(() => probe.close());
  let proto = probe as unknown as { getTransactionMeta: (id: string) => unknown }; // (a handle over the shared instance over the class)
  while (!Object.prototype.hasOwnProperty.call(proto, 'getTransactionMeta')) proto = Object.getPrototypeOf(proto);
  const read = proto.getTransactionMeta;
  let reads = 0;
  proto.getTransactionMeta = function (this: unknown, id: string) { reads++; return read.call(this, id); };
  t.after(() => { proto.getTransactionMeta = read; });

  const s = sse(`${g.api}/api/events`);
  await s.ready;
  t.after(() => s.close());
  const paths = ['/a', '/b?x=1', '/c'];
  for (const p of paths) {
    const r = await curl(['-x', `http://${g.httpProxy}`, '-H', 'Authorization: Bearer sk-live-secret', `http://live.test${p}`]);
    assert.equal(r.stdout, `ok http://live.test${p}`, r.stderr); // (the request line goes as the client wrote it)
  }
  await waitFor(() => s.got.length >= paths.length, 'an event per exchange');
  const data = s.got.map((e) => JSON.parse(e.data));
  assert.deepEqual(data.map((d) => d.path), paths);
  assert.deepEqual(s.got.map((e) => [e.id, e.event]), data.map((d) => [d.id, 'HTTP']));
  for (const d of data) {
    assert.equal('respBody' in d, false, 'no bodies in events');
    assert.equal(JSON.stringify(d.reqHeaders).includes('sk-live-secret'), false, 'the event shows the record as stored: redacted');
  }
  assert.equal(reads, 0, 'the forwarding thread read no record for the live events');
});

test('SSE: Last-Event-ID replays from the store, then goes live with no gap and no duplicate at the hand-over', async (t) => {
  const { base, store, events } = await setup(t);
  const c = conn();
  const older: TransactionRecord[] = [];
  for (let i = 0; i < 650; i++) older.push(http(c.id, { path: `/a${i}`, reqHeaders: [['X-Pad', 'p'.repeat(300)]] }));
  await store.putTransactions(older);
  // committed to the store, but the pool's report reaches the main thread only after the client connects
  const late = [http(c.id, { path: '/late1' }), http(c.id, { path: '/late2' })];
  await store.putTransactions(late);

  const resumeFrom = older[99].id;
  const s = sse(`${base}/api/events`, { 'last-event-id': resumeFrom });
  await s.ready;
  t.after(() => s.close());
  events.committed(late.map((x) => x.id));
  const live = [http(c.id, { path: '/live1' }), http(c.id, { path: '/live2' })];
  await store.putTransactions(live);
  events.committed(live.map((x) => x.id));
  events.committed([late[0].id]); // a repeated report must not repeat the event

  const want = [...older.slice(100), ...late, ...live].map((x) => x.id);
  await s.until(() => s.got.length >= want.length);
  const more = [http(c.id, { path: '/after' })];
  await store.putTransactions(more);
  events.committed(more.map((x) => x.id));
  await s.until(() => s.got.length >= want.length + 1);
  assert.deepEqual(s.got.map((e) => e.id), [...want, more[0].id]);
});

test('SSE: a client that stops reading is cut within its bound even when one batch of events is many times that', async (t) => {
  const bound = 64 * 1024;
  const { base, store, events } = await setup(t, { maxBufferBytes: bound, heartbeatMs: 3_600_000 });
  const c = conn();
  const recs = Array.from({ length: 1024 }, () => http(c.id, { reqHeaders: Array.from({ length: 8 }, (_, i) => [`X-H${i}`, 'v'.repeat(200)] as [string, string]) }));
  await store.putTransactions(recs);
  // what the server holds for the client, seen after each write (its own buffer, past the kernel's)
  let held = 0, cut = -1;
  const write = ServerResponse.prototype.write, destroy = ServerResponse.prototype.destroy;
  ServerResponse.prototype.write = function (this: ServerResponse, ...a: unknown[]) { const r = (write as (...x: unknown[]) => boolean).apply(this, a); held = Math.max(held, this.writableLength); return r; } as typeof write;
  ServerResponse.prototype.destroy = function (this: ServerResponse, ...a: unknown[]) { if (cut < 0) cut = this.writableLength; return (destroy as (...x: unknown[]) => ServerResponse).apply(this, a); } as typeof destroy;
  t.after(() => { ServerResponse.prototype.write = write; ServerResponse.prototype.destroy = destroy; });
  const sock = connect(Number(new URL(base).port), '127.0.0.1');
  t.after(() => sock.destroy());
  sock.write('GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  await new Promise((r) => sock.once('data', r));
  sock.pause(); // never reads again
  const frame = Buffer.byteLength(`id: ${recs[0].id}\nevent: HTTP\ndata: ${JSON.stringify(store.getTransactionMeta(recs[0].id))}\n\n`);
  assert.ok(frame * recs.length > 20 * bound, 'one batch is many times the bound');
  let batches = 0;
  while (cut < 0 && batches < 100) { events.committed(recs.map((r) => r.id)); batches++; await new Promise((r) => setTimeout(r, 5)); }
  assert.ok(cut >= 0, 'the client was cut');
  assert.ok(held <= bound + 64 * 1024 + frame, `held ${held} bytes for a client bounded at ${bound}`);
});

test('SSE: two pipelined event requests on one connection both stop counting as listeners when it closes', async (t) => {
  const { base, events } = await setup(t);
  const sock = connect(Number(new URL(base).port), '127.0.0.1');
  t.after(() => sock.destroy());
  const req = 'GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
  sock.write(req + req); // the second response waits for the first, which never ends
  await waitFor(() => Atomics.load(events.listening, 0) === 2, 'both requests listening');
  sock.destroy();
  await waitFor(() => Atomics.load(events.listening, 0) === 0, 'no listener once the connection is gone', 5_000);
});

test('SSE: a client that stops reading is disconnected instead of buffering without bound; close() ends streams', async (t) => {
  const { base, store, events, server } = await setup(t, { maxBufferBytes: 64 * 1024 });
  const c = conn();
  const big = http(c.id, { reqHeaders: [['X-Pad', 'p'.repeat(4000)]] });
  await store.putTransactions([big]);
  const closed = new Promise<void>((resolve, reject) => {
    const req = request(`${base}/api/events`, (res) => {
      res.pause(); // never read
      res.on('close', () => resolve());
      res.on('error', () => resolve());
      // tens of MB of events: far beyond socket buffers and the 64 KiB bound
      for (let i = 0; i < 40; i++) events.committed(Array(500).fill(big.id));
    });
    req.on('error', () => resolve());
    req.on('socket', (sock) => sock.on('close', () => resolve()));
    req.end();
    setTimeout(() => reject(new Error('slow client was not disconnected')), 60_000).unref();
  });
  await closed;
  // a healthy client still works, and server.close() ends it rather than hanging
  const s = sse(`${base}/api/events`);
  await s.ready;
  await new Promise<void>((r) => server.close(() => r()));
  await s.until(() => s.isClosed()).catch(() => {});
  assert.ok(s.isClosed());
  server.listen(0); // let the t.after close() find a listening server
});

test('GET /api/connections/:id carries message bodies up to a budget; the rest as metadata, each body at /api/transactions/:id', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  const up = http(c.id, { status: 101, respBody: undefined, reqBody: undefined });
  await store.putTransactions([up]);
  const big = (i: number) => String.fromCharCode(97 + i).repeat(1 << 20);
  for (let i = 0; i < 10; i++) await store.putTransactions([ws(c.id, up.id, 'server', i, { ts: i + 1, body: big(i), size: 1 << 20 })]);
  const r = await getJson(`${base}/api/connections/${c.id}`);
  assert.equal(r.status, 200);
  assert.equal(r.body.messages.length, 10);
  assert.equal(r.body.bodiesOmitted, true);
  const withBody = r.body.messages.filter((m: any) => m.body !== undefined);
  assert.deepEqual(withBody.map((m: any) => m.seq), [0, 1, 2, 3, 4, 5, 6, 7], 'the first 8 MiB of bodies, in wire order');
  assert.equal(withBody[7].body, big(7));
  const last = r.body.messages[9];
  assert.equal(last.body, undefined);
  assert.equal((await getJson(`${base}/api/transactions/${last.id}`)).body.body, big(9));
});

/** One GET with a chosen Host header (fetch cannot set Host): what a DNS-rebound browser sends. */
function getWithHost(base: string, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(base + path, { headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
  });
}

test('DNS rebinding: a Host header naming another domain gets 403 on captured data; local names and IP literals pass', async (t) => {
  const { base, store } = await setup(t);
  const port = new URL(base).port;
  const c = conn();
  await store.putConnection(c);
  const tx = http(c.id, { reqBody: '{"prompt":"secret source code"}' });
  await store.putTransactions([tx]);
  // an attacker page at http://rebind.attacker.example:PORT/ whose name now resolves to 127.0.0.1
  for (const p of ['/', '/api/transactions', `/api/transactions/${tx.id}`, `/api/connections/${c.id}`, '/api/conversations', '/api/events']) {
    for (const h of [`rebind.attacker.example:${port}`, 'rebind.attacker.example', `localhost.attacker.example:${port}`]) {
      const r = await getWithHost(base, p, h);
      assert.equal(r.status, 403, `${h} ${p}`);
      assert.ok(!r.body.includes('secret source code'), `${h} ${p}`);
      assert.match(JSON.parse(r.body).error, /host/i);
    }
  }
  for (const h of [`127.0.0.1:${port}`, `localhost:${port}`, 'localhost', `[::1]:${port}`, `LocalHost:${port}`, `greytap.localhost:${port}`, `192.168.1.20:${port}`]) {
    const r = await getWithHost(base, `/api/transactions/${tx.id}`, h);
    assert.equal(r.status, 200, h);
    assert.ok(r.body.includes('secret source code'), h);
  }
  // monitoring and the CA hold no captured data: a scraper may name the machine however it likes
  for (const p of ['/healthz', '/metrics', '/ca.pem']) assert.equal((await getWithHost(base, p, `devbox.lan:${port}`)).status, 200, p);
});

test('GET /api/transactions/:id with 16 MiB bodies is sent a piece at a time (chunked), and the JSON is exact', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  // text with a BOM, multi-byte and astral characters and characters JSON escapes, 16 MiB
  const unit = '\uFEFFé€😀"\\\n\t\u0001<ok>' + 'x'.repeat(1000);
  const text = unit.repeat(Math.ceil((16 << 20) / unit.length)).slice(0, 16 << 20); // (ends in an x, not half a surrogate pair)
  const bin = Buffer.alloc(16 << 20);
  for (let i = 0; i < bin.length; i++) bin[i] = (i * 7919) & 0xff;
  const events = Array.from({ length: 100_000 }, (_, i) => ({ event: 'message', data: `{"delta":"part ${i} é"}` }));
  const a = http(c.id, { reqBody: text, respBody: undefined, respBodyBase64: bin.toString('base64'), reqBodySize: Buffer.byteLength(text), respBodySize: bin.length });
  const b = http(c.id, { respBody: 'data: x\n\n'.repeat(1 << 20), respEvents: events });
  await store.putTransactions([a, b]);
  // (how long the forwarding thread waits meanwhile is bench/api-stall.ts's to measure)
  // Each request on a connection of its own: the comparisons below hold this thread for seconds on
  // a loaded machine, past the server's 5 s keep-alive, and a pooled socket the server closed
  // meanwhile would fail the next fetch with ECONNRESET.
  const once = { headers: { connection: 'close' } };
  for (const r of [a, b]) {
    const res = await fetch(`${base}/api/transactions/${r.id}`, once);
    const raw = Buffer.from(await res.arrayBuffer());
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(res.headers.get('content-length'), null, 'sent in pieces, not made whole first');
    assert.deepEqual(JSON.parse(raw.toString('utf8')), JSON.parse(JSON.stringify(store.getTransaction(r.id))));
  }
  const full = await (await fetch(`${base}/api/transactions/${a.id}`, once)).json();
  assert.equal(full.reqBody, text);
  assert.equal(full.respBodyBase64, bin.toString('base64'));
  const head = await fetch(`${base}/api/transactions/${a.id}`, { method: 'HEAD', ...once });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
});

test('GET /api/transactions/:id writes SSE events of every array size msgpack has, read a piece at a time, exactly', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  // fixarray (0, 1, 15), array 16 (16, 65,535) and array 32 (65,536) headers; events of ~100 bytes
  // so the larger ones span several pieces
  const txs = [0, 1, 15, 16, 65_535, 65_536].map((n) => http(c.id, {
    respBody: 'data: x\n\n', respEvents: Array.from({ length: n }, (_, i) => ({ event: 'message', data: `{"delta":"${'é'.repeat(i % 40)} ${i}"}`, ...(i % 7 ? {} : { id: String(i) }) })),
  }));
  await store.putTransactions(txs);
  for (const r of txs) {
    const res = await fetch(`${base}/api/transactions/${r.id}`, { headers: { connection: 'close' } });
    assert.equal(res.status, 200);
    const got = await res.json() as { respEvents: unknown[] };
    assert.equal(got.respEvents.length, r.respEvents!.length);
    assert.deepEqual(got, JSON.parse(JSON.stringify(store.getTransaction(r.id))));
  }
});

test('GET /api/conversations pages by size too: a listing of large conversations ends early with a cursor instead of one huge response', async (t) => {
  const { base, store } = await setup(t);
  // 60 conversations of ~400 KB each (long sessions with tool output): ~24 MB as one listing
  const n = 60;
  for (let i = 0; i < n; i++) {
    const key = `anthropic:k${i}`;
    await store.updateConversation(key, () => ({ id: conversationId(key), key, client: 'claude-code', provider: 'anthropic', startedTs: i, updatedTs: 1000 + i,
      turns: Array.from({ length: 50 }, (_, j) => ({ role: j % 2 ? 'assistant' as const : 'user' as const, blocks: [{ type: 'text' as const, text: `${i}/${j} ` + 'w'.repeat(8000) }], source: [] })) }));
  }
  const seen: string[] = [];
  let next: string | null = null, pages = 0;
  do {
    const r: Response = await fetch(`${base}/api/conversations?limit=500${next ? `&after=${encodeURIComponent(next)}` : ''}`);
    const text = await r.text();
    assert.equal(r.status, 200);
    // at most the page budget (8 MiB) and one conversation past it
    assert.ok(text.length < (8 << 20) + 500_000, `one listing response of ${text.length} bytes`);
    const page = JSON.parse(text) as { items: Conversation[]; next: string | null };
    assert.ok(page.items.length > 0);
    for (const c of page.items) assert.equal(c.turns.length, 50); // items stay whole conversations
    seen.push(...page.items.map((c) => c.id));
    next = page.next;
    pages++;
  } while (next);
  assert.ok(pages >= 3, `${pages} pages`);
  assert.deepEqual(seen, Array.from({ length: n }, (_, i) => conversationId(`anthropic:k${n - 1 - i}`)), 'each once, most recent first');
  // a conversation larger than the budget still comes, alone
  const key = 'anthropic:huge';
  await store.updateConversation(key, () => ({ id: conversationId(key), key, client: 'claude-code', provider: 'anthropic', startedTs: 1, updatedTs: 5000,
    turns: [{ role: 'user', blocks: [{ type: 'text', text: 'h'.repeat(9 << 20) }], source: [] }] }));
  const r = await getJson(`${base}/api/conversations?limit=500`);
  assert.deepEqual(r.body.items.map((c: Conversation) => c.id), [conversationId(key)]);
  assert.ok(r.body.next);
});

test('GET /api/connections/:id read over several event-loop turns is still the connection in wire order, limit and flags as one read', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  const up = http(c.id, { status: 101, respBody: undefined, reqBody: undefined });
  // 1,300 messages (more than one turn's page), the server's committed first, ts ties between directions
  const server = Array.from({ length: 650 }, (_, i) => ws(c.id, up.id, 'server', i, { ts: 1000 + i, body: `s${i}` }));
  const client = Array.from({ length: 650 }, (_, i) => ws(c.id, up.id, 'client', i, { ts: 1000 + i, body: `c${i}` }));
  await store.putTransactions([up, ...server]);
  await store.putTransactions(client);
  const want = store.wsMessages(c.id).map((m) => m.body);
  assert.equal(want.length, 1300);
  const all = await getJson(`${base}/api/connections/${c.id}`);
  assert.equal(all.status, 200);
  assert.equal(all.body.id, c.id);
  assert.deepEqual(all.body.messages.map((m: { body: string }) => m.body), want);
  assert.equal(all.body.messagesTruncated, undefined);
  // limit counts messages in id order (the first 700: the server's 650 and 50 of the client's), then wire order
  const some = await getJson(`${base}/api/connections/${c.id}?limit=700`);
  assert.equal(some.body.messagesTruncated, true);
  assert.deepEqual(some.body.messages.map((m: { body: string }) => m.body), store.wsMessages(c.id, { limit: 700 }).map((m) => m.body));
});

test('big answers: at most MAX_WRITERS are written at once (each holds a body); the next waits for a place, and gets its answer once one is free; listings and HEAD do not wait', async (t) => {
  const { base, store } = await setup(t);
  const c = conn();
  await store.putConnection(c);
  const body = 'w'.repeat(16 << 20); // (more than loopback's socket buffers take from a reader that stopped)
  const r = http(c.id, { respBody: body, respBodySize: body.length });
  await store.putTransactions([r]);
  const url = `${base}/api/transactions/${r.id}`;
  // readers that take the head and then nothing: each keeps its place
  const stalled: { req: ReturnType<typeof get>; res: Promise<IncomingMessage> }[] = [];
  for (let i = 0; i < MAX_WRITERS; i++) {
    const req = get(url, { agent: false });
    req.on('error', () => {});
    stalled.push({ req, res: new Promise((resolve) => req.once('response', (res) => { res.pause(); resolve(res); })) });
  }
  try {
    await Promise.all(stalled.map((s) => s.res));
    let answered = false;
    const next = fetch(url, { headers: { connection: 'close' } }).then(async (res) => { answered = true; return res.json(); });
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(answered, false, 'the next answer waits while every place is held');
    // a listing page and a HEAD hold no body: they do not wait behind the slow readers
    const page = await fetch(`${base}/api/transactions?limit=1`, { headers: { connection: 'close' } });
    assert.match(await page.text(), /^\{"items":\[\{"id":"[^"]+".*\],"next":/s, 'answered, its fields in the order they always had');
    assert.equal((await fetch(url, { method: 'HEAD', headers: { connection: 'close' } })).status, 200);
    stalled.shift()!.req.destroy();
    const got = await next;
    assert.equal(got.respBody, body);
  } finally {
    for (const s of stalled) s.req.destroy(); // (the server closes only once they are gone)
  }
  // every place is given back: answers go on
  assert.equal((await getJson(`${base}/api/transactions?limit=1`)).status, 200);
});
