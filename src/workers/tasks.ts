// What the main thread hands the Piscina pool, and what comes back. Payload bytes travel as
// ArrayBuffers in the transfer list (moved, not cloned), or, for a small WebSocket message, as a
// region of a shared slab (io/capture-buffer.ts), borrowed for the task. Workers are stateless:
// everything a task needs is in the task — a context-takeover direction's DEFLATE window as the
// lane's shared buffer.
import type { ConnectionRecord, ErrorCode, Header, Scheme } from '../records.js';
import type { MetricDeltas } from '../metrics.js';

/** Where a captured item came from; copied into every record the task produces. */
export interface StreamOrigin {
  conn: string;
  host: string;
  port: number;
  scheme: Scheme;
  path: string;
  clientUser?: string;
}

/** permessage-deflate parameters for ONE direction, from the 101 response (RFC 7692 §7.1). */
export interface DeflateParams {
  /** false when the sender of this direction was told *_no_context_takeover */
  contextTakeover: boolean;
  /** the agreed max window bits of this direction's sender (8..15; 15 when absent) */
  windowBits: number;
}

/** One WebSocket message (or control frame) as captured on the main thread. */
export interface WsCapturedMessage {
  seq: number;
  opcode: number; // of the first frame: 1 text, 2 binary, 8 close, 9 ping, 10 pong
  rsv1: boolean; // on the first frame: compressed (when deflate was negotiated)
  frames: number;
  wireBytes: number; // headers + payloads as forwarded
  payloadBytes: number; // total payload bytes on the wire (even when not all were copied)
  /**
   * The copied payload bytes of all frames, concatenated, STILL MASKED for client frames.
   * Absent when capture of this message was dropped (error says why). A SharedArrayBuffer is a
   * slab (io/capture-buffer.ts): the bytes are at payloadOffset, and only borrowed for the task.
   */
  payload?: ArrayBuffer | SharedArrayBuffer;
  payloadOffset?: number;
  /**
   * Client frames: per frame [offsetInPayload, length, maskKey (uint32, big-endian)], for the frames
   * that start within the copied bytes (the rest need no unmasking). Absent without a payload.
   */
  masks?: number[];
  /** a fatal framing error ended the message on the wire: the bytes seen are not all of it */
  cut?: boolean;
  copiedBytes: number; // bytes of payload copied (< payloadBytes when truncated)
  ts: number; // ms since epoch (fractional: the forwarding thread's clock) when the last byte was read
  lastByteAt: number; // performance.timeOrigin + performance.now() at the last byte (for capture lag)
  error?: ErrorCode; // 'queue_full' | 'too_large' | 'truncated_stream' | 'bad_frame' …
  errorDetail?: string;
}

export interface WsBatchTask {
  type: 'ws';
  origin: StreamOrigin;
  upgrade: string; // id of the 101 transaction
  direction: 'client' | 'server';
  deflate: DeflateParams | null; // null: permessage-deflate not negotiated
  /** context takeover: the lane's DEFLATE window (deflate-window.ts), shared, advanced in place by the decoder */
  window: SharedArrayBuffer | null;
  /** an earlier message of this direction was lost: compressed messages cannot be inflated */
  desynced: boolean;
  maxBody: number;
  messages: WsCapturedMessage[];
}

export interface WsBatchResult {
  desynced: boolean;
  ids: string[]; // committed record ids, in order
  metrics: MetricDeltas;
}

/** One HTTP/1.1 exchange (request and, when one came, response). Bodies are payload bytes, chunk framing removed. */
export interface HttpCaptureTask {
  type: 'http';
  origin: StreamOrigin;
  id?: string; // pre-assigned (the 101 transaction, whose id WebSocket records reference)
  method: string;
  target: string; // request-target as on the wire
  httpVersion: string;
  reqHeaders: Header[];
  /** the copied body: a view whose buffer may be larger (a recycled capture buffer; transferred whole, handed back after commit) */
  reqBody?: Uint8Array;
  reqBytes: number;
  reqBodyBytes: number; // payload bytes on the wire (≥ copied)
  status?: number;
  statusText?: string;
  respHeaders: Header[];
  respBody?: Uint8Array;
  respBytes: number;
  respBodyBytes: number;
  truncated: boolean; // a body exceeded --max-body while copying
  startTs: number;
  durationMs: number;
  lastByteAt: number;
  maxBody: number;
  error?: ErrorCode;
  errorDetail?: string;
}

export interface HttpCaptureResult {
  ids: string[];
  metrics: MetricDeltas;
}

/** Connection records are small and written as they open and close. */
export interface ConnectionTask {
  type: 'conn';
  record: ConnectionRecord;
}

/**
 * The HTTP exchanges and connection records one connection queued while its previous task was in
 * flight, in order. Their puts fall in one event turn, so they commit in one LMDB transaction in
 * this order; ids are assigned in this order too.
 */
export interface LaneBatchTask {
  type: 'lane';
  items: (HttpCaptureTask | ConnectionTask)[];
}

export type CaptureTask = WsBatchTask | HttpCaptureTask | ConnectionTask | LaneBatchTask;

/**
 * Several lanes' tasks that became ready in the same event-loop turn, posted as one Piscina task:
 * a task round trip costs ~90 µs whatever it carries, and the parts' records share one LMDB commit.
 * Each lane still has at most one part in flight, so per-lane order is kept.
 */
export interface MultiTask {
  type: 'multi';
  parts: CaptureTask[];
}
