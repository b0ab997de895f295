// A context-takeover direction's DEFLATE window (RFC 7692 §7.2.3: the last 2^windowBits bytes of
// the direction's compressed-message plaintext), kept in shared memory that its lane owns.
//
// Why shared: a lane has at most one task in flight, so whichever worker runs the next batch can
// read and advance the window in place. Carrying it in the task instead cost a 32 KiB clone out, a
// 32 KiB transfer back and fresh buffers on every batch — most of a small batch's decode time and a
// steady source of GC work. The generation lets a worker tell, without comparing 32 KiB, whether
// the inflater it kept from this lane's previous batch is still exactly in the window's state.
//
// Layout: Int32 header [filled, next write offset, generation, nonce], then a ring of `size` bytes.
const HEADER_BYTES = 16;
const FILLED = 0;
const HEAD = 1;
const GENERATION = 2;
const NONCE = 3;

/** The window size for agreed window bits: zlib widens a raw window of 8 bits to 9 (deflateInit2 docs), so peers built on it may reach back 512 bytes even when 8 was agreed. */
export function windowSize(windowBits: number): number {
  return 1 << Math.max(windowBits, 9);
}

/** A fresh, empty window for one lane (main thread). */
export function allocateWindow(windowBits: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(HEADER_BYTES + windowSize(windowBits));
  new Int32Array(sab, 0, 4)[NONCE] = (Math.random() * 0x7fffffff) | 0;
  return sab;
}

export class DeflateWindow {
  private readonly head: Int32Array;
  private readonly ring: Uint8Array;
  readonly size: number;

  constructor(sab: SharedArrayBuffer) {
    this.head = new Int32Array(sab, 0, 4);
    this.ring = new Uint8Array(sab, HEADER_BYTES);
    this.size = this.ring.length;
  }

  get length(): number { return this.head[FILLED]; }
  /** Changes whenever the content does; with the nonce it names one state of one lane's window. */
  get stamp(): string { return `${this.head[NONCE]}:${this.head[GENERATION]}`; }

  /** Appends one message's plaintext; only the last `size` bytes are kept. */
  push(plain: Uint8Array): void {
    if (plain.length === 0) return;
    const size = this.size;
    const src = plain.length > size ? plain.subarray(plain.length - size) : plain;
    let at = this.head[HEAD];
    const first = Math.min(src.length, size - at);
    this.ring.set(src.subarray(0, first), at);
    if (first < src.length) this.ring.set(src.subarray(first), 0);
    at = (at + src.length) % size;
    this.head[HEAD] = at;
    this.head[FILLED] = Math.min(size, this.head[FILLED] + src.length);
    this.head[GENERATION] = (this.head[GENERATION] + 1) | 0;
  }

  /** The window in stream order, as an inflate dictionary (a copy; needed only to start an inflater). */
  bytes(): Uint8Array {
    const n = this.head[FILLED];
    const out = new Uint8Array(n);
    const start = (this.head[HEAD] - n + this.size) % this.size;
    const first = Math.min(n, this.size - start);
    out.set(this.ring.subarray(start, start + first), 0);
    if (first < n) out.set(this.ring.subarray(0, n - first), first);
    return out;
  }
}
