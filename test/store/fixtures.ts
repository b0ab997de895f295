// Records for store/API/export tests: one builder per kind, realistic field values.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionRecord, HttpTransaction, WsMessageRecord } from '../../src/records.js';
import { nextId } from '../../src/store/ids.js';
import { openStore, type LmdbStore, type StoreOptions } from '../../src/store/lmdb.js';

type After = { after(fn: () => unknown): void };

export function tempDir(t: After): string {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh store in a directory of its own, closed (then removed) when the test ends. */
export function tempStore(t: After, opts?: StoreOptions): { dir: string; store: LmdbStore } {
  const dir = tempDir(t);
  const store = openStore(dir, opts);
  t.after(() => store.close());
  return { dir, store };
}

export function conn(over: Partial<ConnectionRecord> = {}): ConnectionRecord {
  const ts = Date.now();
  return {
    id: nextId(), ts, listener: 'http', clientAddr: '127.0.0.1:50000', host: 'api.openai.com', port: 443,
    intercepted: true, mode: 'intercept', bytesUp: 10, bytesDown: 20, startTs: ts, ...over,
  };
}

// ts before the id, as capture takes them: the store relies on no id being older than its record's
// ts (a `since` query bounds the id range by it), and a millisecond can tick between the two.
export function http(connId: string, over: Partial<HttpTransaction> = {}): HttpTransaction {
  const ts = Date.now();
  return {
    id: nextId(), ts, kind: 'HTTP', conn: connId, host: 'api.openai.com', port: 443, scheme: 'https',
    path: '/v1/responses?stream=true&x=a%20b', method: 'POST', status: 200, statusText: 'OK', httpVersion: 'HTTP/1.1',
    reqHeaders: [['Host', 'api.openai.com'], ['Authorization', 'Bearer sk-secret'], ['Content-Type', 'application/json']],
    respHeaders: [['Content-Type', 'application/json'], ['Set-Cookie', 'sid=abc']],
    reqBody: '{"model":"gpt-5"}', respBody: '{"ok":true}', reqBytes: 120, respBytes: 80, durationMs: 42, truncated: false,
    reqBodySize: 17, respBodySize: 11, ...over,
  };
}

export function ws(connId: string, upgrade: string, direction: 'client' | 'server', seq: number, over: Partial<WsMessageRecord> = {}): WsMessageRecord {
  const ts = Date.now();
  return {
    id: nextId(), ts, kind: direction === 'client' ? 'WS_REQ' : 'WS_RESP', conn: connId, host: 'api.openai.com', port: 443,
    scheme: 'wss', path: '/v1/responses', upgrade, seq, direction, opcode: 'text', compressed: true, frames: 1,
    wireBytes: 30, size: 20, body: `{"seq":${seq},"dir":"${direction}"}`, truncated: false, ...over,
  };
}
