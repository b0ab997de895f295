// Decoded bytes → the record's body fields, shared by every decoder (HTTP bodies, WebSocket
// messages). Text when the bytes are valid UTF-8, base64 otherwise; bounded by --max-body.
//
// The string is made only when something reads it (the assembler, for LLM traffic); the store
// writes the bytes it came from (store/body-bytes.ts).
import { isUtf8 } from 'node:buffer';
import { bodyBytes, lazyBody, shareBody } from '../store/body-bytes.js';

// ignoreBOM: a leading U+FEFF is part of the body (the default decoder drops it, so a small body,
// stored as its string, lost those 3 bytes while a large one, stored as its bytes, kept them).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function isValidUtf8(bytes: Uint8Array): boolean {
  return isUtf8(bytes);
}

export interface BodyFields {
  body?: string; // made on first read when the bytes are LAZY_FROM or more
  bodyBase64?: string; // likewise
  /** bytes before truncation */
  size: number;
  truncated: boolean;
  /** the (kept) bytes are not valid UTF-8, so they went to bodyBase64 */
  invalidUtf8: boolean;
}

/**
 * `cutShort`: the bytes are already a prefix of a longer body (capture or decoding stopped early),
 * so a UTF-8 sequence cut at their end is not a reason to fall back to base64.
 */
export function bodyFields(bytes: Uint8Array, maxBody: number, opts?: { cutShort?: boolean }): BodyFields {
  const size = bytes.length;
  const max = Math.max(0, Math.floor(maxBody));
  const cutShort = opts?.cutShort === true;
  if (size <= max && !cutShort) {
    if (isUtf8(bytes)) return fields('body', bytes, { size, truncated: false, invalidUtf8: false });
    return fields('bodyBase64', bytes, { size, truncated: false, invalidUtf8: true });
  }
  const keep = Math.min(size, max);
  // Cut text at a code point boundary so a long UTF-8 body stays text; binary is cut at max.
  const text = bytes.subarray(0, utf8Boundary(bytes, keep));
  if (isUtf8(text)) return fields('body', text, { size, truncated: true, invalidUtf8: false });
  return fields('bodyBase64', bytes.subarray(0, keep), { size, truncated: true, invalidUtf8: true });
}

/** Binary data (a binary WebSocket message) as `bodyBase64`, cut at maxBody. */
export function binaryFields(bytes: Uint8Array, maxBody: number): BodyFields {
  const keep = Math.min(bytes.length, Math.max(0, Math.floor(maxBody)));
  return fields('bodyBase64', bytes.subarray(0, keep), { size: bytes.length, truncated: keep < bytes.length, invalidUtf8: false });
}

/**
 * Bodies up to this size are plain strings: the assembler reads every small text message anyway,
 * and an accessor per record costs more than it saves there. So a record never keeps bytes shorter
 * than this: a caller may pass such bytes in memory it reuses afterwards.
 */
export const LAZY_FROM = 4096;

/** UTF-8 bytes as a string, a leading U+FEFF kept; throws on invalid UTF-8. */
export const decodeText = (b: Uint8Array): string => utf8.decode(b);

// (one object literal, decoders made once: this runs for every WebSocket message)
function fields(field: 'body' | 'bodyBase64', bytes: Uint8Array, rest: Omit<BodyFields, 'body' | 'bodyBase64'>): BodyFields {
  const f: BodyFields = { size: rest.size, truncated: rest.truncated, invalidUtf8: rest.invalidUtf8 };
  const decode = field === 'body' ? decodeText : toBase64;
  if (bytes.length < LAZY_FROM) f[field] = decode(bytes);
  else lazyBody(f, field, bytes, decode);
  return f;
}

/** Puts a decoder's body on a record: `textField` or `base64Field`, lazily, sharing the bytes (and the string, once made). */
export function assignBody(rec: object, textField: string, base64Field: string, f: BodyFields): void {
  const [from, to] = Object.prototype.hasOwnProperty.call(f, 'body') ? ['body', textField] : ['bodyBase64', base64Field];
  if (bodyBytes(f, from)) shareBody(f, from, rec, to);
  else (rec as Record<string, unknown>)[to] = (f as unknown as Record<string, unknown>)[from];
}

/**
 * Where to cut `bytes` at or before `max` without ending inside a UTF-8 sequence: when the
 * sequence starting in the last 3 bytes before max needs bytes at or past max, cut before it.
 */
export function utf8Boundary(bytes: Uint8Array, max: number): number {
  max = Math.min(max, bytes.length);
  let i = max - 1;
  while (i >= 0 && max - i < 4 && (bytes[i] & 0xc0) === 0x80) i--; // skip continuation bytes (10xxxxxx)
  if (i < 0) return max;
  const b = bytes[i];
  const need = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
  return need > 0 && i + need > max ? i : max;
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
