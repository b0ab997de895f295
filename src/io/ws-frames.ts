// Incremental WebSocket frame-header parser for ONE direction (RFC 6455 §5.2). Pure: bytes in,
// callbacks out, no sockets, no copies — payload slices are subarrays of the Buffer that was pushed.
// Explicit states like ws/lib/receiver.js: INFO (2 bytes) → EXT_LEN (2 or 8) → MASK (4) → PAYLOAD.
// It never unmasks or inflates: that is the worker's job (src/workers/decode-ws.ts).

export const OP_CONTINUATION = 0;
export const OP_TEXT = 1;
export const OP_BINARY = 2;
export const OP_CLOSE = 8;
export const OP_PING = 9;
export const OP_PONG = 10;

export interface FrameHeader {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  maskKey: number; // uint32, big-endian as on the wire; 0 when not masked
  payloadLength: number;
  headerBytes: number;
}

/** Receives a direction's frames. `frameEnd` follows the last `payload` of every frame (at once for empty frames). */
export interface FrameSink {
  frameStart(h: FrameHeader): void;
  payload(data: Buffer): void;
  frameEnd(): void;
  /**
   * A protocol violation. fatal: the parser stopped and ignores everything pushed from now on (the
   * tap keeps forwarding raw). Not fatal: the framing is still unambiguous, parsing goes on, and the
   * violation concerns the frame whose frameStart came last (mask violations). `opcode`: of the
   * offending frame.
   */
  error(code: 'bad_frame', detail: string, fatal: boolean, opcode: number): void;
}

export interface FrameParserOptions {
  /** who sends this direction: client frames must be masked, server frames must not (§5.1) */
  sender: 'client' | 'server';
  /** permessage-deflate was negotiated for this connection: RSV1 marks compressed messages */
  deflate: boolean;
  /** an extension we do not know was negotiated: it may define RSV bits, so they are not violations */
  unknownExtension?: boolean;
}

const INFO = 0;
const EXT_LEN = 1;
const MASK = 2;
const PAYLOAD = 3;
const FAILED = 4;

export class FrameParser {
  private state = INFO;
  private readonly hdr = Buffer.alloc(14);
  private have = 0; // header bytes buffered in hdr
  private need = 2; // header bytes needed to leave the current state
  private remaining = 0; // payload bytes left in the current frame
  private inMessage = false; // a fragmented data message is open (first frame had FIN clear)
  private h: FrameHeader | null = null;

  constructor(private readonly opts: FrameParserOptions, private readonly sink: FrameSink) {}

  get failed(): boolean {
    return this.state === FAILED;
  }

  /** A data message is open: its first frame was seen, its final frame not yet. */
  get messageOpen(): boolean {
    return this.inMessage;
  }

  /** Header bytes of a frame that has not been completed yet, with the opcode when known (for truncated-stream reports). */
  partialHeader(): { opcode: number; bytes: number } | null {
    if (this.state === FAILED || this.state === PAYLOAD || this.have === 0) return null;
    return { opcode: this.hdr[0] & 0x0f, bytes: this.have };
  }

  /** Header bytes buffered for the frame being parsed (the offending frame's, after a fatal error). */
  get headerBytesBuffered(): number {
    return this.have;
  }

  /** True while a frame's payload is still expected. */
  get inPayload(): boolean {
    return this.state === PAYLOAD;
  }

  push(chunk: Buffer): void {
    const n = chunk.length;
    let pos = 0;
    while (pos < n && this.state !== FAILED) {
      if (this.state === PAYLOAD) {
        const take = Math.min(this.remaining, n - pos);
        this.sink.payload(chunk.subarray(pos, pos + take));
        pos += take;
        this.remaining -= take;
        if (this.remaining === 0) this.endFrame();
        continue;
      }
      // Header bytes: buffer them (≤ 14 per frame) so a header split across reads needs no special case.
      while (this.have < this.need && pos < n) this.hdr[this.have++] = chunk[pos++];
      if (this.have < this.need) return;
      if (this.state === INFO) this.onInfo();
      else if (this.state === EXT_LEN) this.onExtLen();
      else this.onMask();
    }
  }

  private fail(detail: string): void {
    this.state = FAILED;
    this.sink.error('bad_frame', detail, true, this.hdr[0] & 0x0f);
  }

  private onInfo(): void {
    const b0 = this.hdr[0];
    const b1 = this.hdr[1];
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const rsv2 = (b0 & 0x20) !== 0;
    const rsv3 = (b0 & 0x10) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const len7 = b1 & 0x7f;
    const control = opcode >= 8;

    // §5.2: opcodes 3–7 and 11–15 are reserved; a receiver must fail the connection.
    if ((opcode > 2 && opcode < 8) || opcode > 10) return this.fail(`reserved opcode ${opcode}`);
    if (!this.opts.unknownExtension) {
      // §5.2: RSV bits must be 0 unless an extension defines them. permessage-deflate defines only RSV1.
      if (rsv2 || rsv3) return this.fail(`RSV${rsv2 ? 2 : 3} set without a negotiated extension`);
      if (rsv1 && !this.opts.deflate) return this.fail('RSV1 set without permessage-deflate');
      // RFC 7692 §6.1: RSV1 ("Per-Message Compressed") goes on the first frame of a data message
      // only; continuation frames and control frames (which are never compressed) must have it clear.
      if (rsv1 && (control || opcode === OP_CONTINUATION)) {
        return this.fail(`RSV1 set on a ${control ? 'control' : 'continuation'} frame`);
      }
    }
    if (control) {
      // §5.5: control frames are never fragmented and carry ≤ 125 payload bytes.
      if (!fin) return this.fail('fragmented control frame');
      if (len7 > 125) return this.fail('control frame payload over 125 bytes');
    } else if (opcode === OP_CONTINUATION) {
      if (!this.inMessage) return this.fail('continuation frame without a started message');
    } else if (this.inMessage) {
      // §5.4: the fragments of one message are not interleaved with another data message.
      return this.fail('new data frame while a fragmented message is open');
    }

    this.h = { fin, rsv1, rsv2, rsv3, opcode, masked, maskKey: 0, payloadLength: len7, headerBytes: 2 };
    if (len7 === 126) {
      this.need = 4;
      this.state = EXT_LEN;
    } else if (len7 === 127) {
      this.need = 10;
      this.state = EXT_LEN;
    } else {
      this.afterLength();
    }
  }

  private onExtLen(): void {
    const h = this.h!;
    if (this.need === 4) {
      h.payloadLength = this.hdr.readUInt16BE(2);
    } else {
      const hi = this.hdr.readUInt32BE(2);
      // §5.2: "the most significant bit MUST be 0".
      if (hi & 0x80000000) return this.fail('64-bit payload length with the top bit set');
      // Lengths past 2^53 cannot be counted exactly in a JS number; no real peer sends them.
      if (hi > 0x1fffff) return this.fail('64-bit payload length over 2^53');
      h.payloadLength = hi * 2 ** 32 + this.hdr.readUInt32BE(6);
    }
    this.afterLength();
  }

  private afterLength(): void {
    if (this.h!.masked) {
      this.need += 4;
      this.state = MASK;
    } else {
      this.beginPayload();
    }
  }

  private onMask(): void {
    this.h!.maskKey = this.hdr.readUInt32BE(this.need - 4);
    this.beginPayload();
  }

  private beginPayload(): void {
    const h = this.h!;
    h.headerBytes = this.need;
    if (h.opcode === OP_TEXT || h.opcode === OP_BINARY) this.inMessage = !h.fin;
    else if (h.opcode === OP_CONTINUATION && h.fin) this.inMessage = false;
    this.sink.frameStart(h);
    // §5.1: client frames must be masked, server frames must not be. A real endpoint fails the
    // connection; the framing itself is still unambiguous (the MASK bit says whether a key follows),
    // so we keep parsing, record the frame's message as bad_frame and let the peers decide.
    if (h.masked !== (this.opts.sender === 'client')) {
      this.sink.error('bad_frame', this.opts.sender === 'client' ? 'unmasked client frame' : 'masked server frame', false, h.opcode);
    }
    this.have = 0;
    this.need = 2;
    if (h.payloadLength === 0) {
      this.state = INFO;
      this.endFrame();
    } else {
      this.remaining = h.payloadLength;
      this.state = PAYLOAD;
    }
  }

  private endFrame(): void {
    this.state = INFO;
    this.h = null;
    this.sink.frameEnd();
  }
}
