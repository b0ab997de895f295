// The listing's k-way merge: id order in both directions, each id once, sources opened only when the
// merge reaches their first possible id, and unfinished scans closed when the page is full (their
// LMDB cursors are released).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeIds, type IdSource } from '../../src/store/merge-ids.js';

const hex = (n: number) => n.toString(16).padStart(16, '0');

test('merges any number of sorted id lists into one ordered stream without repeats, forward and backward, with or without bounds', () => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  for (const k of [1, 2, 5, 64, 300]) {
    const lists = Array.from({ length: k }, () => [...new Set(Array.from({ length: rand(40) }, () => hex(rand(5000))))].sort());
    const want = [...new Set(lists.flat())].sort();
    for (const bounded of [false, true]) {
      // a bound may be loose (before the first id), never past it
      const fwd: IdSource[] = lists.map((l, i) => ({ from: bounded && l.length && i % 3 ? (i % 2 ? l[0] : hex(0)) : undefined, open: () => l }));
      assert.deepEqual([...mergeIds(fwd, false)], want, `${k} lists forward${bounded ? ', bounded' : ''}`);
      const back: IdSource[] = lists.map((l, i) => ({ from: bounded && l.length && i % 3 ? l[l.length - 1] : undefined, open: () => [...l].reverse() }));
      assert.deepEqual([...mergeIds(back, true)], [...want].reverse(), `${k} lists backward${bounded ? ', bounded' : ''}`);
    }
  }
  assert.deepEqual([...mergeIds([{ open: () => [] }, { open: () => [hex(2)] }, { from: hex(9), open: () => [] }], false)], [hex(2)]);
});

test('a page reads each open source at most one id past its end, opens no source whose bound lies beyond it, and closes what it opened', () => {
  const read = new Map<number, number>();
  const closed = new Set<number>();
  const opened = new Set<number>();
  const source = (i: number, from?: string): IdSource => ({
    from,
    open: () => {
      opened.add(i);
      return {
        [Symbol.iterator]() {
          let n = 0;
          return {
            next: () => { read.set(i, (read.get(i) ?? 0) + 1); n++; return n > 100 ? { done: true, value: undefined } : { done: false, value: hex(i * 1000 + n * 10 + (i % 10)) }; },
            return: () => { closed.add(i); return { done: true, value: undefined }; },
          };
        },
      };
    },
  });
  // sources 0–3 hold ids from 10 on, source 50 from 50,010 on (its bound says so)
  const got: string[] = [];
  for (const id of mergeIds([source(0), source(1, hex(1010)), source(2, hex(2010)), source(3), source(50, hex(50_010))], false)) {
    got.push(id);
    if (got.length === 8) break;
  }
  assert.deepEqual(got, [10, 20, 30, 40, 50, 60, 70, 80].map(hex), 'source 0 alone covers the first 8 ids');
  assert.deepEqual([...opened].sort(), [0, 3], 'sources whose bound lies past the page stay closed');
  assert.ok(read.get(3)! <= 1, `source 3 read ${read.get(3)} ids`);
  assert.deepEqual([...closed].sort(), [0, 3]);
});

test('sources that arrive in groups (time buckets) merge in order, and a group is read only once the page reaches its bound', () => {
  let seed = 11;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  // 40 connections, each a run of ids inside [start, start + len]; buckets of 1,000 ids
  const conns = Array.from({ length: 40 }, () => {
    const start = rand(20_000), len = rand(3_000);
    return [...new Set(Array.from({ length: 1 + rand(30) }, () => start + rand(len + 1)))].sort((a, b) => a - b).map(hex);
  });
  const bucket = (id: string) => Math.floor(parseInt(id, 16) / 1000);
  const want = [...new Set(conns.flat())].sort();
  for (const backward of [false, true]) {
    const read: number[] = [];
    const groups = function* () {
      const order = Array.from({ length: 25 }, (_, i) => (backward ? 24 - i : i));
      const seen = new Set<number>();
      for (const b of order) {
        read.push(b);
        const sources: IdSource[] = [];
        conns.forEach((l, i) => {
          // a connection belongs to every bucket its ids span; it comes with the first the scan meets
          if (seen.has(i) || bucket(l[0]) > b || bucket(l[l.length - 1]) < b) return;
          seen.add(i);
          sources.push({ from: backward ? l[l.length - 1] : l[0], open: () => (backward ? [...l].reverse() : l) });
        });
        yield { until: backward ? hex(b * 1000) : hex(b * 1000 + 999), sources };
      }
    };
    const label = backward ? 'backward' : 'forward';
    assert.deepEqual([...mergeIds([], backward, groups())], backward ? [...want].reverse() : want, `${label}: every id, in order`);
    read.length = 0;
    const page: string[] = [];
    for (const id of mergeIds([], backward, groups())) if (page.push(id) === 5) break;
    assert.deepEqual(page, (backward ? [...want].reverse() : want).slice(0, 5), `${label}: the first page`);
    const last = bucket(page[4]);
    assert.ok(read.length <= Math.abs(last - read[0]) + 2, `${label}: read buckets ${read.join(',')} for a page ending in bucket ${last}`);
  }
});
