// What one capture worker may hold of decoded bodies awaiting their commit. The forwarding
// thread's bounds (--max-capture-memory) count wire bytes, but decoding multiplies them by the
// compression ratio — a 16 MiB run of zeros is ~16 KiB of gzip or permessage-deflate — and a
// task's records are all held until it commits: a review pushed 1–3 MiB of such traffic through
// greytap and serve grew to 2–8 GB. Past this bound decoding waits, in arrival order,
// for earlier records to commit (a WebSocket batch commits what it has decoded so far first), so
// nothing is dropped for it; the bound is overshot by at most one record.
import { bodyBytes } from '../store/body-bytes.js';
import { BODY_FIELDS } from '../store/lmdb.js';

export const DECODED_HELD_MAX = 64 << 20;

let max = DECODED_HELD_MAX;
let held = 0;
let peak = 0;
/** a waiter was let through and has not yet said what it holds (hold): the next one waits for that */
let admitting = false;
const waiting: (() => void)[] = [];

/**
 * undefined when decoding may go on at once (kept synchronous: a task's parts decoded in one turn
 * share one LMDB commit); else a promise that resolves at this caller's turn, after which it must
 * call hold() once, with 0 when it holds nothing.
 */
export function decodeTurn(): Promise<void> | undefined {
  if (held < max && !admitting && waiting.length === 0) return undefined;
  return new Promise((resolve) => { waiting.push(resolve); });
}

/** Whether `more` decoded bytes on top of what the worker holds reach the bound. */
export function decodedFull(more: number): boolean {
  return held + more >= max;
}

export function hold(bytes: number): void {
  held += bytes;
  peak = Math.max(peak, held);
  admitting = false;
  letNextIn();
}

/** After the commit (and assembly) of records that held `bytes`. */
export function release(bytes: number): void {
  held = Math.max(0, held - bytes);
  letNextIn();
}

function letNextIn(): void {
  if (admitting || held >= max) return;
  const next = waiting.shift();
  if (!next) return;
  admitting = true;
  next();
}

/** Decoded bytes a record holds: its bodies (bytes not yet made strings count their bytes), and parsed SSE events as much again. */
export function heldBytes(r: object): number {
  let n = 0;
  for (const k of BODY_FIELDS) n += fieldBytes(r, k);
  return n;
}

function fieldBytes(r: object, k: string): number {
  if (k === 'respEvents') return (r as { respEvents?: unknown }).respEvents ? fieldBytes(r, 'respBody') : 0;
  const b = bodyBytes(r, k); // read without making a lazy body's string
  if (b) return b.byteLength;
  const v = (r as Record<string, unknown>)[k];
  return typeof v === 'string' ? v.length : 0;
}

/** For tests (a wrapped worker): a smaller bound, and the most held so far. */
export function setDecodedHeldMax(bytes: number): void {
  max = bytes;
}

export function budgetState(): { held: number; peak: number; waiting: number } {
  return { held, peak, waiting: waiting.length };
}
