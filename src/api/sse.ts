// GET /api/events — Server-Sent Events, one per committed transaction (WHATWG HTML §9.2):
//   id: <record id>\nevent: <kind>\ndata: <record JSON without bodies>\n\n
//
// Resuming with Last-Event-ID: the client is subscribed to live events FIRST, then the store is
// replayed from that id. Live ids arriving meanwhile are held back; a replayed record whose live
// event is already held is skipped (the held one is sent after the replay), and a replayed record
// whose live event comes later is remembered so that event is dropped. So the hand-over has no gap
// and no duplicate. Only recent replayed ids are remembered (allocated ≤ REMEMBER_MS before the
// subscription): an id that old was committed before the client subscribed, so it cannot come live.
//
// Memory is bounded per client: a client whose socket buffer exceeds maxBufferBytes, or whose
// held-back live events during a long replay exceed maxPending, is disconnected (it can resume).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { eventFrame, storedEvent, type RecordEvents } from './events.js';
import type { Store } from '../store/store.js';
import { ID_RE, idTime } from '../store/ids.js';

export interface SseOptions {
  heartbeatMs?: number; // default 15 s
  maxBufferBytes?: number; // default 1 MiB of unsent bytes per client
  maxPending?: number; // default 10,000 held-back live events per replaying client
}

const REMEMBER_MS = 60_000;
/** Events are written this many characters at a time at most. */
const WRITE_BYTES = 64 * 1024;
const REPLAY_PAGE = 200;

interface Client {
  res: ServerResponse;
  replaying: boolean;
  held: string[]; // live ids held back during replay
  heldSet: Set<string>;
  replayed: Set<string>; // recent ids sent by the replay
  forgetAt: number; // when `replayed` can be dropped
}

export class SseHub {
  private readonly clients = new Set<Client>();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly onCommitted = (ids: string[], frames?: string[]) => this.fanOut(ids, frames);
  /** how many clients this hub has told `events` about */
  private counted = 0;
  private readonly maxBuffer: number;
  private readonly maxPending: number;

  constructor(private readonly store: Store, private readonly events: RecordEvents, opts: SseOptions = {}) {
    this.maxBuffer = opts.maxBufferBytes ?? 1 << 20;
    this.maxPending = opts.maxPending ?? 10_000;
    events.on('committed', this.onCommitted);
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      for (const c of this.clients) {
        this.write(c, ': heartbeat\n\n');
        if (!c.replaying && c.replayed.size && now > c.forgetAt) c.replayed.clear();
      }
    }, opts.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
  }

  /** Number of connected SSE clients. */
  get size(): number {
    return this.clients.size;
  }

  stop(): void {
    clearInterval(this.heartbeat);
    this.events.off('committed', this.onCommitted);
    for (const c of this.clients) c.res.end();
    this.clients.clear();
    this.recount();
  }

  /** Tells the capture workers (through `events`) how many clients listen now. */
  private recount(): void {
    this.events.clientsChanged(this.clients.size - this.counted);
    this.counted = this.clients.size;
  }

  private drop(c: Client): void {
    this.clients.delete(c);
    this.recount();
  }

  /** Validates Last-Event-ID; returns an error reason or starts the stream. */
  handle(req: IncomingMessage, res: ServerResponse): string | null {
    const raw = req.headers['last-event-id'];
    const last = typeof raw === 'string' && raw.trim() !== '' ? raw.trim() : undefined;
    if (last !== undefined && !ID_RE.test(last)) return 'Last-Event-ID must be a record id (16 hex digits)';
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    if (req.method === 'HEAD') { res.end(); return null; }
    const c: Client = { res, replaying: last !== undefined, held: [], heldSet: new Set(), replayed: new Set(), forgetAt: 0 };
    this.clients.add(c);
    this.recount();
    // A pipelined request's response that never gets the socket never closes either: the socket
    // closing is then the client going (else the capture workers serialise events for no one).
    const gone = () => this.drop(c);
    req.socket.once('close', gone);
    res.on('close', () => { req.socket.off('close', gone); gone(); });
    res.write(': greytap events\n\n');
    if (last !== undefined) void this.replay(c, last, Date.now());
    return null;
  }

  private write(c: Client, s: string): boolean {
    if (c.res.destroyed) return false;
    if (c.res.writableLength > this.maxBuffer) {
      // a slow reader: drop it rather than buffer without bound; it can resume with Last-Event-ID
      c.res.destroy();
      this.drop(c);
      return false;
    }
    c.res.write(s);
    return true;
  }

  private fanOut(ids: string[], made?: string[]): void {
    if (this.clients.size === 0) return;
    const frames = new Map<string, string>();
    if (made) ids.forEach((id, i) => { if (made[i] !== undefined) frames.set(id, made[i]); });
    const frameOf = (id: string) => {
      let f = frames.get(id);
      if (f === undefined) frames.set(id, (f = storedEvent(this.store, id)));
      return f;
    };
    for (const c of this.clients) {
      // A batch's events go in writes of up to WRITE_BYTES, not one each (a chunk and a syscall per
      // event), and the bound is checked before each: a batch (up to 1,024 records) in one write
      // took a client that stopped reading to 30× its bound.
      let out = '';
      for (const id of ids) {
        if (c.replaying) {
          if (c.heldSet.has(id)) continue;
          c.held.push(id);
          c.heldSet.add(id);
          if (c.held.length > this.maxPending) { c.res.destroy(); this.drop(c); break; }
          continue;
        }
        if (c.replayed.has(id)) continue; // already sent by the replay (kept until forgetAt: reports may repeat)
        out += frameOf(id);
        if (out.length >= WRITE_BYTES) {
          if (!this.write(c, out)) { out = ''; break; }
          out = '';
        }
      }
      if (out) this.write(c, out);
    }
  }

  private async replay(c: Client, last: string, subscribedAt: number): Promise<void> {
    const recentFloor = subscribedAt - REMEMBER_MS;
    let after = last;
    try {
      for (;;) {
        const page = this.store.listTransactions({ after, limit: REPLAY_PAGE });
        for (const r of page.items) {
          if (c.heldSet.has(r.id)) continue; // its live event is held: sent after the replay
          if (!this.write(c, eventFrame(r))) return;
          if (idTime(r.id) >= recentFloor) c.replayed.add(r.id);
        }
        if (!page.next) break;
        after = page.next;
        // backpressure: let the socket drain before reading the next page
        if (c.res.writableLength > 0) await new Promise<void>((resolve) => {
          const done = () => { c.res.off('drain', done); c.res.off('close', done); resolve(); };
          c.res.on('drain', done);
          c.res.on('close', done);
        });
        if (c.res.destroyed) return;
      }
    } catch {
      c.res.destroy(); // store read failed: the client reconnects and resumes
      this.drop(c);
      return;
    }
    // hand-over: everything held back, in arrival order; from now on live events go straight out
    c.replaying = false;
    c.forgetAt = Date.now() + REMEMBER_MS;
    const held = c.held;
    c.held = [];
    c.heldSet.clear();
    for (const id of held) {
      if (c.replayed.has(id)) continue;
      const f = storedEvent(this.store, id);
      if (f && !this.write(c, f)) return;
    }
  }
}
