// A copy of payload bytes on their way to the pool: bounded by --max-body and by the capture
// memory budget, backed by a plain ArrayBuffer (never Node's shared Buffer pool) so the result can
// be transferred to a worker instead of cloned.

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
    if (!this.budget.reserve(capacity - this.reserved)) return false;
    this.reserved = capacity;
    const next = new Uint8Array(capacity);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    return true;
  }

  /** The copied bytes as an exactly-sized ArrayBuffer (transferable), releasing the budget. */
  take(): ArrayBuffer {
    const out = this.len === this.buf.length ? this.buf.buffer : this.buf.slice(0, this.len).buffer;
    this.discard();
    return out as ArrayBuffer;
  }

  discard(): void {
    this.budget.release(this.reserved);
    this.reserved = 0;
    this.buf = new Uint8Array(0);
  }
}
