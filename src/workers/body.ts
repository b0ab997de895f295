// Decoded bytes → the record's body fields, shared by every decoder (HTTP bodies, WebSocket
// messages). Text when the bytes are valid UTF-8, base64 otherwise; bounded by --max-body.
import { isUtf8 } from 'node:buffer';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function isValidUtf8(bytes: Uint8Array): boolean {
  return isUtf8(bytes);
}

export interface BodyFields {
  body?: string;
  bodyBase64?: string;
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
    if (isUtf8(bytes)) return { body: utf8.decode(bytes), size, truncated: false, invalidUtf8: false };
    return { bodyBase64: toBase64(bytes), size, truncated: false, invalidUtf8: true };
  }
  const keep = Math.min(size, max);
  // Cut text at a code point boundary so a long UTF-8 body stays text; binary is cut at max.
  const text = bytes.subarray(0, utf8Boundary(bytes, keep));
  if (isUtf8(text)) return { body: utf8.decode(text), size, truncated: true, invalidUtf8: false };
  return { bodyBase64: toBase64(bytes.subarray(0, keep)), size, truncated: true, invalidUtf8: true };
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
