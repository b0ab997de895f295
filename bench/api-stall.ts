// How long one API request holds up the thread it shares with forwarding (serve runs the API on
// the main thread): the longest event-loop stall while a client reads a big record, a listing of
// large conversations, and a connection of 10,000 WebSocket messages — and while 20 clients read a
// big record or a listing page at once — each against a baseline measured in the same run:
// building that response in one JSON.stringify, as the API once did.
//
//   node dist/bench/api-stall.js [options]     (--help lists them with their defaults)
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { openStore } from '../src/store/lmdb.js';
import { nextId } from '../src/store/ids.js';
import { startApi } from '../src/api/server.js';
import { RecordEvents } from '../src/api/events.js';
import { getPublicConversation, listPublicConversations } from '../src/api/public-conversations.js';
import { conversationId } from '../src/workers/assemble.js';
import { median } from './latency.js';
import { benchArgs } from './args.js';
import type { ConnectionRecord, HttpTransaction, WsMessageRecord } from '../src/records.js';

const o = benchArgs('node dist/bench/api-stall.js [options]: how long one API request stalls the forwarding thread', {
  rounds: { default: 3, min: 1, help: 'requests of each kind (the median is printed)' },
  conversations: { default: 300, min: 1, help: 'conversations of ~400 KB in the listing\'s store' },
  messages: { default: 10000, min: 1, help: 'WebSocket messages of the connection read whole' },
  readers: { default: 20, min: 1, help: 'clients reading at once in the last cases' },
}, {}, {});

/** The longest gap between 5 ms ticks while `fn` runs: what a forwarding socket would have waited. */
async function stall(fn: () => Promise<unknown>): Promise<number> {
  let max = 0, last = performance.now();
  const timer = setInterval(() => { const now = performance.now(); max = Math.max(max, now - last); last = now; }, 5);
  try { await fn(); } finally { clearInterval(timer); }
  return Math.max(max, performance.now() - last);
}

/** The time of building a response in one go (the baseline: nothing can run meanwhile). */
function once(fn: () => unknown): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

const dir = mkdtempSync(join(tmpdir(), 'greytap-api-stall-'));
const store = openStore(dir);
const server = await startApi({ host: '127.0.0.1', port: 0, store, registry: new Registry(), caPem: '', health: () => true, events: new RecordEvents() });
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
// The client is curl, a process of its own: only the server's work is on this thread's clock.
// `readers` at once from one curl (--parallel): a spawn per reader would itself stall this thread.
const read = (path: string, readers = 1) => new Promise<void>((resolve, reject) => {
  const each = Array.from({ length: readers }, () => ['-o', '/dev/null', base + path]).flat();
  execFile('curl', ['-sSf', '--parallel', '--parallel-max', String(readers), ...each], (e) => (e ? reject(e) : resolve()));
});
try {
  const ts = Date.now();
  const c: ConnectionRecord = { id: nextId(), ts, listener: 'http', clientAddr: '127.0.0.1:1', host: 'api.example', port: 443, intercepted: true, mode: 'intercept', bytesUp: 0, bytesDown: 0, startTs: ts };
  await store.putConnection(c);
  const common = { ts, conn: c.id, host: 'api.example', port: 443, scheme: 'https' as const, path: '/v1/x', method: 'POST', status: 200, httpVersion: 'HTTP/1.1', reqHeaders: [], respHeaders: [], reqBytes: 0, respBytes: 0, durationMs: 1, truncated: false };
  // --max-body of text each way (escapes and multi-byte characters included), then 100,000 SSE events
  const unit = 'é€😀"\\\n<ok>' + 'x'.repeat(1000);
  const text = unit.repeat(Math.ceil((16 << 20) / unit.length)).slice(0, 16 << 20);
  const big: HttpTransaction = { ...common, id: nextId(), kind: 'HTTP', reqBody: text, respBody: text };
  const events: HttpTransaction = { ...common, id: nextId(), kind: 'HTTP', respBody: 'data: x\n\n'.repeat(100_000), respEvents: Array.from({ length: 100_000 }, (_, i) => ({ event: 'message', data: `{"delta":"part ${i}"}` })) };
  const up: HttpTransaction = { ...common, id: nextId(), kind: 'HTTP', status: 101 };
  const ws: WsMessageRecord[] = Array.from({ length: o.messages }, (_, i) => ({
    id: nextId(), ts, kind: i % 2 ? 'WS_RESP' : 'WS_REQ', conn: c.id, host: 'api.example', port: 443, scheme: 'wss', path: '/v1/responses', upgrade: up.id,
    seq: i >> 1, direction: i % 2 ? 'server' : 'client', opcode: 'text', compressed: true, frames: 1, wireBytes: 400, size: 1024, body: 'y'.repeat(1024), truncated: false,
  }));
  await store.putTransactions([big, events, up]);
  for (let i = 0; i < ws.length; i += 1000) await store.putTransactions(ws.slice(i, i + 1000));
  for (let i = 0; i < o.conversations; i++) {
    const key = `anthropic:bench-${i}`;
    await store.updateConversation(key, () => ({ id: conversationId(key), key, client: 'claude-code', provider: 'anthropic', startedTs: ts, updatedTs: ts + i,
      turns: Array.from({ length: 50 }, (_, j) => ({ role: j % 2 ? 'assistant' as const : 'user' as const, blocks: [{ type: 'text' as const, text: 'w'.repeat(8000) }], source: [] })) }));
  }
  // one long session: 2,000 turns of 8 KB (~16 MB), what the dashboard opens on a click
  const longKey = 'anthropic:bench-long';
  await store.updateConversation(longKey, () => ({ id: conversationId(longKey), key: longKey, client: 'claude-code', provider: 'anthropic', startedTs: ts, updatedTs: ts,
    turns: Array.from({ length: 2000 }, (_, j) => ({ role: j % 2 ? 'assistant' as const : 'user' as const, blocks: [{ type: 'text' as const, text: 'v'.repeat(8000) }], source: [] })) }));
  const cases: [string, string, () => unknown][] = [
    ['GET /api/conversations/:id, 2,000 turns of 8 KB', `/api/conversations/${conversationId(longKey)}`, () => JSON.stringify(getPublicConversation(store, conversationId(longKey)))],
    ['GET /api/transactions/:id, 2 × 16 MiB text', `/api/transactions/${big.id}`, () => JSON.stringify(store.getTransaction(big.id))],
    ['GET /api/transactions/:id, 100,000 SSE events', `/api/transactions/${events.id}`, () => JSON.stringify(store.getTransaction(events.id))],
    [`GET /api/conversations?limit=500, ${o.conversations} × ~400 KB`, '/api/conversations?limit=500', () => JSON.stringify(listPublicConversations(store, { limit: 500 }))],
    [`GET /api/connections/:id, ${o.messages} messages of 1 KiB`, `/api/connections/${c.id}`, () => JSON.stringify(store.wsMessages(c.id, { limit: 10_000 }))],
  ];
  /** Each case's longest stall while `readers` clients read its path at once, median of the rounds, against its baseline. */
  const report = async (title: string, list: [string, string, () => unknown][], readers: number) => {
    console.log(title);
    for (const [name, path, baseline] of list) {
      const s: number[] = [], b: number[] = [];
      for (let r = 0; r < o.rounds; r++) {
        s.push(await stall(() => read(path, readers)));
        b.push(once(baseline));
      }
      const [ms, bms] = [median(s), median(b)];
      console.log(`  ${name}: ${ms.toFixed(0)} ms; one stringify ${bms.toFixed(0)} ms; ${(ms / bms).toFixed(2)}× the baseline`);
    }
  };
  await report(`the longest event-loop stall of one request (median of ${o.rounds}), against building its response in one JSON.stringify`, cases, 1);
  // Many readers at once: the answers being written take turns, a piece per event-loop turn among
  // all of them (each yielding on its own, 20 readers of a 16 MiB body stalled for ~20 pieces).
  await report(`the longest stall while ${o.readers} clients read at once (median of ${o.rounds}), against building one response in one JSON.stringify`, [
    [`${o.readers} × GET /api/transactions/:id, 2 × 16 MiB text`, `/api/transactions/${big.id}`, () => JSON.stringify(store.getTransaction(big.id))],
    [`${o.readers} × GET /api/transactions?limit=1000`, '/api/transactions?limit=1000', () => JSON.stringify(store.listTransactions({ limit: 1000 }))],
  ], o.readers);
} finally {
  await new Promise<void>((r) => server.close(() => r()));
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
