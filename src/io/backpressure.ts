// When forwarding pauses the side it reads: shared by greytap's forwarding (pipe.ts) and the
// bench's TLS pipe, so the bench's physical limit forwards with the same window.
import type { Writable } from 'node:stream';

/**
 * Unsent bytes a side may hold before the other side's reading pauses. A TLS socket's write()
 * returns false for any chunk of 16 KiB (one TLS record: its writable high-water mark), so pausing
 * on that, as stream.pipe() does, stopped and restarted the reading side after nearly every record
 * of a bulk transfer: every 64 KiB read became four stop-and-go rounds of small writes, and the peers
 * woke for each. Two reads' worth keeps the flow going; the bound per connection stays fixed.
 */
export const FORWARD_BUFFER = 128 * 1024;

/** After a write to dst returned false: whether the side feeding it must pause until dst drains. */
export function holdsEnough(dst: Writable): boolean {
  return dst.writableLength >= FORWARD_BUFFER;
}
