// Worker side of an HTTP/1.1 exchange: the captured task (bodies already de-chunked on the main
// thread) → one HttpTransaction. Undoes the other transfer codings, then Content-Encoding, within
// --max-body (a compression bomb costs at most max-body of output), parses SSE, picks text or
// base64. decodeHttp does no redaction: httpRecord applies store/redact.ts to it before the commit
// (and the store re-applies it).
import zlib from 'node:zlib';
import type { ErrorCode, Header, HttpTransaction } from '../records.js';
import type { MetricDeltas } from '../metrics.js';
import type { HttpCaptureTask } from './tasks.js';
import { headerList, headerValues, transferCodings } from '../io/http1.js';
import { assignBody, bodyFields } from './body.js';
import { parseSse } from './sse.js';
import { SyncZlib } from './zlib-sync.js';
import { unzstdBounded } from './zstd.js';
import { redactHeaders, redactPath, redactText } from '../store/redact.js';

interface Decoded {
  bytes: Buffer;
  /** decoded output went past the limit and was cut */
  overflow: boolean;
  error?: { code: ErrorCode; detail: string };
}

/** The record as stored: decoded, then credentials redacted (store/redact.ts; `extra`: --redact-header). */
export function httpRecord(task: HttpCaptureTask, id: string, extra: string[]): { record: HttpTransaction; metrics: MetricDeltas } {
  const out = decodeHttp(task, id);
  out.record.reqHeaders = redactHeaders(out.record.reqHeaders, extra);
  out.record.respHeaders = redactHeaders(out.record.respHeaders, extra);
  out.record.path = redactPath(out.record.path, extra);
  // a framing error's detail may quote the malformed request line, target and all
  if (out.record.errorDetail) out.record.errorDetail = redactText(out.record.errorDetail, extra);
  return out;
}

export function decodeHttp(task: HttpCaptureTask, id: string): { record: HttpTransaction; metrics: MetricDeltas } {
  const o = task.origin;
  const record: HttpTransaction = {
    id,
    ts: task.startTs,
    kind: 'HTTP',
    conn: o.conn,
    host: o.host,
    port: o.port,
    scheme: o.scheme,
    path: o.path,
    method: task.method,
    httpVersion: task.httpVersion,
    reqHeaders: task.reqHeaders,
    respHeaders: task.respHeaders,
    reqBytes: task.reqBytes,
    respBytes: task.respBytes,
    durationMs: task.durationMs,
    truncated: task.truncated,
  };
  if (task.status !== undefined) record.status = task.status;
  if (task.statusText !== undefined) record.statusText = task.statusText;
  if (task.error) record.error = task.error;
  if (task.errorDetail !== undefined) record.errorDetail = task.errorDetail;

  const metrics: MetricDeltas = {};
  const problem = (code: ErrorCode, detail: string) => {
    (metrics.decodeErrors ??= {})[code] = (metrics.decodeErrors[code] ?? 0) + 1;
    if (!record.error) {
      record.error = code;
      record.errorDetail = detail;
    }
  };
  // A body is incomplete when the capture copied fewer bytes than the wire carried, or the stream was cut.
  const cut = task.error === 'truncated_stream';

  const req = decodeBody(task.reqBody, task.reqBodyBytes, task.reqHeaders, task.maxBody, cut);
  if (req) {
    if (req.error) problem(req.error.code, req.error.detail);
    assignBody(record, 'reqBody', 'reqBodyBase64', req.fields);
    record.reqBodySize = req.size;
    if (req.truncated) record.truncated = true;
  }
  const resp = decodeBody(task.respBody, task.respBodyBytes, task.respHeaders, task.maxBody, cut);
  if (resp) {
    if (resp.error) problem(resp.error.code, resp.error.detail);
    assignBody(record, 'respBody', 'respBodyBase64', resp.fields);
    record.respBodySize = resp.size;
    if (resp.truncated) record.truncated = true;
    if (mediaType(task.respHeaders) === 'text/event-stream' && !resp.error) {
      const text = resp.fields.body ?? new TextDecoder('utf-8', { ignoreBOM: true }).decode(resp.decoded); // the parser drops the BOM
      record.respEvents = parseSse(text);
    }
  }
  // Output cut by --max-body during decoding: degraded capture, like a body cut while copying.
  if ((req?.overflow || resp?.overflow) && !task.truncated) {
    (metrics.dropped ??= {}).too_large = (metrics.dropped.too_large ?? 0) + 1;
    record.error ??= 'too_large';
  }
  return { record, metrics };
}

function decodeBody(buf: Uint8Array | undefined, wireBytes: number, headers: Header[], maxBody: number, cut: boolean) {
  if (buf === undefined && wireBytes === 0) return undefined;
  const raw = buf ? Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength) : Buffer.alloc(0);
  const partial = cut || raw.length < wireBytes;
  const te = transferCodings(headers);
  // The origin's content codings were applied before this hop's transfer codings (RFC 9112 §6.1).
  const layers: Layer[] = [
    { header: 'content-encoding', codings: headerList(headers, 'content-encoding').map((c) => c.toLowerCase()) },
    { header: 'transfer-encoding', codings: te.chunked ? te.codings.slice(0, -1) : te.codings },
  ];
  for (const l of layers) l.codings = l.codings.filter((c) => c !== 'identity');
  if (layers.every((l) => l.codings.length === 0) || raw.length === 0) {
    const fields = bodyFields(raw, maxBody, { cutShort: partial });
    // Identity: the decoded size is the payload size on the wire, even when less was copied.
    return { fields, size: Math.max(wireBytes, raw.length), truncated: fields.truncated || partial, overflow: false, decoded: raw };
  }
  const d = undoCodings(raw, layers, maxBody, partial);
  const fields = bodyFields(d.bytes, maxBody, { cutShort: partial || d.overflow });
  return { fields, size: d.bytes.length, truncated: fields.truncated || partial || d.overflow, overflow: d.overflow, decoded: d.bytes, error: d.error };
}

/** The codings one header names, in the order applied. */
interface Layer {
  header: 'content-encoding' | 'transfer-encoding';
  codings: string[];
}

/**
 * Undoes the codings in reverse order of application (RFC 9110 §8.4), layers given in the order
 * applied. On failure: the bytes the failing layer was given, and an error; a layer is kept whole
 * so what is stored is something a header describes (the de-chunked body, or the content as the
 * origin coded it).
 */
export function undoCodings(raw: Buffer, layers: Layer[], maxBody: number, partial: boolean): Decoded {
  let bytes = raw;
  let overflow = false;
  for (let i = layers.length - 1; i >= 0; i--) {
    const { header, codings } = layers[i];
    const kept = { bytes, overflow };
    for (let k = codings.length - 1; k >= 0; k--) {
      const undo = undoerFor(codings[k], bytes);
      if (!undo) return { ...kept, error: { code: 'decode_failed', detail: `unsupported ${header}: ${codings[k]}` } };
      try {
        // A stage fed a cut input (capture cut, or an earlier stage over the limit) flushes what it can.
        const r = undo(bytes, maxBody, partial || overflow);
        bytes = r.bytes;
        overflow ||= r.overflow;
      } catch (e) {
        return { ...kept, error: { code: 'decode_failed', detail: `${header} ${codings[k]}: ${(e as Error).message}` } };
      }
    }
  }
  return { bytes, overflow };
}

interface Coder {
  stream: () => zlib.Gunzip | zlib.Inflate | zlib.InflateRaw | zlib.BrotliDecompress;
  sync: (input: Buffer, opts: zlib.ZlibOptions & zlib.BrotliOptions) => Buffer;
  brotli: boolean;
}

const GUNZIP: Coder = { stream: () => zlib.createGunzip(), sync: zlib.gunzipSync, brotli: false };
const INFLATE: Coder = { stream: () => zlib.createInflate(), sync: zlib.inflateSync, brotli: false };
const INFLATE_RAW: Coder = { stream: () => zlib.createInflateRaw(), sync: zlib.inflateRawSync, brotli: false };
const BROTLI: Coder = { stream: () => zlib.createBrotliDecompress(), sync: zlib.brotliDecompressSync, brotli: true };

/** Undoes one coding, keeping at most `limit` bytes of output; `partial`: the input was cut. */
type Undo = (input: Buffer, limit: number, partial: boolean) => { bytes: Buffer; overflow: boolean };

const zlibUndo = (coder: Coder): Undo => (input, limit, partial) => inflateBounded(coder, input, limit, partial);
const [UNDO_GZIP, UNDO_INFLATE, UNDO_INFLATE_RAW, UNDO_BROTLI] = [GUNZIP, INFLATE, INFLATE_RAW, BROTLI].map(zlibUndo);

function undoerFor(coding: string, input: Buffer): Undo | undefined {
  switch (coding) {
    case 'gzip':
    case 'x-gzip':
      return UNDO_GZIP;
    case 'deflate':
      // RFC 9110 §8.4.1.2 says zlib-wrapped, but some servers send raw DEFLATE: tell by the header (RFC 1950 §2.2).
      return input.length >= 2 && (input[0] & 0x0f) === 8 && ((input[0] << 8) | input[1]) % 31 === 0 ? UNDO_INFLATE : UNDO_INFLATE_RAW;
    case 'br':
      return UNDO_BROTLI;
    case 'zstd':
      return unzstdBounded;
    default:
      return undefined;
  }
}

/**
 * Inflates, keeping at most the first `limit` bytes of output. zlib's *Sync({ maxOutputLength })
 * stops a bomb but throws the output away, and an input prefix cannot bound the output either
 * (a few bytes of brotli expand to megabytes). So the stream is driven through SyncZlib with our
 * own output bound: memory stays ≤ limit + one 64 KiB slice. Should a future Node hide the
 * internals, the public call still bounds memory (output then empty).
 */
function inflateBounded(coder: Coder, input: Buffer, limit: number, partial: boolean): { bytes: Buffer; overflow: boolean } {
  const c = zlib.constants;
  const flush = coder.brotli ? (partial ? c.BROTLI_OPERATION_FLUSH : c.BROTLI_OPERATION_FINISH) : partial ? c.Z_SYNC_FLUSH : c.Z_FINISH;
  const stream = coder.stream();
  const sync = SyncZlib.open(stream);
  if (!sync) {
    stream.close();
    try {
      const out = coder.sync(input, { maxOutputLength: limit + 1, finishFlush: flush });
      return out.length > limit ? { bytes: out.subarray(0, limit), overflow: true } : { bytes: out, overflow: false };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return { bytes: Buffer.alloc(0), overflow: true };
      throw e;
    }
  }
  try {
    return sync.write(input, flush, limit);
  } finally {
    sync.close();
  }
}

function mediaType(headers: Header[]): string {
  const v = headerValues(headers, 'content-type')[0];
  return v ? v.split(';')[0].trim().toLowerCase() : '';
}
