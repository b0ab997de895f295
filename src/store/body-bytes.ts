// Body fields that are bytes until someone reads them. A decoder (workers/body.ts) defines a
// record's body field over the bytes it decoded; the string is made on first read (the assembler
// reads LLM traffic), and the store writes the bytes as they are. Without this a 16 MiB body was
// decoded to a string in the worker and encoded back to bytes by the store — most of a worker's
// time on bulk downloads — and every 1 KiB WebSocket message paid a UTF-8 encode into msgpack.

const CELLS = Symbol('body bytes');
interface Cell { bytes: Uint8Array; text?: string; decode: (b: Uint8Array) => string }
type Holder = { [CELLS]?: Record<string, Cell> };

function cells(target: object): Record<string, Cell> {
  const t = target as Holder;
  // not enumerable: invisible to spreads, deepEqual and serializers
  if (!t[CELLS]) Object.defineProperty(t, CELLS, { value: {}, enumerable: false });
  return t[CELLS]!;
}

function define(target: object, field: string, cell: Cell): void {
  cells(target)[field] = cell;
  Object.defineProperty(target, field, {
    enumerable: true,
    configurable: true,
    get: () => (cell.text ??= cell.decode(cell.bytes)),
    set: (v: unknown) => {
      delete cells(target)[field];
      Object.defineProperty(target, field, { value: v, writable: true, enumerable: true, configurable: true });
    },
  });
}

/** Defines `field` on `target` as `decode(bytes)`, made on first read; assigning the field replaces it by the plain value. */
export function lazyBody(target: object, field: string, bytes: Uint8Array, decode: (b: Uint8Array) => string): void {
  define(target, field, { bytes, decode });
}

/** Defines `to` on `target` over the same bytes (and string, once made) as `from` on `source`. */
export function shareBody(source: object, from: string, target: object, to: string): void {
  const cell = (source as Holder)[CELLS]?.[from];
  if (cell) define(target, to, cell);
}

/** The bytes a lazy body field stands for (UTF-8 text, or the decoded bytes of a *Base64 field), without making its string; undefined for a plain field. */
export function bodyBytes(rec: object, field: string): Uint8Array | undefined {
  return (rec as Holder)[CELLS]?.[field]?.bytes;
}

/**
 * The start of a UTF-8 text field (body, reqBody, respBody): its first `n` bytes decoded when the
 * field is still lazy — a character cut at the end reads as U+FFFD — else the string's first `n`
 * characters. For peeking at a message's type without decoding all of it (a 64 KiB message cost
 * the assembler a whole decode, per message, only to test its first few hundred characters).
 */
export function utf8Head(rec: object, field: string, n: number): string | undefined {
  const cell = (rec as Holder)[CELLS]?.[field];
  if (cell && cell.text === undefined) {
    const b = cell.bytes;
    return Buffer.from(b.buffer, b.byteOffset, Math.min(b.length, n)).toString('utf8');
  }
  const v = (rec as Record<string, unknown>)[field];
  return typeof v === 'string' ? v.slice(0, n) : undefined;
}
