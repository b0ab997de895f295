// Differential fuzzer for SSE capture (LLM token streaming), end to end. A seeded generator writes
// a `text/event-stream` body — events with multi-line data, `event:`, `id:` (with NUL too, which
// readers ignore), `retry:`, unknown fields, fields without a colon, zero to two spaces after the
// colon, comments, empty data, BOMs, CR / LF / CRLF mixed, non-ASCII and now and then invalid UTF-8,
// a last event with or without its blank line — frames it (chunked at random chunk boundaries,
// Content-Length or close-delimited; gzip now and then, sometimes sync-flushed mid-stream) and a
// real origin writes it in random TCP writes (CR at the end of one write and LF at the start of the
// next included) to a client that went through the real greytap: CONNECT + TLS interception, or a
// plain absolute-URI request. The client must receive the origin's bytes unchanged, and the record
// greytap stores (read back through the API) must hold the events that `interpretEventStream`
// below — the WHATWG HTML "event stream interpretation", written from the spec's text and not
// from src/workers/sse.ts — dispatches from the same body.
//
// One documented difference is modelled, not flagged: greytap also keeps the event a stream ended
// in without its closing blank line (src/workers/sse.ts, "a capture wants what a stream that ended
// early did say"), where the spec discards it. Event types and ids are compared as a reader sees
// them: greytap leaves out `event` when it is "message"'s default and `id` when it is empty.
//
// bench/fuzz-sse.ts runs it for long; test/io/sse-fuzz.test.ts runs a fixed seed for a few seconds.
import zlib from 'node:zlib';
import net from 'node:net';
import tls from 'node:tls';
import { isUtf8 } from 'node:buffer';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { Rng } from './http-fuzz.js';
import { httpConnect, tcp } from './dial.js';
import { loadConfig } from '../src/config.js';
import { serve, type Running } from '../src/serve.js';
import { loadOrCreateCA } from '../src/io/tls-intercept.js';
import { SseParser } from '../src/workers/sse.js';
import type { HttpTransaction, SseEvent } from '../src/records.js';

export { Rng };

// ── The oracle: WHATWG HTML §9.2.6 "Interpreting an event stream" ───────────────────────────

/** An event as a reader's MessageEvent shows it. */
export interface SpecEvent {
  type: string;
  data: string;
  lastEventId: string;
}

/**
 * The events an EventSource dispatches from a whole stream's bytes. `keepUnterminated`: also
 * dispatch the event pending at the end of the stream (its last line processed even without a
 * line end), as greytap does on purpose; the spec discards it.
 */
export function interpretEventStream(bytes: Uint8Array, keepUnterminated: boolean): SpecEvent[] {
  // "Streams must be decoded using the UTF-8 decode algorithm" (Encoding), which strips one
  // leading BOM and replaces invalid sequences with U+FFFD: TextDecoder's defaults are exactly that.
  const stream = new TextDecoder('utf-8').decode(bytes);
  const events: SpecEvent[] = [];
  // "a data buffer, an event type buffer, and a last event ID buffer ... initialized to the empty string"
  let dataBuffer = '';
  let eventTypeBuffer = '';
  let lastEventIdBuffer = '';
  let lastEventIdString = ''; // the event source's

  const dispatch = () => {
    lastEventIdString = lastEventIdBuffer; // step 1
    if (dataBuffer === '') { // step 2
      dataBuffer = '';
      eventTypeBuffer = '';
      return;
    }
    let data = dataBuffer;
    if (data.endsWith('\n')) data = data.slice(0, -1); // step 3
    const ev: SpecEvent = { type: 'message', data, lastEventId: lastEventIdString }; // steps 4–5
    if (eventTypeBuffer !== '') ev.type = eventTypeBuffer; // step 6
    dataBuffer = ''; // step 7
    eventTypeBuffer = '';
    events.push(ev);
  };

  const processField = (field: string, value: string) => {
    if (field === 'event') eventTypeBuffer = value;
    else if (field === 'data') dataBuffer += value + '\n';
    else if (field === 'id') { if (!value.includes('\u0000')) lastEventIdBuffer = value; }
    else if (field === 'retry') { /* sets the reconnection time when all ASCII digits: nothing a capture records */ }
    // "Otherwise: The field is ignored."
  };

  const processLine = (line: string) => {
    if (line === '') return dispatch();
    if (line.startsWith(':')) return; // a comment
    const colon = line.indexOf(':');
    if (colon >= 0) {
      let value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      processField(line.slice(0, colon), value);
    } else processField(line, '');
  };

  // "a U+000D U+000A (CRLF) character pair, a single U+000A (LF) character not preceded by a
  // U+000D (CR) character, and a single U+000D (CR) character not followed by a U+000A (LF)
  // character being the ways in which a line can end."
  let start = 0;
  let i = 0;
  while (i < stream.length) {
    const c = stream[i];
    if (c === '\r' || c === '\n') {
      processLine(stream.slice(start, i));
      i += c === '\r' && stream[i + 1] === '\n' ? 2 : 1;
      start = i;
    } else i++;
  }
  // "Once the end of the file is reached, any pending data must be discarded."
  if (keepUnterminated) {
    if (start < stream.length) processLine(stream.slice(start));
    dispatch();
  }
  return events;
}

/** A stored SseEvent as a reader sees it (greytap leaves out the default type and an empty id). */
export function asSpecEvent(e: SseEvent): SpecEvent {
  return { type: e.event ?? 'message', data: e.data, lastEventId: e.id ?? '' };
}

// ── Generation ───────────────────────────────────────────────────────────────────────────────

const WORDS = ['hello', 'wörld', 'nul\u0000here', '日本語', 'naïve', '😀', 'a: b', '{"x":1}', ' ', '', 'data', 'id: 9', '\u2028', '\u0085', 'tab\there', 'x'.repeat(40)];
const TYPES = ['message', 'delta', 'response.output_text.delta', 'content_block_delta', 'ping', 'é', ''];

function word(r: Rng): string {
  return r.chance(0.7) ? r.pick(WORDS) : String.fromCharCode(0x20 + r.int(95)).repeat(1 + r.int(4));
}

function value(r: Rng): string {
  let s = '';
  for (let n = r.int(4); n > 0; n--) s += word(r);
  return s;
}

/** `name` + separator + value: no colon, or a colon followed by nothing, one, two spaces or a tab. */
function fieldLine(r: Rng, name: string, v: string): string {
  if (v === '' && r.chance(0.15)) return name; // "data" alone: the field with an empty value
  return name + ':' + r.pick(['', ' ', ' ', ' ', '  ', '\t']) + v;
}

/** One line of an event (no line end). */
function eventLine(r: Rng, i: number): string {
  const k = r.int(100);
  if (k < 45) return fieldLine(r, 'data', r.chance(0.1) ? '' : value(r));
  if (k < 55) return fieldLine(r, 'event', r.pick(TYPES));
  if (k < 65) return fieldLine(r, 'id', r.pick(['', `${i}`, `id-${i}`, 'a\u0000b', '\u0000', 'é', ' x']));
  if (k < 70) return fieldLine(r, 'retry', r.pick(['1000', '0', '', '10a', ' 5', '-1']));
  if (k < 78) return ':' + r.pick(['', ' keep-alive', 'ping', ' : x', ' data: no']); // comments
  if (k < 88) return fieldLine(r, r.pick(['foo', 'Data', 'DATA', 'data ', ' data', 'ID', 'Event', 'retry2', 'x-y', 'événement']), value(r)); // unknown fields
  return r.pick(['data', 'event', 'id', 'retry', 'bare', 'data\u0000']); // no colon at all
}

/** Realistic provider streams, whose bodies greytap's dissectors also parse. */
function providerEvents(r: Rng): string[][] {
  const out: string[][] = [];
  const n = 1 + r.int(6);
  if (r.chance(0.5)) {
    for (let i = 0; i < n; i++) out.push([`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":${JSON.stringify(value(r))}}}]}`]);
    out.push(['data: [DONE]']);
  } else {
    out.push(['event: message_start', 'data: {"type":"message_start","message":{"id":"msg_1","role":"assistant","model":"claude"}}']);
    for (let i = 0; i < n; i++) out.push(['event: content_block_delta', `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":${JSON.stringify(value(r))}}}`]);
    out.push(['event: message_stop', 'data: {"type":"message_stop"}']);
  }
  return out;
}

/** A stream's body as the origin means it (before content and transfer codings). */
export function streamBody(r: Rng): { body: Buffer; notes: string[] } {
  const notes: string[] = [];
  const events: string[][] = [];
  if (r.chance(0.2)) { events.push(...providerEvents(r)); notes.push('provider'); }
  const big = r.chance(0.03); // a long answer: thousands of events, bodies of 100 KB and more
  if (big) notes.push('long');
  for (let n = big ? 500 + r.int(3000) : r.int(10); n > 0; n--) {
    const lines: string[] = [];
    for (let k = 1 + r.int(5); k > 0; k--) lines.push(eventLine(r, events.length));
    events.push(lines);
  }
  const eol = (): string => r.pick(['\n', '\n', '\r\n', '\r\n', '\r']);
  const fixedEol = r.chance(0.4) ? eol() : undefined;
  let text = '';
  if (r.chance(0.15)) { text += '\ufeff'; notes.push('bom'); }
  if (r.chance(0.03)) { text += '\ufeff'; notes.push('bom2'); }
  events.forEach((lines, i) => {
    for (const l of lines) text += l + (fixedEol ?? eol());
    const last = i === events.length - 1;
    if (last && r.chance(0.3)) { // the stream ends in this event: no blank line, maybe no line end either
      notes.push('unterminated');
      if (r.chance(0.5)) text = text.replace(/(\r\n|\r|\n)$/, '');
      return;
    }
    for (let b = r.chance(0.1) ? 2 : 1; b > 0; b--) text += fixedEol ?? eol();
  });
  let body = Buffer.from(text);
  if (r.chance(0.03) && body.length) {
    // invalid UTF-8: the spec's decoder gives U+FFFD, greytap stores the bytes as base64
    const at = r.int(body.length + 1);
    body = Buffer.concat([body.subarray(0, at), Buffer.from(r.pick([[0xff], [0xc3], [0xe6, 0x97], [0xed, 0xa0, 0x80]])), body.subarray(at)]);
    notes.push('invalid-utf8');
  }
  return { body, notes };
}

export type Transport = 'https' | 'http';
export type Framing = 'chunked' | 'length' | 'close';

export interface Case {
  seed: number;
  transport: Transport;
  framing: Framing;
  gzip: boolean;
  body: Buffer; // the event stream as meant (content coding not applied)
  request: Buffer;
  response: Buffer; // as the origin writes it
  writes: Buffer[]; // the response cut into the origin's writes
  describe: string;
}

export const HOST = 'sse.test';

function gzipped(r: Rng, body: Buffer): { bytes: Buffer; how: string } {
  if (r.chance(0.5)) return { bytes: zlib.gzipSync(body), how: 'gzip' };
  // a streaming server flushes after an event or so: one gzip member whose DEFLATE data is
  // several sync-flushed pieces (each byte-aligned, none final), then an empty final block
  const out: Buffer[] = [];
  for (let at = 0; at < body.length;) {
    const n = 1 + r.int(Math.min(400, body.length - at));
    out.push(zlib.deflateRawSync(body.subarray(at, at + n), { finishFlush: zlib.constants.Z_SYNC_FLUSH }));
    at += n;
  }
  const pieces = out.length;
  const raw = Buffer.from([0x03, 0x00]); // a final fixed-Huffman block holding only end-of-block
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(zlib.crc32(body), 0);
  trailer.writeUInt32LE(body.length >>> 0, 4);
  return { bytes: Buffer.concat([header, ...out, raw, trailer]), how: `gzip, ${pieces} flushes` };
}

function chunkedFraming(r: Rng, payload: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  while (at < payload.length) {
    const n = 1 + r.int(Math.min(payload.length - at, r.chance(0.5) ? 16 : 2000));
    const size = n.toString(16);
    out.push(Buffer.from(`${r.chance(0.3) ? size.toUpperCase() : size}${r.chance(0.05) ? ';ext=1' : ''}\r\n`), payload.subarray(at, at + n), Buffer.from('\r\n'));
    at += n;
  }
  out.push(Buffer.from(r.chance(0.1) ? '0\r\nX-Trailer: t\r\n\r\n' : '0\r\n\r\n'));
  return Buffer.concat(out);
}

/** Cut points: random ones, and now and then right after a CR whose LF starts the next write. */
function cut(r: Rng, bytes: Buffer): Buffer[] {
  const points = new Set<number>();
  for (let n = r.int(Math.min(30, bytes.length)); n > 0; n--) points.add(1 + r.int(bytes.length - 1));
  if (r.chance(0.6)) {
    const crlf: number[] = [];
    for (let i = bytes.indexOf(13); i >= 0 && i + 1 < bytes.length; i = bytes.indexOf(13, i + 1)) if (bytes[i + 1] === 10) crlf.push(i + 1);
    for (let n = 1 + r.int(4); n > 0 && crlf.length; n--) points.add(r.pick(crlf));
  }
  const sorted = [...points].filter((p) => p > 0 && p < bytes.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...sorted, bytes.length]) { out.push(bytes.subarray(prev, p)); prev = p; }
  return out;
}

export function generateCase(seed: number): Case {
  const r = new Rng(seed);
  const { body, notes } = streamBody(r);
  const transport: Transport = r.chance(0.6) ? 'https' : 'http';
  const framing: Framing = r.pick(['chunked', 'chunked', 'length', 'close'] as const);
  const gz = r.chance(0.3) ? gzipped(r, body) : undefined;
  const payload = gz ? gz.bytes : body;
  const head = [`HTTP/1.1 200 OK`, `Content-Type: ${r.pick(['text/event-stream', 'text/event-stream; charset=utf-8', 'Text/Event-Stream'])}`, 'Cache-Control: no-cache'];
  if (gz) head.push('Content-Encoding: gzip');
  if (framing === 'chunked') head.push('Transfer-Encoding: chunked');
  if (framing === 'length') head.push(`Content-Length: ${payload.length}`);
  head.push('Connection: close');
  const response = Buffer.concat([Buffer.from(head.join('\r\n') + '\r\n\r\n'), framing === 'chunked' ? chunkedFraming(r, payload) : payload]);
  const path = `/sse/${seed}`;
  const target = transport === 'https' ? path : `http://${HOST}${path}`;
  const request = Buffer.from(`GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n`);
  const writes = cut(r, response);
  const describe = `${transport}, ${framing}${gz ? `, ${gz.how}` : ''}, body ${body.length} B in ${writes.length} writes${notes.length ? `, ${notes.join(', ')}` : ''}`;
  return { seed, transport, framing, gzip: !!gz, body, request, response, writes, describe };
}

/** The seed of case `i` of a run seeded `seed` (a failure prints it: `--replay` runs it alone). */
export function caseSeed(seed: number, i: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2f) + Math.imul(i + 1, 0x9e3779b1)) >>> 0;
}

// ── The rig: a real greytap between a real origin and a real client ─────────────────────────

export interface Rig {
  running: Running;
  /** Runs cases concurrently through greytap; returns one problem list per case. */
  run(cases: Case[]): Promise<string[][]>;
  close(): Promise<void>;
}

async function listen(s: net.Server): Promise<number> {
  await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
  return (s.address() as net.AddressInfo).port;
}

export async function startRig(opts: { workers?: number } = {}): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'greytap-sse-fuzz-'));
  const upstreamCa = loadOrCreateCA(join(dir, 'upstream'), { commonName: 'sse fuzz upstream CA', cacheSize: 4 });
  const pending = new Map<string, { c: Case; done: (problem?: string) => void }>();

  /** The origin: reads the request head, answers with the case's writes, each its own TCP write. */
  const serveCase = (s: net.Socket) => {
    s.setNoDelay(true);
    s.on('error', () => {});
    let head = Buffer.alloc(0);
    const onData = async (d: Buffer) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      const path = /^GET (?:http:\/\/[^/]+)?(\/sse\/\d+) /.exec(head.toString('latin1'))?.[1];
      const p = path ? pending.get(path) : undefined;
      if (!p) return void s.destroy();
      if (!head.equals(p.c.request)) p.done(`origin received ${JSON.stringify(head.toString('latin1'))}, client sent ${JSON.stringify(p.c.request.toString('latin1'))}`);
      for (const w of p.c.writes) {
        await new Promise<void>((res) => s.write(w, () => res()));
        // two turns: greytap (same process) reads this write before the next one is made
        await turn();
        await turn();
      }
      s.end();
    };
    s.on('data', onData);
  };
  const tlsOrigin = tls.createServer(upstreamCa.issueLeaf([HOST]), serveCase);
  const plainOrigin = net.createServer(serveCase);
  const [tlsPort, plainPort] = await Promise.all([listen(tlsOrigin), listen(plainOrigin)]);
  const cfg = loadConfig(['--data-dir', join(dir, 'data'), '--http-proxy', '127.0.0.1:0', '--socks', '127.0.0.1:0', '--api', '127.0.0.1:0', '--workers', String(opts.workers ?? 1),
    '--upstream-ca', upstreamCa.caCertPath, '--map', `${HOST}:443=127.0.0.1:${tlsPort}`, '--map', `${HOST}:80=127.0.0.1:${plainPort}`], {});
  const closeOrigins = () => { tlsOrigin.close(); plainOrigin.close(); };
  let running: Running;
  try {
    running = await serve(cfg);
  } catch (e) {
    closeOrigins();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const proxyPort = running.addresses.httpProxy!.port;
  const api = `http://127.0.0.1:${running.addresses.api!.port}`;
  const proxyCa = readFileSync(running.caPath, 'utf8');
  let lastId: string | undefined; // records before it were read by an earlier group

  const apiGet = async (path: string): Promise<any> => {
    const res = await fetch(api + path);
    if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };

  /** One case's client: through the proxy, the request written, everything read until the close. */
  const client = async (c: Case): Promise<Buffer> => {
    let sock: net.Socket = await tcp('127.0.0.1', proxyPort);
    const got: Buffer[] = [];
    if (c.transport === 'https') {
      await httpConnect(sock, HOST, 443);
      const t = tls.connect({ socket: sock, servername: HOST, ca: proxyCa });
      await new Promise<void>((res, rej) => { t.once('secureConnect', res); t.once('error', rej); });
      sock = t;
    }
    return new Promise<Buffer>((res, rej) => {
      sock.on('data', (d) => got.push(d));
      sock.once('error', rej);
      sock.setTimeout(20_000, () => sock.destroy(new Error(`no close after 20 s idle, ${Buffer.concat(got).length} B read`)));
      sock.once('end', () => { sock.end(); res(Buffer.concat(got)); });
      sock.write(c.request);
    });
  };

  const run = async (cases: Case[]): Promise<string[][]> => {
    const problems = cases.map(() => [] as string[]);
    await Promise.all(cases.map(async (c, k) => {
      const path = `/sse/${c.seed}`;
      pending.set(path, { c, done: (p) => { if (p) problems[k].push(p); } });
      try {
        const got = await client(c);
        if (!got.equals(c.response)) problems[k].push(`client received ${got.length} B, not the origin's ${c.response.length} B${firstDiff(got, c.response)}`);
      } catch (e) {
        problems[k].push(`client: ${(e as Error).message}`);
      }
    }));
    await running.ctx.pool.drain();
    // every record since the last group, by path
    const byPath = new Map<string, string>();
    for (;;) {
      const page = await apiGet(`/api/transactions?kind=HTTP&limit=1000${lastId ? `&after=${lastId}` : ''}`);
      for (const t of page.items as HttpTransaction[]) { byPath.set(t.path, t.id); lastId = t.id; }
      if (page.items.length < 1000) break;
    }
    await Promise.all(cases.map(async (c, k) => {
      const path = `/sse/${c.seed}`;
      pending.delete(path);
      const id = byPath.get(path);
      if (!id) return void problems[k].push('no record');
      problems[k].push(...compare(c, await apiGet(`/api/transactions/${id}`) as HttpTransaction));
    }));
    return problems;
  };

  const close = async () => {
    await running.stop();
    closeOrigins();
    rmSync(dir, { recursive: true, force: true });
  };
  return { running, run, close };
}

function firstDiff(a: Buffer, b: Buffer): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return `; first difference at byte ${i}: ${JSON.stringify(a.subarray(i, i + 24).toString('latin1'))} vs ${JSON.stringify(b.subarray(i, i + 24).toString('latin1'))}`;
}

/** What the record must say: status, no error, the body as meant, the oracle's events. */
export function compare(c: Case, tx: HttpTransaction): string[] {
  const out: string[] = [];
  if (tx.status !== 200) out.push(`status ${tx.status}`);
  if (tx.error) out.push(`error ${tx.error}: ${tx.errorDetail}`);
  if (tx.truncated) out.push('truncated');
  if (isUtf8(c.body)) {
    if (tx.respBody !== c.body.toString('utf8')) out.push(`respBody ${JSON.stringify(tx.respBody?.slice(0, 80))} is not the body sent`);
  } else if (tx.respBodyBase64 !== c.body.toString('base64')) out.push('respBodyBase64 is not the body sent');
  const want = interpretEventStream(c.body, true);
  const diff = eventsDiff((tx.respEvents ?? []).map(asSpecEvent), want);
  if (diff) out.push(`events: ${diff}`);
  // The record parses the whole body at once; SseParser also takes text a piece at a time (a CR
  // ending one piece and its LF starting the next): fed the body's text in random pieces.
  const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(c.body);
  const p = new SseParser();
  const pieces = cut(new Rng(c.seed ^ 0x51ce), Buffer.from(text, 'latin1')); // one byte per UTF-16 unit: offsets map
  const pieced: SseEvent[] = [];
  let at = 0;
  for (const piece of pieces) {
    pieced.push(...p.push(text.slice(at, at + piece.length)));
    at += piece.length;
  }
  pieced.push(...p.end());
  const piecedDiff = eventsDiff(pieced.map(asSpecEvent), want);
  if (piecedDiff) out.push(`SseParser fed ${pieces.length} pieces: ${piecedDiff}`);
  return out;
}

function eventsDiff(got: SpecEvent[], want: SpecEvent[]): string | undefined {
  if (isDeepStrictEqual(got, want)) return undefined;
  let i = 0;
  while (i < got.length && i < want.length && isDeepStrictEqual(got[i], want[i])) i++;
  return `greytap ${got.length}, oracle ${want.length}; first difference at #${i}: greytap ${JSON.stringify(got[i])} oracle ${JSON.stringify(want[i])}`;
}
