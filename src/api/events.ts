// The main thread's feed of committed record ids (the pool reports them with each task result);
// the SSE hub turns them into events.
import { EventEmitter } from 'node:events';

export class RecordEvents extends EventEmitter {
  constructor() {
    super();
    this.setMaxListeners(0); // one listener per API server, not per client — but never warn
  }

  /** Called by the main thread with the ids of records just committed to the store. */
  committed(ids: string[]): void {
    if (ids.length > 0) this.emit('committed', ids);
  }
}
