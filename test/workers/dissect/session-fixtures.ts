// Records as the real decoders produce them (WsMessageRecord, HttpTransaction), for assembly tests,
// and the store the tests run against: the real LMDB store on a temp dir when src/store/lmdb.ts
// exists, else a small in-memory Store with the same read-modify-write contract.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nextId } from '../../../src/store/ids.js';
import type { Conversation, Header, HttpTransaction, SseEvent, TransactionRecord, WsMessageRecord } from '../../../src/records.js';
import type { Store } from '../../../src/store/store.js';
import { openStore } from '../../../src/store/lmdb.js';
import { assembleRecords, conversationByKey, publicConversation, type StoredConversation } from '../../../src/workers/assemble.js';

export function upgradeTx(conn: string, ts: number, headers: Header[], host = 'api.openai.com', path = '/v1/responses'): HttpTransaction {
  return {
    id: nextId(), ts, kind: 'HTTP', conn, host, port: 443, scheme: 'https', path, method: 'GET', status: 101, httpVersion: '1.1',
    reqHeaders: [['Host', host], ['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ...headers], respHeaders: [['Upgrade', 'websocket']],
    reqBytes: 200, respBytes: 100, durationMs: 5, truncated: false,
  };
}

/** One direction of one WebSocket connection: allocates seq numbers in wire order. */
export class WsLane {
  seq = 0;
  constructor(readonly conn: string, readonly upgrade: string, readonly direction: 'client' | 'server', readonly path = '/v1/responses', readonly host = 'api.openai.com') {}
  msg(ts: number, body: unknown): WsMessageRecord {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return {
      id: nextId(), ts, kind: this.direction === 'client' ? 'WS_REQ' : 'WS_RESP', conn: this.conn, host: this.host, port: 443, scheme: 'wss', path: this.path,
      upgrade: this.upgrade, seq: this.seq++, direction: this.direction, opcode: 'text', compressed: true, frames: 1,
      wireBytes: text.length + 6, size: Buffer.byteLength(text), truncated: false, body: text,
    };
  }
  close(ts: number, code = 1000): WsMessageRecord {
    return {
      id: nextId(), ts, kind: 'WS_CTRL', conn: this.conn, host: this.host, port: 443, scheme: 'wss', path: this.path, upgrade: this.upgrade,
      seq: this.seq++, direction: this.direction, opcode: 'close', compressed: false, frames: 1, wireBytes: 8, size: 2, truncated: false, closeCode: code, closeReason: '',
    };
  }
}

export function sse(events: Record<string, any>[], named = true): SseEvent[] {
  return events.map((e) => (named && typeof e.type === 'string' ? { event: e.type, data: JSON.stringify(e) } : { data: typeof e === 'string' ? e : JSON.stringify(e) }));
}

export function httpTx(o: { conn?: string; ts: number; host: string; path: string; headers?: Header[]; req: unknown; resp?: unknown; events?: SseEvent[]; status?: number; error?: HttpTransaction['error'] }): HttpTransaction {
  const reqBody = JSON.stringify(o.req);
  const tx: HttpTransaction = {
    id: nextId(), ts: o.ts, kind: 'HTTP', conn: o.conn ?? nextId(), host: o.host, port: 443, scheme: 'https', path: o.path, method: 'POST',
    httpVersion: '1.1', reqHeaders: [['Host', o.host], ['Content-Type', 'application/json'], ['Authorization', '[REDACTED]'], ...(o.headers ?? [])],
    respHeaders: [['Content-Type', o.events ? 'text/event-stream' : 'application/json']], reqBody, reqBytes: reqBody.length + 200,
    respBytes: 100, durationMs: 50, truncated: false,
  };
  if (o.status !== 0) tx.status = o.status ?? 200;
  if (o.events) { tx.respEvents = o.events; tx.respBody = o.events.map((e) => (e.event ? `event: ${e.event}\n` : '') + `data: ${e.data}\n\n`).join(''); }
  else if (o.resp !== undefined) tx.respBody = typeof o.resp === 'string' ? o.resp : JSON.stringify(o.resp);
  if (o.error) tx.error = o.error;
  return tx;
}

/** The real LMDB store on a fresh temp dir. */
export async function testStore(): Promise<{ store: Store; done: () => Promise<void>; real: boolean }> {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-assemble-'));
  const store: Store = openStore(dir);
  return { store, real: true, done: async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
}

/** Runs fn against a fresh real store, closed and removed after. */
export async function withStore(fn: (s: Store) => Promise<void>): Promise<void> {
  const { store, done } = await testStore();
  try { await fn(store); } finally { await done(); }
}

/** Commits and assembles as a capture worker does; assembly must count nothing as failed. */
export async function feed(store: Store, records: TransactionRecord[]): Promise<void> {
  await store.putTransactions(records);
  const m = await assembleRecords(store, records);
  assert.equal(m.decodeErrors, undefined, 'no decode errors on well-formed records');
}

/** A stored conversation by its assembly key, as the API serves it. */
export function conv(store: Store, key: string): Conversation {
  const c = conversationByKey(store, key);
  assert.ok(c, `conversation ${key} exists`);
  return publicConversation(c as StoredConversation);
}

/** Commits then assembles, as the worker entry does. */
export async function commitAndAssemble(store: Store, assemble: (s: Store, r: TransactionRecord[]) => Promise<unknown>, records: TransactionRecord[]): Promise<void> {
  await store.putTransactions(records);
  await assemble(store, records);
}

/** All conversations but the assembler's internal objects, by key. */
export function allConversations(store: Store): Map<string, Conversation> {
  const out = new Map<string, Conversation>();
  for (let after: string | undefined; ;) {
    const p = store.listConversations({ limit: 1000, after });
    for (const c of p.items) if (!c.internal) out.set(c.key, c);
    if (!p.next || !p.items.length) break;
    after = p.next;
  }
  return out;
}

/** turnTexts, a superseded turn's line marked with a leading `~`. */
export function shownTexts(c: Conversation): string[] {
  return turnTexts(c).map((t, i) => (c.turns[i].superseded ? '~' : '') + t);
}

/** A conversation's turns as `role:text|call(id)|result(id name)` lines (` !reason` when incomplete), for compact assertions. */
export function turnTexts(c: Conversation): string[] {
  return c.turns.map((t) => `${t.role}:${t.blocks.map((b) => (b.type === 'text' || b.type === 'reasoning' ? b.text : b.type === 'tool_call' ? `call(${b.callId})` : `result(${b.callId}${b.name ? ' ' + b.name : ''})`)).join('|')}${t.incomplete ? ' !' + t.incomplete : ''}`);
}
