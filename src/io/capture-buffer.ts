// A copy of payload bytes on their way to the pool: bounded by --max-body and by the capture
// memory budget, backed by a plain ArrayBuffer (never Node's shared Buffer pool) so the result can
// be transferred to a worker instead of cloned.

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

export interface MemoryBudget {
  /** false: over budget, the caller stops copying (capture is dropped, forwarding is not). */
  reserve(bytes: number): boolean;
  release(bytes: number): void;
}

export class CaptureBuffer {
  private buf: Uint8Array;
  private len = 0;
  private reserved = 0;
  /** payload bytes seen on the wire, copied or not */
  total = 0;
  /** stopped copying because of --max-body */
  tooLarge = false;
  /** stopped copying because the memory budget was exhausted */
  overBudget = false;

  constructor(private readonly max: number, private readonly budget: MemoryBudget, sizeHint = 0) {
    this.buf = new Uint8Array(0);
    if (sizeHint > 0) this.grow(Math.min(sizeHint, max));
  }

  get length(): number { return this.len; }
  get complete(): boolean { return !this.tooLarge && !this.overBudget; }

  append(data: Uint8Array): void {
    this.total += data.length;
    if (!this.complete) return;
    const room = this.max - this.len;
    const n = Math.min(room, data.length);
    if (n < data.length) this.tooLarge = true;
    if (n === 0) return;
    if (this.len + n > this.buf.length && !this.grow(Math.min(this.max, Math.max(this.len + n, this.buf.length * 2, 4096)))) {
      this.overBudget = true;
      return;
    }
    this.buf.set(n === data.length ? data : data.subarray(0, n), this.len);
    this.len += n;
  }

  private grow(capacity: number): boolean {
    const ab = captureBuffers.take(capacity);
    if (!this.budget.reserve(ab.byteLength - this.reserved)) {
      captureBuffers.give(ab);
      return false;
    }
    this.reserved = ab.byteLength;
    const next = new Uint8Array(ab);
    next.set(this.buf.subarray(0, this.len));
    captureBuffers.give(this.buf.buffer as ArrayBuffer);
    this.buf = next;
    return true;
  }

  /** The copied bytes as an exactly-sized ArrayBuffer (transferable), releasing the budget. */
  take(): ArrayBuffer {
    if (this.len === this.buf.length) return this.takeView().buffer as ArrayBuffer;
    const out = this.buf.slice(0, this.len).buffer;
    this.discard();
    return out as ArrayBuffer;
  }

  /** The copied bytes as a view of the buffer, which may be larger (transfer `view.buffer`), releasing the budget. */
  takeView(): Uint8Array {
    const view = this.buf.subarray(0, this.len);
    this.budget.release(this.reserved);
    this.reserved = 0;
    this.buf = new Uint8Array(0);
    return view;
  }

  discard(): void {
    this.budget.release(this.reserved);
    this.reserved = 0;
    captureBuffers.give(this.buf.buffer as ArrayBuffer);
    this.buf = new Uint8Array(0);
  }
}
