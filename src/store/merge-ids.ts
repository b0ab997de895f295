// A lazy k-way merge of id-ordered index scans. A filtered listing may read one HTTP index range and
// one byConn range per WebSocket connection. A min-heap pulls each open range only as far as the
// page needs (plus one id), and a range is opened only once the merge reaches its first possible
// id, so a page costs the connections it overlaps, not every connection in the store.

export interface IdSource {
  /** No id of this source precedes `from` in scan order; absent: open at once. */
  from?: string;
  open(): Iterable<string>;
}

/** The sources' ids in scan order (ascending, or descending when `backward`), each id once. */
export function* mergeIds(sources: IdSource[], backward: boolean): Generator<string> {
  const before = backward ? (a: string, b: string) => a > b : (a: string, b: string) => a < b;
  const heap: { id: string; it: Iterator<string> }[] = [];
  const opened: Iterator<string>[] = [];
  const swap = (i: number, j: number) => { const t = heap[i]; heap[i] = heap[j]; heap[j] = t; };
  const push = (it: Iterator<string>) => {
    const n = it.next();
    if (n.done) return;
    heap.push({ id: n.value, it });
    for (let i = heap.length - 1; i > 0 && before(heap[i].id, heap[(i - 1) >> 1].id); i = (i - 1) >> 1) swap(i, (i - 1) >> 1);
  };
  const pop = () => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l].id, heap[m].id)) m = l;
        if (r < heap.length && before(heap[r].id, heap[m].id)) m = r;
        if (m === i) break;
        swap(i, m);
        i = m;
      }
    }
    return top;
  };
  const open = (s: IdSource) => {
    const it = s.open()[Symbol.iterator]();
    opened.push(it);
    push(it);
  };
  const lazy = sources.filter((s) => s.from !== undefined).sort((a, b) => (a.from === b.from ? 0 : before(a.from!, b.from!) ? -1 : 1));
  try {
    for (const s of sources) if (s.from === undefined) open(s);
    let next = 0;
    let last: string | undefined;
    for (;;) {
      // every source that could hold the heap's top (or anything before it) is open before it is yielded
      while (next < lazy.length && (heap.length === 0 || !before(heap[0].id, lazy[next].from!))) open(lazy[next++]);
      if (heap.length === 0) return;
      const { id, it } = pop();
      push(it);
      if (id !== last) yield (last = id); // an id in two sources (earlier stores' WebSocket host/kind entries)
    }
  } finally {
    for (const it of opened) it.return?.(); // closes the LMDB cursors of unfinished scans
  }
}
