// A lazy k-way merge of id-ordered index scans. A filtered listing may read one HTTP index range and
// one byConn range per WebSocket connection. A min-heap pulls each open range only as far as the
// page needs (plus one id), and a range is opened only once the merge reaches its first possible
// id, so a page costs the connections it overlaps, not every connection in the store. Sources may
// also arrive in groups (one per time bucket of connections), read only as far as the page needs.

export interface IdSource {
  /** No id of this source precedes `from` in scan order; absent: open at once. */
  from?: string;
  open(): Iterable<string>;
}

/** Sources found together; no source of a LATER group holds an id at or before `until` in scan order. */
export interface SourceGroup {
  until: string;
  sources: IdSource[];
}

/**
 * The sources' ids in scan order (ascending, or descending when `backward`), each id once.
 * `groups` are read one at a time, each only once the merge would otherwise yield an id past the
 * previous group's `until`.
 */
export function* mergeIds(sources: IdSource[], backward: boolean, groups: Iterable<SourceGroup> = []): Generator<string> {
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
  const byFrom = (a: IdSource, b: IdSource) => (a.from === b.from ? 0 : before(a.from!, b.from!) ? -1 : 1);
  let lazy: IdSource[] = [];
  let next = 0;
  const add = (list: IdSource[]) => {
    for (const s of list) if (s.from === undefined) open(s);
    const bounded = list.filter((s) => s.from !== undefined);
    if (bounded.length === 0) return;
    lazy = [...lazy.slice(next), ...bounded].sort(byFrom);
    next = 0;
  };
  const more = groups[Symbol.iterator]();
  let until: string | undefined; // of the last group read; undefined: none read yet
  let groupsDone = false;
  try {
    add(sources);
    let last: string | undefined;
    for (;;) {
      // Before an id is yielded, every source that could hold it (or anything before it) is open:
      // groups are read until their bound passes the earliest candidate (the heap's top, or the next
      // unopened source's bound), then unopened sources are opened up to the heap's top.
      for (;;) {
        const pending = next < lazy.length ? lazy[next].from! : undefined;
        const top = heap.length ? heap[0].id : undefined;
        const earliest = top === undefined || (pending !== undefined && before(pending, top)) ? pending : top;
        if (!groupsDone && (until === undefined || earliest === undefined || before(until, earliest))) {
          const g = more.next();
          if (g.done) groupsDone = true;
          else { until = g.value.until; add(g.value.sources); }
        } else if (pending !== undefined && (top === undefined || !before(top, pending))) open(lazy[next++]);
        else break;
      }
      if (heap.length === 0) return;
      const { id, it } = pop();
      push(it);
      if (id !== last) yield (last = id); // an id in two sources (earlier stores' WebSocket host/kind entries)
    }
  } finally {
    for (const it of opened) it.return?.(); // closes the LMDB cursors of unfinished scans
    more.return?.();
  }
}
