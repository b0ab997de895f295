// Main-thread WebSocket capture for one connection, after `101 Switching Protocols`. The pipe has
// already forwarded every chunk it hands us; here we only parse frame headers and copy payload
// slices (still masked, still compressed — one memcpy per slice, no per-byte work) into the message
// being captured, then push finished messages to the pool's ordered stream for that direction.
// Unmasking, reassembly and inflating happen in a worker (src/workers/decode-ws.ts).
import { FrameParser, type FrameHeader, type FrameSink } from './ws-frames.js';
import { negotiatedExtensions } from './ws-extensions.js';
import { CaptureBuffer, SlabCursor, type MemoryBudget, type TakenPayload } from './capture-buffer.js';
import { masksBytes, type CapturePool, type WsStream } from '../workers/pool.js';
import type { DeflateParams, StreamOrigin, WsCapturedMessage } from '../workers/tasks.js';
import type { ErrorCode, Header } from '../records.js';
import { captureDropped, countWsMessage, decodeErrors } from '../metrics.js';

export interface WsTapOptions {
  origin: StreamOrigin;
  upgrade: string; // id of the 101 transaction
  responseHeaders: Header[]; // of the 101 response: Sec-WebSocket-Extensions decides inflating
  pool: CapturePool;
  maxBody: number;
}

const OPCODE_NAMES: Record<number, string> = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

/** A message (or control frame) being captured. */
interface Capture {
  opcode: number;
  rsv1: boolean;
  frames: number;
  wireBytes: number;
  buf: CaptureBuffer;
  masks: number[] | null;
  /** numbers `masks` may hold before more of it is charged to the budget */
  maskRoom: number;
  error?: ErrorCode;
  errorDetail?: string;
}

/** One direction: frame parser → captures → the pool's ordered stream. */
class DirectionTap implements FrameSink {
  private readonly parser: FrameParser;
  private seq = 0;
  private data: Capture | null = null; // the open data message (may span several frames)
  private ctrl: Capture | null = null; // a control frame in progress (may sit between data fragments)
  private cur: Capture | null = null; // the capture the current frame's payload goes to
  private curFin = false;
  private stopped = false;
  private readonly slabs = new SlabCursor();

  constructor(
    private readonly direction: 'client' | 'server',
    private readonly stream: WsStream,
    private readonly budget: MemoryBudget,
    private readonly maxBody: number,
    deflate: boolean,
    unknownExtension: boolean,
  ) {
    this.parser = new FrameParser({ sender: direction, deflate, unknownExtension }, this);
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    try {
      this.parser.push(chunk);
    } catch (e) {
      // A bug here must never reach the forwarding path: stop capturing this direction, record why.
      this.error('bad_frame', `internal: ${(e as Error).message}`, true, this.cur?.opcode ?? 2);
    }
  }

  frameStart(h: FrameHeader): void {
    let c: Capture;
    if (h.opcode >= 8) {
      c = this.ctrl = this.newCapture(h);
    } else if (h.opcode !== 0) {
      c = this.data = this.newCapture(h);
    } else {
      c = this.data!; // the parser guarantees a started message
      c.frames++;
      c.wireBytes += h.headerBytes;
    }
    if (h.masked && h.payloadLength > 0 && c.buf.copying) this.recordMask(c, h);
    this.cur = c;
    this.curFin = h.fin;
  }

  payload(data: Buffer): void {
    const c = this.cur!;
    c.wireBytes += data.length;
    c.buf.append(data);
  }

  frameEnd(): void {
    const c = this.cur!;
    this.cur = null;
    if (c === this.ctrl) {
      this.ctrl = null;
      this.finish(c);
    } else if (this.curFin) {
      this.data = null;
      this.finish(c);
    }
  }

  /**
   * Client frames are unmasked per frame (RFC 6455 §5.3: the key index restarts at each frame), so
   * each frame keeps 3 numbers, 24 bytes: 24 times its payload for a 1-byte frame, sent by a client
   * as fast as it likes. Only frames the copy reaches keep theirs (so --max-body bounds them), and
   * they are charged to the capture budget like the copy.
   */
  private recordMask(c: Capture, h: FrameHeader): void {
    const masks = (c.masks ??= []);
    if (masks.length === c.maskRoom) {
      // room doubles: a budget call per doubling, not per frame (none for a one-frame message)
      const room = Math.max(3, 2 * c.maskRoom);
      const more = masksBytes(room) - masksBytes(c.maskRoom);
      if (more > 0 && !c.buf.charge(more)) {
        c.masks = null; // the capture is dropped (queue_full): nothing left to unmask
        return;
      }
      c.maskRoom = room;
    }
    masks.push(c.buf.length, h.payloadLength, h.maskKey);
  }

  error(code: 'bad_frame', detail: string, fatal: boolean, opcode: number): void {
    decodeErrors.inc({ kind: code });
    if (!fatal) {
      // mask violation on the frame just started: its message is still captured, flagged
      const c = this.cur!;
      c.error ??= code;
      c.errorDetail ??= detail;
      return;
    }
    // The direction stops being parsed (the bytes keep flowing). What was open ends here, cut.
    this.stopped = true;
    const open = this.ctrl ?? this.data;
    if (this.ctrl) this.finishWith(this.ctrl, code, detail, true);
    if (this.data) this.finishWith(this.data, code, detail, true);
    this.ctrl = this.data = this.cur = null;
    if (!open) {
      // Nothing open: the offending frame itself becomes the record (payload unknown).
      const c = this.newCapture({ opcode, rsv1: false, headerBytes: this.parser.headerBytesBuffered, payloadLength: 0 });
      this.finishWith(c, code, detail);
    }
  }

  /** The connection ended: whatever is cut mid-way is recorded as truncated_stream. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    const partial = this.parser.partialHeader();
    let cut = false;
    if (this.ctrl) this.finishWith(this.ctrl, 'truncated_stream', 'connection closed mid-frame'), (cut = true);
    if (this.data) {
      if (partial) this.data.wireBytes += partial.bytes;
      this.finishWith(this.data, 'truncated_stream', 'connection closed mid-message');
      cut = true;
    } else if (partial && partial.opcode !== 0) {
      const c = this.newCapture({ opcode: partial.opcode, rsv1: false, headerBytes: partial.bytes, payloadLength: 0 });
      this.finishWith(c, 'truncated_stream', 'connection closed mid-frame-header');
      cut = true;
    }
    if (cut) decodeErrors.inc({ kind: 'truncated_stream' });
    this.ctrl = this.data = this.cur = null;
  }

  private newCapture(h: Pick<FrameHeader, 'opcode' | 'rsv1' | 'headerBytes' | 'payloadLength'>): Capture {
    return {
      opcode: h.opcode,
      rsv1: h.rsv1,
      frames: 1,
      wireBytes: h.headerBytes,
      // Preallocate from the first frame's length (exact for the common single-frame message; a
      // header alone reserves at most PREALLOC_MAX, the rest as the payload arrives).
      buf: new CaptureBuffer(this.maxBody, this.budget, h.payloadLength, this.slabs),
      masks: null,
      maskRoom: 0,
    };
  }

  private finishWith(c: Capture, error: ErrorCode, detail: string, cut = false): void {
    c.error ??= error;
    c.errorDetail ??= detail;
    this.finish(c, cut);
  }

  /** `cut`: a fatal framing error ended the message: what was seen of it is not all of it. */
  private finish(c: Capture, cut = false): void {
    let payload: TakenPayload | undefined;
    let error = c.error;
    // A dropped payload is counted here once, whatever error the message already carries.
    if (c.buf.overBudget) {
      // Over the capture memory bound: the message is still recorded (and, on a context-takeover
      // direction, the gap is known to the decoder), just without its bytes.
      c.buf.discard();
      captureDropped.inc({ reason: 'queue_full' });
      error ??= 'queue_full';
    } else {
      if (c.buf.tooLarge) {
        captureDropped.inc({ reason: 'too_large' });
        error ??= 'too_large';
      }
      if (c.buf.length > 0) payload = c.buf.take();
      else c.buf.discard();
    }
    // One clock for both directions, read on this thread in the order last bytes arrived: records'
    // ts (fractional ms) then order the two directions exactly, where whole milliseconds tied.
    const at = performance.timeOrigin + performance.now();
    const m: WsCapturedMessage = {
      seq: this.seq++,
      opcode: c.opcode,
      rsv1: c.rsv1,
      frames: c.frames,
      wireBytes: c.wireBytes,
      payloadBytes: c.buf.total,
      payload: payload?.buffer,
      payloadOffset: payload?.offset ?? 0,
      masks: (payload && c.masks) || undefined,
      copiedBytes: payload ? payload.length : 0,
      ts: at,
      lastByteAt: at,
    };
    if (error) m.error = error;
    if (c.errorDetail && error === c.error) m.errorDetail = c.errorDetail;
    if (cut) m.cut = true;
    countWsMessage(this.direction, OPCODE_NAMES[c.opcode] ?? 'binary');
    this.stream.push(m, payload?.slab ?? null);
  }
}

export class WsConnectionTap {
  private readonly client: DirectionTap;
  private readonly server: DirectionTap;
  private closed = false;
  /** What the 101 response agreed on, per direction (null: no permessage-deflate). */
  readonly deflate: { client: DeflateParams | null; server: DeflateParams | null };

  constructor(opts: WsTapOptions) {
    const ext = negotiatedExtensions(opts.responseHeaders);
    this.deflate = { client: ext.client, server: ext.server };
    const connKey = opts.origin.conn;
    const mk = (direction: 'client' | 'server') => {
      const stream = opts.pool.wsStream(opts.origin, opts.upgrade, direction, ext[direction], connKey);
      const budget: MemoryBudget = { reserve: (n) => stream.reserve(n), release: (n) => stream.release(n) };
      return new DirectionTap(direction, stream, budget, opts.maxBody, ext.client !== null, ext.others.length > 0);
    };
    this.client = mk('client');
    this.server = mk('server');
  }

  /** Bytes read from the client, exactly as forwarded. Never throws, never blocks. */
  fromClient(chunk: Buffer): void {
    if (!this.closed) this.client.push(chunk);
  }

  /** Bytes read from the server, exactly as forwarded. */
  fromServer(chunk: Buffer): void {
    if (!this.closed) this.server.push(chunk);
  }

  /** The connection ended (either side): messages cut mid-way are posted as truncated_stream. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
    this.server.close();
  }
}
