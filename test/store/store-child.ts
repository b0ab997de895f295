// Helper run as a worker thread or a child process by the store tests (not a test itself).
//   worker: workerData = { dir, ids: SharedArrayBuffer, conn, batches, size, convKey, increments }
//   child:  argv = [dir] — writes batches forever, printing each id once its batch has resolved.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openStore } from '../../src/store/lmdb.js';
import { adoptIdBuffer } from '../../src/store/ids.js';
import { conn, http, ws } from './fixtures.js';
import type { Conversation, TransactionRecord } from '../../src/records.js';

async function asWorker(): Promise<void> {
  const { dir, ids, connId, batches, size, convKey, increments } = workerData as {
    dir: string; ids: SharedArrayBuffer; connId: string; batches: number; size: number; convKey: string; increments: number;
  };
  adoptIdBuffer(ids);
  const store = openStore(dir);
  const written: string[] = [];
  for (let b = 0; b < batches; b++) {
    const batch: TransactionRecord[] = [];
    for (let i = 0; i < size; i++) batch.push(http(connId, { path: `/b${b}/${i}`, respBody: 'x'.repeat(i % 7 === 0 ? 6000 : 300) }));
    await store.putTransactions(batch);
    written.push(...batch.map((r) => r.id));
  }
  for (let i = 0; i < increments; i++) {
    await store.updateConversation(convKey, (c) => {
      const base: Conversation = c ?? { id: '', key: convKey, client: 'codex', provider: 'openai-ws', startedTs: Date.now(), updatedTs: 0, turns: [] };
      return { ...base, updatedTs: Date.now(), turns: [...base.turns, { role: 'user', blocks: [{ type: 'text', text: `t${i}` }], source: [] }] };
    });
  }
  await store.close();
  parentPort!.postMessage(written);
}

async function asChild(): Promise<void> {
  const store = openStore(process.argv[2]);
  const c = conn();
  await store.putConnection(c);
  for (let b = 0; ; b++) {
    const up = http(c.id, { status: 101, path: `/ws${b}` });
    const batch: TransactionRecord[] = [up];
    for (let i = 0; i < 50; i++) batch.push(ws(c.id, up.id, i % 2 ? 'server' : 'client', i >> 1, { body: 'y'.repeat(i === 7 ? 9000 : 200) }));
    await store.putTransactions(batch);
    process.stdout.write(batch.map((r) => r.id).join('\n') + '\n');
  }
}

if (!isMainThread) void asWorker();
else void asChild();
