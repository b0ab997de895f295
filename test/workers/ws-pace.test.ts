// The worker's memory of skipped WebSocket delta batches (ws-pace.ts): what it hands back, what it
// forgets, and that remembering a message never makes its body's string.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { foldedUpTo, forgetUnfolded, rememberUnfolded, unfoldedAfter } from '../../src/workers/ws-pace.js';
import { lazyBody } from '../../src/store/body-bytes.js';
import type { WsMessageRecord } from '../../src/records.js';

/** A server text message whose body is bytes until read; `decoded` counts the reads that made its string. */
function message(conn: string, seq: number, bytes: number, decoded: { n: number }): WsMessageRecord {
  const r = {
    id: `${conn}-${seq}`, ts: seq, kind: 'WS_RESP', conn, host: 'api.openai.com', port: 443, scheme: 'wss', path: '/v1/responses',
    upgrade: 'u', seq, direction: 'server', opcode: 'text', compressed: false, frames: 1, wireBytes: bytes + 4, size: bytes, truncated: false,
  } as WsMessageRecord;
  lazyBody(r, 'body', Buffer.alloc(bytes, 0x61), (b) => (decoded.n++, Buffer.from(b).toString('utf8')));
  return r;
}

test('remembered messages come back in seq order past the mark, and their bodies stay bytes until read', () => {
  const conn = 'pace-a';
  const decoded = { n: 0 };
  const rs = [1, 2, 3].map((seq) => message(conn, seq, 64 << 10, decoded));
  rememberUnfolded(conn, [rs[2], rs[0], rs[1]]);
  assert.equal(decoded.n, 0, 'weighing a message against the budget does not decode it');
  assert.deepEqual(unfoldedAfter(conn, 0, new Set())?.map((r) => r.seq), [1, 2, 3]);
  assert.deepEqual(unfoldedAfter(conn, 1, new Set([rs[2].id]))?.map((r) => r.seq), [2], 'records of the batch itself are left out');
  assert.equal(unfoldedAfter(conn, 3, new Set()), null, 'nothing past the mark: ask the store');
  foldedUpTo(conn, 2);
  assert.deepEqual(unfoldedAfter(conn, 2, new Set())?.map((r) => r.seq), [3]);
  assert.equal(unfoldedAfter(conn, 0, new Set()), null, 'a gap before the remembered records: ask the store');
  assert.equal(decoded.n, 0);
  assert.equal(rs[2].body?.length, 64 << 10);
  assert.equal(decoded.n, 1, 'the string is made when the body is read');
  forgetUnfolded(conn);
  assert.equal(unfoldedAfter(conn, 2, new Set()), null);
});

test('over the budget a connection is forgotten, and what was forgotten frees the budget for others', () => {
  const decoded = { n: 0 };
  // 16 Mi characters per worker: 300 × 64 KiB is over it
  const big = Array.from({ length: 300 }, (_, i) => message('pace-b', i + 1, 64 << 10, decoded));
  rememberUnfolded('pace-b', big);
  assert.equal(unfoldedAfter('pace-b', 0, new Set()), null, 'over the budget: nothing kept for the connection');
  const small = Array.from({ length: 200 }, (_, i) => message('pace-c', i + 1, 64 << 10, decoded));
  rememberUnfolded('pace-c', small);
  assert.equal(unfoldedAfter('pace-c', 0, new Set())?.length, 200, 'the forgotten connection left the whole budget');
  foldedUpTo('pace-c', 200);
  rememberUnfolded('pace-d', Array.from({ length: 200 }, (_, i) => message('pace-d', i + 1, 64 << 10, decoded)));
  assert.equal(unfoldedAfter('pace-d', 0, new Set())?.length, 200, 'folded records gave their weight back');
  forgetUnfolded('pace-d');
  assert.equal(decoded.n, 0);
});
