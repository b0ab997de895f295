// Server-Sent Events parser following the WHATWG HTML "event stream interpretation"
// (html.spec.whatwg.org, §9.2.6), with one deliberate difference: at the end of the stream an
// event that had no closing blank line is still returned (a capture wants what a stream that
// ended early did say, not what a browser would dispatch).
import type { SseEvent } from '../records.js';

export class SseParser {
  private partial = ''; // an unterminated line carried to the next push
  private skipLf = false; // the last push ended in CR: a leading LF completes that CRLF
  private started = false; // the BOM is stripped only at the very start
  private data: string[] = [];
  private hasData = false;
  private event = '';
  private lastId = '';
  private ended = false;

  /** Feeds decoded text; returns the events completed by it. */
  push(text: string): SseEvent[] {
    if (this.ended) return [];
    const out: SseEvent[] = [];
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let i = 0;
    if (this.skipLf && text.length > 0) {
      this.skipLf = false;
      if (text.charCodeAt(0) === 10) i = 1;
    }
    // Lines end in CRLF, LF or CR.
    for (;;) {
      let j = i;
      while (j < text.length) {
        const c = text.charCodeAt(j);
        if (c === 10 || c === 13) break;
        j++;
      }
      if (j === text.length) {
        this.partial += text.slice(i);
        return out;
      }
      const line = this.partial + text.slice(i, j);
      this.partial = '';
      if (text.charCodeAt(j) === 13) {
        if (j + 1 === text.length) this.skipLf = true;
        else if (text.charCodeAt(j + 1) === 10) j++;
      }
      i = j + 1;
      this.line(line, out);
    }
  }

  /** The stream ended: returns the unterminated last event, if it carried data. */
  end(): SseEvent[] {
    if (this.ended) return [];
    this.ended = true;
    const out: SseEvent[] = [];
    if (this.partial !== '') this.line(this.partial, out);
    this.partial = '';
    this.dispatch(out);
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') return this.dispatch(out);
    if (line.charCodeAt(0) === 58 /* ':' comment */) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      default: // 'retry' and unknown fields do not shape events
        break;
    }
  }

  private dispatch(out: SseEvent[]): void {
    // An event without any data line is not dispatched; its type is forgotten.
    if (this.hasData) {
      const ev: SseEvent = { data: this.data.join('\n') };
      if (this.event !== '') ev.event = this.event;
      if (this.lastId !== '') ev.id = this.lastId;
      out.push(ev);
    }
    this.data = [];
    this.hasData = false;
    this.event = '';
  }
}

/** All events of a complete (or early-ended) stream. */
export function parseSse(text: string): SseEvent[] {
  const p = new SseParser();
  const events = p.push(text);
  for (const e of p.end()) events.push(e);
  return events;
}
