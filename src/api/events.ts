// The main thread's feed of committed record ids (the pool reports them with each task result);
// the SSE hub turns them into events.
//
// An event is the record without its bodies, read back from the store and serialised: ~10 µs per
// committed record, which on the forwarding thread is what an open dashboard cost the agent. While
// any SSE client listens (`listening`, shared with the capture workers), the workers read back and
// serialise what they committed and hand the events over with the ids, at capture's priority; an
// id that comes without one (none listened when its task ran) is read here, as before.
import { EventEmitter } from 'node:events';
import type { TransactionRecord } from '../records.js';
import type { Store } from '../store/store.js';

/** The SSE event of a stored transaction (its record without bodies, as getTransactionMeta reads it). */
export function eventFrame(r: TransactionRecord): string {
  return `id: ${r.id}\nevent: ${r.kind}\ndata: ${JSON.stringify(r)}\n\n`;
}

/** The event of a committed id, read back as stored (redacted, no bodies); '' for an id that is no transaction (a connection's). */
export function storedEvent(store: Pick<Store, 'getTransactionMeta'>, id: string): string {
  const r = store.getTransactionMeta(id);
  return r ? eventFrame(r) : '';
}

/** Whether an SSE client listens, as the capture workers read it (a count in shared memory). */
export function someoneListens(listening: Int32Array | undefined): boolean {
  return listening !== undefined && Atomics.load(listening, 0) > 0;
}

export class RecordEvents extends EventEmitter {
  /** SSE clients listening, across every hub fed by these events: handed to the capture workers */
  readonly listening = new Int32Array(new SharedArrayBuffer(4));

  constructor() {
    super();
    this.setMaxListeners(0); // one listener per API server, not per client — but never warn
  }

  /**
   * Called by the main thread with the ids of records just committed to the store, and the events
   * the workers made of them, where they did (an empty string: not a transaction).
   */
  committed(ids: string[], frames?: string[]): void {
    if (ids.length > 0) this.emit('committed', ids, frames);
  }

  /** A hub's clients came or went: `delta` more listen now. */
  clientsChanged(delta: number): void {
    if (delta) Atomics.add(this.listening, 0, delta);
  }
}
