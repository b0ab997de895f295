// HTTP transactions as HAR 1.2 entries (http://www.softwareishard.com/blog/har-12-spec/). A 101
// upgrade entry carries its WebSocket messages the way Chrome DevTools exports them:
// `_resourceType: "websocket"` and `_webSocketMessages: [{type, time, opcode, data}]`, with `time`
// in seconds since the epoch (float) and `data` the text, or base64 for binary payloads.
import type { Header, HttpTransaction, SseEvent, WsMessageRecord, WsOpcodeName } from '../records.js';

export interface HarNameValue { name: string; value: string }

export interface HarWebSocketMessage { type: 'send' | 'receive'; time: number; opcode: number; data: string }

export interface HarEntry {
  startedDateTime: string;
  time: number;
  request: {
    method: string; url: string; httpVersion: string; cookies: HarNameValue[]; headers: HarNameValue[];
    queryString: HarNameValue[]; postData?: { mimeType: string; text: string; params?: HarNameValue[]; encoding?: string };
    headersSize: number; bodySize: number;
  };
  response: {
    status: number; statusText: string; httpVersion: string; cookies: HarNameValue[]; headers: HarNameValue[];
    content: { size: number; mimeType: string; text?: string; encoding?: string };
    redirectURL: string; headersSize: number; bodySize: number;
  };
  cache: Record<string, never>;
  timings: { blocked: number; dns: number; connect: number; ssl: number; send: number; wait: number; receive: number };
  connection: string;
  comment?: string;
  _greytapId: string;
  _resourceType?: 'websocket';
  _webSocketMessages?: HarWebSocketMessage[];
}

const OPCODES: Record<WsOpcodeName, number> = { text: 1, binary: 2, close: 8, ping: 9, pong: 10 };
const DEFAULT_PORT: Record<string, number> = { http: 80, ws: 80, https: 443, wss: 443 };

function header(hs: Header[], name: string): string | undefined {
  const n = name.toLowerCase();
  return hs.find(([k]) => k.toLowerCase() === n)?.[1];
}

function nameValues(hs: Header[]): HarNameValue[] {
  return hs.map(([name, value]) => ({ name, value }));
}

/** RFC 6265 §5.4 Cookie: name=value pairs separated by "; ". Redacted values stay redacted. */
function cookies(hs: Header[]): HarNameValue[] {
  const out: HarNameValue[] = [];
  for (const [k, v] of hs) {
    if (k.toLowerCase() !== 'cookie') continue;
    for (const part of v.split(';')) {
      const i = part.indexOf('=');
      if (i > 0) out.push({ name: part.slice(0, i).trim(), value: part.slice(i + 1).trim() });
    }
  }
  return out;
}

function queryString(path: string): HarNameValue[] {
  const q = path.indexOf('?');
  if (q < 0) return [];
  const out: HarNameValue[] = [];
  for (const part of path.slice(q + 1).split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const [n, v] = i < 0 ? [part, ''] : [part.slice(0, i), part.slice(i + 1)];
    const dec = (s: string) => { try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; } };
    out.push({ name: dec(n), value: dec(v) });
  }
  return out;
}

/**
 * A path and query as a URI may hold them (RFC 3986 §3.3, §3.4): escapes and the characters allowed
 * there stay; anything else is percent-encoded as UTF-8 — the "[REDACTED]" the store puts in for a
 * credential parameter, and what lax clients send unescaped and the proxy forwards ('{', '"', '|',
 * non-ASCII), which HAR readers that parse `url` reject. A '%' that starts no escape becomes %25.
 */
const NOT_IN_URI_PATH = /%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]/gu;

function uriPath(p: string): string {
  return p.replace(NOT_IN_URI_PATH, (c) => Array.from(Buffer.from(c, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));
}

function url(tx: HttpTransaction): string {
  const host = tx.host.includes(':') && !tx.host.startsWith('[') ? `[${tx.host}]` : tx.host;
  const port = DEFAULT_PORT[tx.scheme] === tx.port ? '' : `:${tx.port}`;
  // an absolute-form request-target (plain HTTP proxying) already is the URL
  const abs = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)(.*)$/is.exec(tx.path);
  if (abs) return abs[1] + uriPath(abs[2]);
  return `${tx.scheme}://${host}${port}${uriPath(tx.path.startsWith('/') ? tx.path : '/' + tx.path)}`;
}

function httpVersion(v: string | undefined): string {
  if (!v) return 'HTTP/1.1';
  return /^HTTP\//i.test(v) ? v : `HTTP/${v}`;
}

function sseText(events: SseEvent[]): string {
  return events.map((e) => (e.id !== undefined ? `id: ${e.id}\n` : '') + (e.event ? `event: ${e.event}\n` : '') + e.data.split('\n').map((l) => `data: ${l}`).join('\n') + '\n\n').join('');
}

export function harEntry(tx: HttpTransaction, ws: WsMessageRecord[] = []): HarEntry {
  const reqText = tx.reqBody ?? tx.reqBodyBase64;
  const respText = tx.respBody ?? tx.respBodyBase64 ?? (tx.respEvents ? sseText(tx.respEvents) : undefined);
  const respLen = tx.respBodySize ?? (tx.respBody !== undefined ? Buffer.byteLength(tx.respBody) : tx.respBodyBase64 !== undefined ? Buffer.from(tx.respBodyBase64, 'base64').length : 0);
  const reqLen = tx.reqBodySize ?? (tx.reqBody !== undefined ? Buffer.byteLength(tx.reqBody) : tx.reqBodyBase64 !== undefined ? Buffer.from(tx.reqBodyBase64, 'base64').length : 0);
  const e: HarEntry = {
    startedDateTime: new Date(tx.ts).toISOString(),
    time: Math.max(0, tx.durationMs ?? 0),
    request: {
      method: tx.method,
      url: url(tx),
      httpVersion: httpVersion(tx.httpVersion),
      cookies: cookies(tx.reqHeaders ?? []),
      headers: nameValues(tx.reqHeaders ?? []),
      queryString: queryString(tx.path),
      headersSize: -1,
      bodySize: reqLen,
    },
    response: {
      status: tx.status ?? 0,
      statusText: tx.statusText ?? '',
      httpVersion: httpVersion(tx.httpVersion),
      cookies: [],
      headers: nameValues(tx.respHeaders ?? []),
      content: { size: respLen, mimeType: header(tx.respHeaders ?? [], 'content-type') ?? 'x-unknown' },
      redirectURL: header(tx.respHeaders ?? [], 'location') ?? '',
      headersSize: -1,
      bodySize: tx.status === undefined ? -1 : respLen,
    },
    cache: {},
    // greytap measures request start → last response byte only; the phases it cannot see are -1
    timings: { blocked: -1, dns: -1, connect: -1, ssl: -1, send: 0, wait: Math.max(0, tx.durationMs ?? 0), receive: 0 },
    connection: tx.conn,
    _greytapId: tx.id,
  };
  // The capture gives every request a body field, '' when it had none; postData is for a request
  // that sent a body (as browsers write HAR): a GET or an empty POST has none.
  if (reqText !== undefined && (reqText !== '' || reqLen > 0)) {
    e.request.postData = { mimeType: header(tx.reqHeaders ?? [], 'content-type') ?? '', text: reqText };
    if (tx.reqBody === undefined) e.request.postData.encoding = 'base64'; // not in HAR 1.2; what HAR viewers accept for binary
  }
  if (respText !== undefined) {
    e.response.content.text = respText;
    if (tx.respBody === undefined && tx.respBodyBase64 !== undefined) e.response.content.encoding = 'base64';
  }
  const notes = [tx.error && `error: ${tx.error}${tx.errorDetail ? ` (${tx.errorDetail})` : ''}`, tx.truncated && 'body truncated'].filter(Boolean);
  if (notes.length) e.comment = notes.join('; ');
  if (tx.status === 101) {
    e._resourceType = 'websocket';
    e._webSocketMessages = ws.map(harWsMessage);
  }
  return e;
}

export function harWsMessage(m: WsMessageRecord): HarWebSocketMessage {
  return {
    type: m.direction === 'client' ? 'send' : 'receive',
    time: m.ts / 1000,
    opcode: OPCODES[m.opcode] ?? 1,
    data: m.body ?? m.bodyBase64 ?? '',
  };
}

export function harCreator(version: string): { name: string; version: string } {
  return { name: 'greytap', version };
}
