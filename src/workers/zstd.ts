// Content-Encoding: zstd (RFC 8878), which Node 20's zlib cannot undo. Codex CLI compresses its
// /v1/responses request bodies with it (zstd level 3) when signed in with a ChatGPT account, so
// without this those turns were stored as opaque bytes. fzstd is a small, dependency-free
// decoder; it is fed under two bounds of ours, since it trusts the frame header: it allocates the
// window the header declares (up to 2 GiB) and decodes every block it is given.
import { Decompress } from 'fzstd';

/**
 * The largest window accepted. RFC 9659 §3 asks senders of the zstd content coding to stay within
 * 8 MB and lets recipients refuse more, as browsers do; a single-segment frame's window is its
 * whole content size, so this also refuses one that declares more.
 */
export const ZSTD_MAX_WINDOW = 8 << 20;

const MAGIC = 0xfd2fb528;
const SKIPPABLE = 0x184d2a50; // … to 0x184d2a5f

/** Thrown from the data handler to stop decoding once the output bound is passed. */
const ENOUGH = Symbol('enough');

/**
 * Walks the frames of `input` by their headers and block headers (no decoding) and throws when
 * one declares a window over ZSTD_MAX_WINDOW or a dictionary (which a capture has no copy of).
 * Stops quietly at the end of the input, wherever it falls: a cut body is checked as far as it goes.
 */
export function checkZstdFrames(input: Uint8Array): void {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let at = 0;
  while (at + 4 <= input.length) {
    const magic = view.getUint32(at, true);
    if ((magic & 0xfffffff0) === SKIPPABLE) {
      if (at + 8 > input.length) return;
      at += 8 + view.getUint32(at + 4, true);
      continue;
    }
    if (magic !== MAGIC) throw new Error(`not a zstd frame at byte ${at}`);
    if (at + 6 > input.length) return;
    const fhd = input[at + 4];
    const singleSegment = (fhd >> 5) & 1;
    const dictBytes = [0, 1, 2, 4][fhd & 3];
    const sizeBytes = [singleSegment, 2, 4, 8][fhd >> 6];
    let window: number;
    let p = at + 5;
    if (singleSegment) {
      const sizeAt = p + dictBytes;
      if (sizeAt + sizeBytes > input.length) return;
      window = readLe(input, sizeAt, sizeBytes) + (sizeBytes === 2 ? 256 : 0);
    } else {
      const wd = input[p++];
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    }
    if (dictBytes && p + dictBytes <= input.length && readLe(input, p, dictBytes) !== 0) throw new Error('zstd frame needs a dictionary');
    if (window > ZSTD_MAX_WINDOW) throw new Error(`zstd window of ${window} bytes, over the ${ZSTD_MAX_WINDOW} accepted (RFC 9659)`);
    p += dictBytes + sizeBytes;
    for (let last = 0; !last;) { // blocks: 3-byte header (last, type, size), then the block's bytes
      if (p + 3 > input.length) return;
      const h = input[p] | (input[p + 1] << 8) | (input[p + 2] << 16);
      last = h & 1;
      p += 3 + (((h >> 1) & 3) === 1 ? 1 : h >>> 3); // an RLE block carries one byte
    }
    at = p + ((fhd >> 2) & 1) * 4; // content checksum
  }
}

function readLe(b: Uint8Array, at: number, n: number): number {
  let v = 0;
  for (let i = n - 1; i >= 0; i--) v = v * 256 + b[at + i];
  return v;
}

/**
 * Decodes `input` keeping at most the first `limit` bytes (`overflow`: there was more). Decoding
 * stops one block (≤ 128 KiB) past the limit, so a bomb costs that much. `partial`: the input
 * was cut; what its whole blocks hold is returned instead of an error. Throws on corrupt input.
 */
export function unzstdBounded(input: Buffer, limit: number, partial: boolean): { bytes: Buffer; overflow: boolean } {
  checkZstdFrames(input);
  const parts: Uint8Array[] = [];
  let have = 0;
  let overflow = false;
  const d = new Decompress((block) => {
    const keep = Math.min(block.length, limit - have);
    if (keep > 0) { parts.push(block.subarray(0, keep)); have += keep; }
    if (keep < block.length) { overflow = true; throw ENOUGH; }
  });
  try {
    d.push(input, !partial);
  } catch (e) {
    if (e !== ENOUGH) throw e;
  }
  return { bytes: Buffer.concat(parts, have), overflow };
}
