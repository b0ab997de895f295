// Record ids sort in commit order across every thread and across restarts: a 64-bit counter
// shared by the main thread and the workers (SharedArrayBuffer), seeded from the clock. Each id is
// max(previous + 1, now_ms << 12), so ids follow the clock while several threads allocate without
// locks (compare-and-swap), and more than 4096 ids in one millisecond borrow from the next one
// instead of repeating. Encoded as 16 lower-case hex digits, so string order = numeric order.

/** What nextId() makes: the API's cursors and the store's time buckets rely on this shape. */
export const ID_RE = /^[0-9a-f]{16}$/;

let counter: BigInt64Array = new BigInt64Array(new SharedArrayBuffer(8));

/** The buffer to hand to workers (workerData) so they share the sequence. */
export function idSharedBuffer(): SharedArrayBuffer {
  return counter.buffer as SharedArrayBuffer;
}

/** In a worker: adopt the main thread's sequence. */
export function adoptIdBuffer(buf: SharedArrayBuffer): void {
  counter = new BigInt64Array(buf);
}

function encode(n: bigint): string {
  return n.toString(16).padStart(16, '0');
}

export function nextId(): string {
  const floor = BigInt(Date.now()) << 12n;
  for (;;) {
    const prev = Atomics.load(counter, 0);
    const next = prev + 1n > floor ? prev + 1n : floor;
    if (Atomics.compareExchange(counter, 0, prev, next) === prev) return encode(next);
  }
}

/**
 * The id of the `seq`th allocation in millisecond `ms` (without a burst's borrowing): `idAt(ms)` is
 * the lowest id a record of that millisecond can have, the floor of a time cursor.
 */
export function idAt(ms: number, seq = 0): string {
  return encode((BigInt(Math.max(0, Math.floor(ms))) << 12n) + BigInt(seq));
}

/** The millisecond timestamp an id was allocated at (approximately, for ids under a burst). */
export function idTime(id: string): number {
  return Number(BigInt('0x' + id) >> 12n);
}

/** The id right after (step 1) or before (step -1) a 16-hex-digit id; undefined past either end or for another shape. */
export function adjacentId(id: string, step: 1 | -1): string | undefined {
  if (!ID_RE.test(id)) return undefined;
  const n = BigInt('0x' + id) + BigInt(step);
  return n < 0n || n >= 1n << 64n ? undefined : encode(n);
}
