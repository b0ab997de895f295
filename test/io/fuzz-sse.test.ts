// A short, fixed-seed run of the SSE capture fuzzer (bench/sse-fuzz.ts; bench/fuzz-sse.ts runs it
// for as long as you like): random event streams — every field kind, CR / LF / CRLF, BOMs, NUL in
// ids, unterminated last events, gzip — from a real origin through the real greytap (CONNECT + TLS
// and plain HTTP), cut at random write boundaries and chunk boundaries: the client gets the bytes
// unchanged and the stored events are what the WHATWG event stream interpretation dispatches.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { caseSeed, generateCase, interpretEventStream, startRig, type Rig } from '../../bench/sse-fuzz.js';

const SEED = 20261207;
const CASES = 176;
let rig: Rig | undefined;
after(() => rig?.close());

test('the oracle dispatches what the spec\'s own examples say', () => {
  const ev = (data: string, lastEventId = '', type = 'message') => ({ type, data, lastEventId });
  const run = (s: string) => interpretEventStream(Buffer.from(s), false);
  assert.deepEqual(run('data: YHOO\ndata: +2\ndata: 10\n\n'), [ev('YHOO\n+2\n10')]);
  // the third event has no blank line: discarded at the end of the stream
  assert.deepEqual(run(': test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n'), [ev('first event', '1'), ev('second event')]);
  assert.deepEqual(run('data\n\ndata\ndata\n\ndata:'), [ev(''), ev('\n')]);
  assert.deepEqual(run('data:test\n\ndata: test\n\n'), [ev('test'), ev('test')]);
  // and what the rest of the algorithm says: one BOM dropped, CR/CRLF/LF, NUL ids ignored, the id kept across events
  assert.deepEqual(run('\ufeffevent: a\rid: 7\r\ndata: x\r\rid: 8\u0000\ndata: y\n\n'), [ev('x', '7', 'a'), ev('y', '7')]);
  assert.deepEqual(run('\ufeff\ufeffdata: z\n\n'), []); // the second BOM is part of a field name
  // greytap's documented addition: the unterminated last event is kept
  assert.deepEqual(interpretEventStream(Buffer.from('data: a\n\ndata: b\ndata: c'), true), [ev('a'), ev('b\nc')]);
});

test(`fuzz seed ${SEED}: ${CASES} event streams through greytap match the spec's events`, async () => {
  rig = await startRig();
  const failed: string[] = [];
  const seen = { https: 0, http: 0, chunked: 0, length: 0, close: 0, gzip: 0, events: 0 };
  for (let i = 0; i < CASES; i += 16) {
    const group = Array.from({ length: 16 }, (_, k) => generateCase(caseSeed(SEED, i + k)));
    const problems = await rig.run(group);
    group.forEach((c, k) => {
      seen[c.transport]++;
      seen[c.framing]++;
      if (c.gzip) seen.gzip++;
      seen.events += interpretEventStream(c.body, true).length;
      if (problems[k].length) failed.push(`case seed ${c.seed} (node dist/bench/fuzz-sse.js --replay ${c.seed}): ${c.describe}\n  ${problems[k].join('\n  ')}`);
    });
  }
  assert.deepEqual(failed, []);
  // the run covered what it claims to
  for (const [k, n] of Object.entries(seen)) assert.ok(n > 0, `no ${k} in ${JSON.stringify(seen)}`);
});
