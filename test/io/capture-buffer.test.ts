// Capture buffers: bounds (max body, memory budget) and the shared slabs small WebSocket frames are
// copied into — regions, growth out of a slab, and slabs going idle once nothing refers to them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CaptureBuffer, PREALLOC_MAX, RECYCLE_MIN, SLAB_BYTES, SLAB_MAX_PAYLOAD, SlabCursor, captureBuffers, idleSlabCount, type MemoryBudget } from '../../src/io/capture-buffer.js';

function budget(limit = Infinity): MemoryBudget & { held: number } {
  const b = {
    held: 0,
    reserve(n: number) { if (b.held + n > limit) return false; b.held += n; return true; },
    release(n: number) { b.held -= n; },
  };
  return b;
}

test('small frames get regions of one slab in order; the slab goes idle when the last region is released, not before', () => {
  const cursor = new SlabCursor();
  const bud = budget();
  const idle = idleSlabCount();
  const taken = [100, 200, 300].map((n, i) => {
    const c = new CaptureBuffer(1 << 20, bud, n, cursor);
    c.append(Buffer.alloc(n, i + 1));
    return c.take();
  });
  assert.equal(bud.held, 0, 'taking hands the bytes over: the buffer no longer holds budget');
  assert.ok(taken.every((t) => t.slab === taken[0].slab && t.buffer instanceof SharedArrayBuffer));
  assert.deepEqual(taken.map((t) => [t.offset, t.length]), [[0, 100], [100, 200], [300, 300]]);
  taken.forEach((t, i) => assert.ok(new Uint8Array(t.buffer, t.offset, t.length).every((b) => b === i + 1)));
  taken[0].slab!.release();
  taken[1].slab!.release();
  assert.equal(idleSlabCount(), idle === 0 ? 0 : idle - 1, 'still referenced: not idle');
  taken[2].slab!.release();
  assert.equal(idleSlabCount(), idle === 0 ? 1 : idle, 'idle again, though it was the current slab');
  // the next frame starts a slab afresh (the idle one)
  const next = new CaptureBuffer(1 << 20, bud, 10, cursor).take();
  assert.equal(next.offset, 0);
  next.slab!.release();
});

test('a full slab is left for a new one; a frame never spans slabs; big frames and no cursor get their own ArrayBuffer', () => {
  const cursor = new SlabCursor();
  const bud = budget();
  const n = SLAB_MAX_PAYLOAD;
  const parts = Array.from({ length: SLAB_BYTES / n + 1 }, () => {
    const c = new CaptureBuffer(1 << 20, bud, n, cursor);
    c.append(Buffer.alloc(n, 7));
    return c.take();
  });
  assert.notEqual(parts.at(-1)!.slab, parts[0].slab);
  assert.equal(parts.at(-1)!.offset, 0);
  for (const p of parts) p.slab!.release();
  const big = new CaptureBuffer(1 << 20, bud, n + 1, cursor);
  big.append(Buffer.alloc(n + 1));
  const own = big.take();
  assert.ok(own.buffer instanceof ArrayBuffer && own.slab === null && own.length === n + 1);
  const plain = new CaptureBuffer(1 << 20, bud, 10);
  plain.append(Buffer.alloc(10));
  assert.equal(plain.take().slab, null);
});

test('a message that outgrows its slab region (more frames) moves to its own buffer, bytes intact, and frees the region', () => {
  const cursor = new SlabCursor();
  const bud = budget();
  const c = new CaptureBuffer(1 << 20, bud, 100, cursor);
  c.append(Buffer.alloc(100, 1));
  const neighbour = new CaptureBuffer(1 << 20, bud, 50, cursor); // the next region, right behind it
  neighbour.append(Buffer.alloc(50, 9));
  c.append(Buffer.alloc(400, 2)); // a continuation frame
  const t = c.take();
  assert.equal(t.slab, null);
  const bytes = new Uint8Array(t.buffer, t.offset, t.length);
  assert.equal(bytes.length, 500);
  assert.ok(bytes.subarray(0, 100).every((b) => b === 1) && bytes.subarray(100).every((b) => b === 2));
  const n = neighbour.take();
  assert.ok(new Uint8Array(n.buffer, n.offset, n.length).every((b) => b === 9), 'the neighbouring region was not overwritten');
  n.slab!.release();
  assert.equal(bud.held, 0);
});

test('budget and bounds hold for slab regions: over budget no region is taken; max body cuts; discard releases all', () => {
  const cursor = new SlabCursor();
  const tight = budget(50);
  const c = new CaptureBuffer(1 << 20, tight, 100, cursor);
  c.append(Buffer.alloc(100));
  assert.equal(c.overBudget, true);
  c.discard();
  assert.equal(tight.held, 0);
  const bud = budget();
  const cut = new CaptureBuffer(64, bud, 100, cursor);
  cut.append(Buffer.alloc(100, 3));
  assert.equal(cut.tooLarge, true);
  const t = cut.take();
  assert.equal(t.length, 64);
  t.slab!.release();
  const dropped = new CaptureBuffer(1 << 20, bud, 100, cursor);
  dropped.append(Buffer.alloc(10));
  const idle = idleSlabCount();
  dropped.discard();
  assert.equal(bud.held, 0);
  assert.equal(idleSlabCount(), idle + 1, 'the discarded region was the slab\'s last reference');
});

test('an empty buffer hands out bytes of its own: transferring them (as an HTTP task does) leaves every other buffer whole', () => {
  const bud = budget();
  const { port1, port2 } = new MessageChannel();
  try {
    for (const empty of [new CaptureBuffer(1 << 20, bud), new CaptureBuffer(1 << 20, bud)]) {
      const view = empty.takeView();
      assert.equal(view.length, 0);
      port1.postMessage(view, [view.buffer as ArrayBuffer]); // detaches what it was given
      assert.equal(view.buffer.byteLength, 0);
      const t = empty.take();
      assert.equal(t.length, 0);
      port1.postMessage(t.buffer, [t.buffer as ArrayBuffer]);
    }
    // buffers made after those transfers still copy and grow
    const later = new CaptureBuffer(1 << 20, bud);
    later.append(Buffer.from('after'));
    later.append(Buffer.alloc(5000, 7));
    const v = later.takeView();
    assert.equal(Buffer.from(v.subarray(0, 5)).toString(), 'after');
    assert.equal(v.length, 5005);
    assert.equal(bud.held, 0);
  } finally {
    port1.close();
    port2.close();
  }
});

test('over the memory bound a message allocates nothing: the budget is asked before any buffer is taken', () => {
  const allocUnsafeSlow = Buffer.allocUnsafeSlow;
  let allocated = 0;
  Buffer.allocUnsafeSlow = (n: number) => { allocated++; return allocUnsafeSlow(n); };
  try {
    const full = budget(0);
    for (const hint of [100, SLAB_MAX_PAYLOAD + 1, 0]) {
      const c = new CaptureBuffer(1 << 20, full, hint, new SlabCursor());
      c.append(Buffer.alloc(hint || 10));
      c.append(Buffer.alloc(10));
      assert.equal(c.overBudget, true);
      c.discard();
    }
    assert.equal(allocated, 0, 'a refused message costs no ArrayBuffer (it cost two: ~7 µs per 1 KiB message)');
    assert.equal(full.held, 0);
    const room = budget();
    const ok = new CaptureBuffer(1 << 20, room, SLAB_MAX_PAYLOAD + 1);
    assert.equal(allocated, 1, 'within the bound the buffer is allocated as before');
    ok.discard();
    assert.equal(room.held, 0);
  } finally {
    Buffer.allocUnsafeSlow = allocUnsafeSlow;
  }
});

test('a recycled buffer larger than asked is taken only if its surplus fits the budget too', () => {
  const size = RECYCLE_MIN + (RECYCLE_MIN >> 1);
  captureBuffers.give(new ArrayBuffer(size));
  const idle = captureBuffers.idleByteLength;
  const tight = budget(RECYCLE_MIN + 1000); // room for what is asked, not for the recycled surplus
  const c = new CaptureBuffer(4 * RECYCLE_MIN, tight, RECYCLE_MIN);
  const initial = tight.held;
  c.append(Buffer.alloc(RECYCLE_MIN));
  assert.equal(c.overBudget, true);
  assert.equal(tight.held, initial, 'the reservation for the asked size is given back');
  assert.equal(captureBuffers.idleByteLength, idle, 'the recycled buffer went back idle');
  c.discard();
  const roomy = budget(2 * RECYCLE_MIN);
  const d = new CaptureBuffer(4 * RECYCLE_MIN, roomy, RECYCLE_MIN);
  d.append(Buffer.alloc(RECYCLE_MIN, 5));
  assert.equal(roomy.held, size, 'the budget holds the buffer\'s whole size');
  assert.equal(captureBuffers.idleByteLength, idle - size);
  const v = d.takeView();
  assert.ok(v.length === RECYCLE_MIN && v.every((b) => b === 5));
  assert.equal(roomy.held, 0);
});

test('a declared length reserves at most PREALLOC_MAX before its bytes arrive; the buffer grows as they do, to exactly that length', () => {
  const bud = budget();
  for (const declared of [300 << 10, 3 << 20]) {
    for (const slabs of [undefined, new SlabCursor()]) {
      const c = new CaptureBuffer(4 << 20, bud, declared, slabs);
      assert.equal(bud.held, PREALLOC_MAX, 'a frame header or a Content-Length alone holds no more');
      const body = randomBytes(declared);
      for (let i = 0; i < declared; i += 10_000) {
        c.append(body.subarray(i, i + 10_000));
        // growth towards it is by eight, to RECYCLE_MIN at least (a recycled buffer may be up to twice the size asked)
        assert.ok(bud.held <= 2 * Math.max(RECYCLE_MIN, 8 * c.length), `${bud.held} held for ${c.length} bytes`);
      }
      const v = c.takeView();
      // under RECYCLE_MIN a fresh buffer of the size asked
      if (declared < RECYCLE_MIN) assert.equal(v.buffer.byteLength, declared, 'no larger than declared: take() needs no copy');
      assert.deepEqual(Buffer.from(v), body);
      assert.equal(bud.held, 0);
    }
  }
});

test('a message within PREALLOC_MAX is still one buffer of its declared size: no regrowth', () => {
  const allocUnsafeSlow = Buffer.allocUnsafeSlow;
  let allocated = 0;
  Buffer.allocUnsafeSlow = (n: number) => { allocated++; return allocUnsafeSlow(n); };
  try {
    const bud = budget();
    for (const n of [1024, PREALLOC_MAX]) {
      const c = new CaptureBuffer(1 << 20, bud, n);
      c.append(Buffer.alloc(n >> 1, 1));
      c.append(Buffer.alloc(n >> 1, 2));
      assert.equal(c.takeView().buffer.byteLength, n);
    }
    assert.equal(allocated, 2);
    assert.equal(bud.held, 0);
  } finally {
    Buffer.allocUnsafeSlow = allocUnsafeSlow;
  }
});
