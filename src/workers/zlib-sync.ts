// A zlib stream driven synchronously through its native handle — what zlib's own *Sync functions do
// (lib/zlib.js processChunkSync) — but with our own output bound, and without closing the stream
// after one call (processChunkSync does), so a persistent inflater keeps its window across calls.
import type zlib from 'node:zlib';

/** The native handle under a zlib stream. */
interface NativeHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code?: string) => void;
}

type Stream = zlib.Inflate | zlib.InflateRaw | zlib.Gunzip | zlib.Unzip | zlib.BrotliDecompress;

const SLICE = 64 * 1024;

export interface SyncWrite {
  bytes: Buffer;
  overflow: boolean;
  /**
   * The stream reached its end (a final block) and the last `unread` bytes of the input were not
   * taken. Inferred as Node's own streams do (lib/zlib.js processCallback): zlib stopped with both
   * input and output space left, which only the end of the stream does. A stream that ends exactly
   * at the end of the input is not seen here; its next write then takes nothing (unread = all of it).
   * Not told on overflow.
   */
  ended: boolean;
  unread: number;
}

export class SyncZlib {
  private failure: Error | undefined;
  /** reused output space: small outputs are copied out of it instead of allocating 64 KiB per call */
  private scratch: Buffer | undefined;

  private constructor(private readonly stream: Stream, private readonly handle: NativeHandle, private readonly state: Uint32Array) {
    // Called synchronously from writeSync on corrupt data; the stream's own handler would destroy it asynchronously.
    handle.onerror = (message, errno, code) => { this.failure = Object.assign(new Error(message), { errno, code }); };
  }

  /** null when this Node hides the internals (callers fall back to the public *Sync calls). */
  static open(stream: Stream): SyncZlib | null {
    const internal = stream as unknown as { _handle?: NativeHandle; _writeState?: Uint32Array };
    if (!internal._handle || typeof internal._handle.writeSync !== 'function' || !(internal._writeState instanceof Uint32Array)) return null;
    return new SyncZlib(stream, internal._handle, internal._writeState);
  }

  /**
   * Feeds all of `input` with `flush`; keeps at most the first `limit` bytes of output (`overflow`
   * says more was produced). Throws on corrupt data; the stream is then unusable. Output shorter
   * than `lendBelow` comes back as a view of this stream's scratch space, valid only until its next
   * write (no buffer per call, for callers that copy what they keep).
   */
  write(input: Uint8Array, flush: number, limit: number, lendBelow = 0): SyncWrite {
    if (this.failure) throw this.failure;
    const parts: Buffer[] = [];
    let have = 0;
    let inOff = 0;
    for (;;) {
      const room = Math.min(SLICE, limit + 1 - have);
      const out = room === SLICE ? (this.scratch ??= Buffer.allocUnsafe(SLICE)) : Buffer.allocUnsafe(room);
      const inLen = input.length - inOff;
      this.handle.writeSync(flush, input, inOff, inLen, out, 0, room);
      if (this.failure) throw this.failure;
      const availOut = this.state[0];
      const availIn = this.state[1];
      inOff += inLen - availIn;
      const produced = room - availOut;
      // Output space left over: the decoder took all it could from the input.
      const done = availOut !== 0;
      if (produced > 0) {
        const lent = done && parts.length === 0 && produced < lendBelow;
        parts.push(out === this.scratch && !lent ? Buffer.from(out.subarray(0, produced)) : out.subarray(0, produced));
        have += produced;
      }
      if (have > limit) return { bytes: Buffer.concat(parts, have).subarray(0, limit), overflow: true, ended: false, unread: 0 };
      if (done) return { bytes: parts.length === 1 ? parts[0] : Buffer.concat(parts, have), overflow: false, ended: availIn > 0, unread: availIn };
    }
  }

  close(): void {
    this.stream.close();
  }
}
