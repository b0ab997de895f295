// A copy of payload bytes on their way to the pool: bounded by --max-body and by the capture
// memory budget, backed by a plain ArrayBuffer (never Node's shared Buffer pool) so the result can
// be transferred to a worker instead of cloned — or, for a small WebSocket message, by a region of
// a shared slab (below), which costs no allocation at all.

/**
 * Big capture buffers come back from the workers once their bodies are committed and are used
 * again: a fresh 16 MiB ArrayBuffer costs its page faults (11–25 ms measured here, ~100 ms per
 * body under the bulk bench's contention) where a used one costs nothing. Only buffers of at least
 * RECYCLE_MIN are kept, RECYCLE_IDLE_MAX bytes of them at most (oldest dropped).
 */
export const RECYCLE_MIN = 1 << 20;
const RECYCLE_IDLE_MAX = 64 << 20;

class Recycler {
  private idle: ArrayBuffer[] = [];
  private idleBytes = 0;

  /** An ArrayBuffer of at least `min` bytes (a used one when one fits within twice that). */
  take(min: number): ArrayBuffer {
    if (min >= RECYCLE_MIN) {
      let best = -1;
      for (let i = 0; i < this.idle.length; i++) {
        const n = this.idle[i].byteLength;
        if (n >= min && n <= 2 * min && (best < 0 || n < this.idle[best].byteLength)) best = i;
      }
      if (best >= 0) {
        const [ab] = this.idle.splice(best, 1);
        this.idleBytes -= ab.byteLength;
        return ab;
      }
    }
    // Not zero-filled (3-4x cheaper per 64 KiB here): only bytes [0, length) are ever read, and
    // they are written first. Never from Node's shared pool: the buffer is transferred whole.
    return Buffer.allocUnsafeSlow(min).buffer as ArrayBuffer;
  }

  give(ab: ArrayBuffer): void {
    if (ab.byteLength < RECYCLE_MIN || ab.byteLength > RECYCLE_IDLE_MAX) return;
    this.idle.push(ab);
    this.idleBytes += ab.byteLength;
    while (this.idleBytes > RECYCLE_IDLE_MAX) this.idleBytes -= this.idle.shift()!.byteLength;
  }

  /** Bytes held idle (for tests and the README's bound). */
  get idleByteLength(): number { return this.idleBytes; }
}

export const captureBuffers = new Recycler();

/**
 * Small WebSocket messages (a frame of up to SLAB_MAX_PAYLOAD bytes) are copied into regions of a
 * SharedArrayBuffer slab, one slab per sending direction at a time, instead of an ArrayBuffer each:
 * allocating, transferring and later collecting an ArrayBuffer cost ~2 µs per message on the
 * forwarding thread (measured here; the copy itself ~0.1 µs). The worker reads the region in place
 * and keeps nothing of it past its task; the region is the message's own until the task settles
 * (`release`). A slab nobody refers to goes back to an idle list (SLAB_IDLE_MAX slabs at most),
 * also while it is a direction's current one, so an idle connection holds no slab.
 * Memory: live slabs hold at most the reserved payloads plus, per direction, one slab's tail
 * (a region never spans slabs: ≤ SLAB_MAX_PAYLOAD of each slab's tail is left unused).
 */
export const SLAB_BYTES = 64 << 10;
export const SLAB_MAX_PAYLOAD = 16 << 10;
const SLAB_IDLE_MAX = 64;
const idleSlabs: Slab[] = [];

export class Slab {
  readonly sab = new SharedArrayBuffer(SLAB_BYTES);
  used = 0;
  private refs = 0;
  /** the direction still handing out regions of this slab */
  owner: SlabCursor | null = null;

  region(n: number): number {
    const offset = this.used;
    this.used += n;
    this.refs++;
    return offset;
  }

  /** One region's message has settled. */
  release(): void {
    if (--this.refs > 0) return;
    if (this.owner) this.owner.forget(this);
    this.owner = null;
    this.used = 0;
    if (idleSlabs.length < SLAB_IDLE_MAX) idleSlabs.push(this);
  }
}

/** One sending direction's place in its current slab. */
export class SlabCursor {
  private cur: Slab | null = null;

  alloc(n: number): { slab: Slab; offset: number } {
    let s = this.cur;
    if (!s || s.used + n > SLAB_BYTES) {
      if (s) s.owner = null; // full: it goes idle when its last region settles
      s = this.cur = idleSlabs.pop() ?? new Slab();
      s.owner = this;
    }
    return { slab: s, offset: s.region(n) };
  }

  forget(s: Slab): void {
    if (this.cur === s) this.cur = null;
  }
}

/** Slabs kept idle (for tests). */
export function idleSlabCount(): number {
  return idleSlabs.length;
}

/** Copied bytes handed to the pool: a transferable ArrayBuffer of their own, or a slab region. */
export interface TakenPayload {
  buffer: ArrayBuffer | SharedArrayBuffer;
  offset: number;
  length: number;
  /** the slab to release once the message has settled */
  slab: Slab | null;
}

export interface MemoryBudget {
  /** false: over budget, the caller stops copying (capture is dropped, forwarding is not). */
  reserve(bytes: number): boolean;
  release(bytes: number): void;
}

/**
 * The most a size hint (a WebSocket frame's length, a Content-Length) reserves before its bytes
 * arrive; past it the buffer grows as they do. A declared length costs its sender a few bytes:
 * reserved whole, 16 frame headers of 16 MiB (224 bytes) held the whole default budget and every
 * other connection's capture was dropped.
 */
export const PREALLOC_MAX = 64 << 10;

/**
 * The backing of a buffer with no bytes of its own (not yet sized, or taken): one for all, since a
 * `new Uint8Array(0)` is an ArrayBuffer allocation, twice per WebSocket message on the forwarding
 * thread. Never handed out: its buffer must not be transferred (and so detached) by a task.
 */
const NO_BYTES = new Uint8Array(0);

export class CaptureBuffer {
  private buf: Uint8Array = NO_BYTES;
  private len = 0;
  private reserved = 0;
  /** reserved for memory kept beside the copy (charge()), released with the buffer's */
  private charged = 0;
  private slab: Slab | null = null;
  /** the size hint, within max: growth stops there while the bytes stay within it */
  private readonly expected: number = 0;
  /** payload bytes seen on the wire, copied or not */
  total = 0;
  /** stopped copying because of --max-body */
  tooLarge = false;
  /** stopped copying because the memory budget was exhausted */
  overBudget = false;

  /** `slabs`: small buffers become a region of that direction's slab (WebSocket frames; the size hint is the frame's length). */
  constructor(private readonly max: number, private readonly budget: MemoryBudget, sizeHint = 0, slabs?: SlabCursor) {
    if (sizeHint <= 0) return;
    this.expected = Math.min(sizeHint, max);
    const n = Math.min(this.expected, PREALLOC_MAX);
    if (slabs && n <= SLAB_MAX_PAYLOAD && budget.reserve(n)) {
      const { slab, offset } = slabs.alloc(n);
      this.slab = slab;
      this.buf = new Uint8Array(slab.sab, offset, n);
      this.reserved = n;
    } else {
      this.grow(n);
    }
  }

  get length(): number { return this.len; }
  get complete(): boolean { return !this.tooLarge && !this.overBudget; }
  /** whether bytes appended now would be copied (false once --max-body or the budget stopped the copy) */
  get copying(): boolean { return this.complete && this.len < this.max; }

  /**
   * Memory the caller keeps beside the copy for as long as the copy (a WebSocket message's frame
   * masks), reserved from the same budget and released with it. Refused: the capture is dropped
   * (overBudget), as when the payload itself does not fit.
   */
  charge(bytes: number): boolean {
    if (!this.budget.reserve(bytes)) {
      this.overBudget = true;
      return false;
    }
    this.charged += bytes;
    return true;
  }

  append(data: Uint8Array): void {
    this.total += data.length;
    if (!this.complete) return;
    const room = this.max - this.len;
    const n = Math.min(room, data.length);
    if (n < data.length) this.tooLarge = true;
    if (n === 0) return;
    if (this.len + n > this.buf.length && !this.grow(this.capacityFor(this.len + n))) {
      this.overBudget = true;
      return;
    }
    this.buf.set(n === data.length ? data : data.subarray(0, n), this.len);
    this.len += n;
  }

  /**
   * Geometric growth (copies stay linear in the bytes). Towards a declared size, by eight and to
   * RECYCLE_MIN at least: its sender has shown it sends, and a 16 MiB body grown by doubling cost
   * ~4-5 ms more of the forwarding thread than one buffer, mostly the page faults of fresh buffers
   * under RECYCLE_MIN (recycled ones have theirs behind them); it still reserves at most 1 MiB or
   * eight times what arrived. No further than the declared size
   * while the bytes stay within it: a body that arrives as declared ends in a buffer of exactly
   * its size, which take() hands over without another copy. Without one, by doubling.
   */
  private capacityFor(need: number): number {
    if (need <= this.expected) return Math.min(this.expected, Math.max(need, this.buf.length * 8, RECYCLE_MIN));
    return Math.min(this.max, Math.max(need, this.buf.length * 2, 4096));
  }

  private grow(capacity: number): boolean {
    // Reserve before allocating. Over the bound (capture behind: the moment dropping must be
    // cheapest) an ArrayBuffer taken only to be given up cost ~7 µs per 1 KiB message on this
    // thread and as much again in V8's helper threads; a refusal is now two budget checks.
    const need = capacity - this.reserved;
    if (!this.budget.reserve(need)) return false;
    const ab = captureBuffers.take(capacity);
    const surplus = ab.byteLength - capacity; // a recycled buffer may be up to twice the size asked
    if (surplus > 0 && !this.budget.reserve(surplus)) {
      this.budget.release(need);
      captureBuffers.give(ab);
      return false;
    }
    this.reserved = ab.byteLength;
    const next = new Uint8Array(ab);
    next.set(this.buf.subarray(0, this.len));
    this.dropBacking();
    this.buf = next;
    return true;
  }

  private dropBacking(): void {
    if (this.slab) {
      this.slab.release();
      this.slab = null;
    } else if (this.buf !== NO_BYTES) {
      captureBuffers.give(this.buf.buffer as ArrayBuffer);
    }
    this.buf = NO_BYTES;
  }

  /**
   * The copied bytes, releasing the budget: a slab region as it is (the caller releases the slab
   * when the message settles), else an exactly-sized ArrayBuffer (transferable).
   */
  take(): TakenPayload {
    if (this.slab) {
      const out: TakenPayload = { buffer: this.buf.buffer, offset: this.buf.byteOffset, length: this.len, slab: this.slab };
      this.slab = null;
      this.releaseBudget();
      this.buf = NO_BYTES;
      return out;
    }
    let ab: ArrayBuffer;
    if (this.len === this.buf.length) {
      ab = this.takeView().buffer as ArrayBuffer;
    } else {
      ab = this.buf.slice(0, this.len).buffer as ArrayBuffer;
      this.discard();
    }
    return { buffer: ab, offset: 0, length: ab.byteLength, slab: null };
  }

  /** The copied bytes as a view of the buffer, which may be larger (transfer `view.buffer`), releasing the budget. */
  takeView(): Uint8Array {
    const view = this.buf === NO_BYTES ? new Uint8Array(0) : this.buf.subarray(0, this.len);
    this.releaseBudget();
    this.buf = NO_BYTES;
    return view;
  }

  discard(): void {
    this.releaseBudget();
    this.dropBacking();
  }

  private releaseBudget(): void {
    this.budget.release(this.reserved + this.charged);
    this.reserved = this.charged = 0;
  }
}
