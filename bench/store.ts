// The capture store on its own: CPU per WebSocket record committed, and the time of a filtered
// listing page, each against a baseline measured in the same run.
//
//   node dist/bench/store.js [options]     (--help lists them with their defaults)
//
// Write: batches of the (a) workload's records (1 KiB JSON bodies, 8 connections, both directions)
// go through the Store's putTransactions, each batch one commit, into a fresh store; the baseline
// puts the same records into one plain LMDB table (one B-tree put per record, same page size, same
// commit per batch) — the least any LMDB store can pay. Rounds alternate, on fresh directories.
// At the bound: a deployment with --retention reaches a steady state where every record written
// is matched by one retention removes. The same writes into a store already holding as many
// records, the oldest removed as retention's sweep does (purgeTransactions, PURGE_BATCH per
// transaction) once that many are over: the CPU per record of each, in rounds between the others.
// List: a store of `--list-conns` WebSocket connections plus HTTP exchanges, opened one after another
// over `--list-days` days (record ids carry that time); `?kind=` and `?host=` pages (which reach
// messages through their connections, found by the ids' time buckets) against the unfiltered page.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { MAP_BYTES, openStore } from '../src/store/lmdb.js';
import { idAt, nextId } from '../src/store/ids.js';
import { PURGE_BATCH } from '../src/store/retention.js';
import { median } from './latency.js';
import { benchArgs } from './args.js';
import type { HttpTransaction, TransactionRecord, WsMessageRecord } from '../src/records.js';

const o = benchArgs('node dist/bench/store.js [options]: the capture store alone, CPU per WebSocket record and the time of a filtered page', {
  records: { default: 60000, min: 1, help: 'records per round' },
  batch: { default: 150, min: 1, help: 'records per commit' },
  conns: { default: 8, min: 1, help: 'connections the records belong to' },
  rounds: { default: 3, min: 1, help: 'rounds of each kind, alternating' },
  'list-conns': { default: 2000, min: 1, help: 'WebSocket connections in the listing\'s store' },
  'list-days': { default: 7, min: 0, help: 'days those connections are spread over (0: all at once)' },
}, {}, { json: 'also write the result as JSON' });
const RECORDS = o.records, BATCH = o.batch, CONNS = o.conns, ROUNDS = o.rounds, LIST_CONNS = o['list-conns'];
const LIST_MS = o['list-days'] * 86_400_000;

/** Records per connection in the listing's store (one in ten an HTTP exchange). */
const PER_CONN = 40;
const body = JSON.stringify({ type: 'response.create', model: 'gpt-5', input: [{ role: 'user', content: 'x'.repeat(900) }] });

/** A record id (and ts) at a given time. */
let idSeq = 0;
function at(ms: number): { id: string; ts: number } {
  return { id: idAt(ms, idSeq++ % 4096), ts: ms };
}

function wsRecord(conn: string, i: number, host = 'api.openai.com', when = { id: nextId(), ts: Date.now() }): WsMessageRecord {
  const direction = i % 2 ? 'server' : 'client';
  return {
    ...when, kind: direction === 'client' ? 'WS_REQ' : 'WS_RESP', conn, host, port: 443, scheme: 'wss',
    path: '/v1/responses', upgrade: conn, seq: i >> 1, direction, opcode: 'text', compressed: true, frames: 1,
    wireBytes: 420, size: body.length, body, truncated: false,
  };
}

function httpRecord(conn: string, host: string, when: { id: string; ts: number }): HttpTransaction {
  return {
    ...when, kind: 'HTTP', conn, host, port: 443, scheme: 'https', path: '/v1/models', method: 'GET',
    status: 200, statusText: 'OK', httpVersion: 'HTTP/1.1', reqHeaders: [['Host', host]], respHeaders: [['Content-Type', 'application/json']],
    reqBody: '', respBody: '{"data":[]}', reqBytes: 80, respBytes: 120, durationMs: 3, truncated: false, reqBodySize: 0, respBodySize: 11,
  };
}

function batches(): TransactionRecord[][] {
  const conns = Array.from({ length: CONNS }, () => nextId());
  const out: TransactionRecord[][] = [];
  for (let i = 0; i < RECORDS; i += BATCH) {
    out.push(Array.from({ length: Math.min(BATCH, RECORDS - i) }, (_, k) => wsRecord(conns[(i + k) % CONNS], i + k)));
  }
  return out;
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function writeGreytap(dir: string, data: TransactionRecord[][]): Promise<number> {
  const store = openStore(dir);
  const t0 = cpuUs();
  for (const b of data) await store.putTransactions(b);
  const us = cpuUs() - t0;
  await store.close();
  return us / RECORDS;
}

async function writePlain(dir: string, data: TransactionRecord[][]): Promise<number> {
  const root = open(join(dir, 'db'), { pageSize: 8192, maxDbs: 16, mapSize: MAP_BYTES }); // (the store's map, so only the tables differ)
  const table = root.openDB({ name: 'transactions' });
  const t0 = cpuUs();
  for (const b of data) {
    root.transactionSync(() => { for (const r of b) table.putSync(r.id, r); });
    await new Promise((r) => setImmediate(r)); // one commit per event turn, as the store's writers do
  }
  const us = cpuUs() - t0;
  await root.close();
  return us / RECORDS;
}

async function writeAtBound(dir: string, data: TransactionRecord[][]): Promise<{ write: number; purge: number }> {
  const store = openStore(dir);
  for (const b of batches()) await store.putTransactions(b); // the bound: as many records, older
  let write = 0, purge = 0, over = 0;
  for (const b of data) {
    let t0 = cpuUs();
    await store.putTransactions(b);
    write += cpuUs() - t0;
    for (over += b.length; over >= PURGE_BATCH; over -= PURGE_BATCH) {
      t0 = cpuUs();
      await store.purgeTransactions('ffffffffffffffff', PURGE_BATCH);
      purge += cpuUs() - t0;
    }
  }
  await store.close();
  return { write: write / RECORDS, purge: purge / (RECORDS - over) };
}

function fresh(): string {
  return mkdtempSync(join(tmpdir(), 'greytap-store-bench-'));
}

async function writeBench() {
  const plain: number[] = [], greytap: number[] = [], boundWrite: number[] = [], boundPurge: number[] = [];
  const atBound = async (dir: string, data: TransactionRecord[][]) => {
    const r = await writeAtBound(dir, data);
    boundPurge.push(r.purge);
    return r.write;
  };
  for (let r = 0; r < ROUNDS; r++) {
    for (const [run, into] of [[writePlain, plain], [writeGreytap, greytap], [atBound, boundWrite]] as const) {
      const dir = fresh();
      try { into.push(await run(dir, batches())); } finally { rmSync(dir, { recursive: true, force: true }); }
    }
  }
  const g = median(greytap);
  return {
    plainUsPerRecord: median(plain), greytapUsPerRecord: g, ratio: g / median(plain),
    atBound: { writeUsPerRecord: median(boundWrite), purgeUsPerRecord: median(boundPurge), purgeRatio: median(boundPurge) / g },
    rounds: { plain, greytap, boundWrite, boundPurge },
  };
}

async function listBench() {
  const dir = fresh();
  const store = openStore(dir);
  try {
    // Connections open one after another, a few interleaved at a time, as sessions of agents do,
    // each group a few minutes long, spread over the days.
    const conns = Array.from({ length: LIST_CONNS }, () => nextId());
    const ids: string[] = [];
    const start = Date.now() - LIST_MS;
    for (let c = 0; c < LIST_CONNS; c += 4) {
      const part: TransactionRecord[] = [];
      const t0 = start + Math.floor((c / LIST_CONNS) * LIST_MS);
      for (let i = 0; i < 4 * PER_CONN; i++) {
        const conn = conns[c + (i % 4)];
        const when = at(t0 + i * 1000);
        if (conn) part.push(i % 10 === 9 ? httpRecord(conn, 'api.openai.com', when) : wsRecord(conn, i, c % 8 ? 'api.openai.com' : 'chatgpt.com', when));
      }
      await store.putTransactions(part);
      ids.push(...part.map((r) => r.id));
    }
    const mid = ids[ids.length >> 1];
    const time = (q: Parameters<typeof store.listTransactions>[0]) => {
      const t: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        const p = store.listTransactions({ ...q, limit: 100 });
        t.push(performance.now() - t0);
        if (p.items.length === 0) throw new Error(`${JSON.stringify(q)}: an empty page`); // (a small --list-conns may not fill a page)
      }
      return median(t);
    };
    const base = time({ after: mid });
    const pages: Record<string, number> = {};
    for (const [name, q] of Object.entries({
      'kind=WS_REQ': { kind: 'WS_REQ' as const, after: mid },
      'host=chatgpt.com': { host: 'chatgpt.com', after: mid },
      'kind=WS_RESP, newest page': { kind: 'WS_RESP' as const, before: 'ffffffffffffffff' },
      'kind=HTTP': { kind: 'HTTP' as const, after: mid },
    })) pages[name] = time(q);
    return { wsConnections: LIST_CONNS, days: LIST_MS / 86_400_000, records: ids.length, unfilteredMs: base, pagesMs: pages };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const write = await writeBench();
const list = await listBench();
const f = (x: number) => x.toFixed(1);
console.log(`store write: ${RECORDS} WebSocket records of 1 KiB in batches of ${BATCH}, ${ROUNDS} alternating rounds (median)`);
console.log(`  plain LMDB table: ${f(write.plainUsPerRecord)} µs CPU/record   greytap store: ${f(write.greytapUsPerRecord)} µs CPU/record   = ${write.ratio.toFixed(2)}× the plain table`);
console.log(`  at the retention bound (as many records before, the oldest removed ${PURGE_BATCH} a transaction): write ${f(write.atBound.writeUsPerRecord)} µs CPU/record, removal ${f(write.atBound.purgeUsPerRecord)} µs CPU/record = ${write.atBound.purgeRatio.toFixed(2)}× a fresh write`);
console.log(`store list: pages of 100 over ${list.records} records on ${list.wsConnections} WebSocket connections over ${list.days} days (median of 5)`);
console.log(`  unfiltered page: ${list.unfilteredMs.toFixed(2)} ms`);
for (const [name, ms] of Object.entries(list.pagesMs)) console.log(`  ${name}: ${ms.toFixed(2)} ms = ${(ms / list.unfilteredMs).toFixed(1)}× unfiltered`);
if (o.json) writeFileSync(o.json, JSON.stringify({ write, list }, null, 2) + '\n');
