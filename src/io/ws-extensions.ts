// What the 101 response agreed on in Sec-WebSocket-Extensions (RFC 6455 §9.1 grammar, RFC 7692 §7
// parameters), turned into per-direction inflate parameters. Only the RESPONSE matters: the client
// offers, the server picks, and greytap never rewrites either header.
import type { Header } from '../records.js';
import type { DeflateParams } from '../workers/tasks.js';

export interface NegotiatedExtensions {
  /** client → server messages (compressed by the client) */
  client: DeflateParams | null;
  /** server → client messages */
  server: DeflateParams | null;
  /** names of other negotiated extensions: they may define RSV bits we cannot check */
  others: string[];
  /** RFC 7692 violations we were lenient about (unknown/duplicate/invalid parameters) */
  problems: string[];
}

interface Extension {
  name: string;
  params: [string, string | true][];
}

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/** Parses one or more comma-separated extension lists into extensions with parameters (quoted values unquoted). */
export function parseExtensionList(value: string): Extension[] {
  const out: Extension[] = [];
  let i = 0;
  const n = value.length;
  const skipWs = () => {
    while (i < n && (value[i] === ' ' || value[i] === '\t')) i++;
  };
  const token = () => {
    const s = i;
    while (i < n && TOKEN.test(value[i])) i++;
    return value.slice(s, i);
  };
  const quoted = () => {
    // RFC 7230 §3.2.6 quoted-string with backslash escapes.
    let s = '';
    i++;
    while (i < n && value[i] !== '"') {
      if (value[i] === '\\' && i + 1 < n) i++;
      s += value[i++];
    }
    i++; // closing quote (or end)
    return s;
  };
  while (i < n) {
    skipWs();
    if (value[i] === ',') {
      i++;
      continue;
    }
    const name = token();
    if (!name) {
      // Garbage: skip to the next extension.
      while (i < n && value[i] !== ',') i++;
      continue;
    }
    const ext: Extension = { name: name.toLowerCase(), params: [] };
    out.push(ext);
    skipWs();
    while (i < n && value[i] === ';') {
      i++;
      skipWs();
      const p = token().toLowerCase();
      skipWs();
      let v: string | true = true;
      if (value[i] === '=') {
        i++;
        skipWs();
        v = value[i] === '"' ? quoted() : token();
        skipWs();
      }
      if (p) ext.params.push([p, v]);
    }
    while (i < n && value[i] !== ',') i++;
  }
  return out;
}

function windowBits(v: string | true, name: string, problems: string[]): number {
  // RFC 7692 §7.1.2: 8..15 without leading zeros. In a response client_max_window_bits MUST have a
  // value; a bare one is tolerated here (the client then uses 15).
  if (v === true) {
    problems.push(`${name} without a value`);
    return 15;
  }
  if (!/^(?:[89]|1[0-5])$/.test(v)) {
    problems.push(`${name}=${v} is not 8..15`);
    return 15;
  }
  return Number(v);
}

/** The permessage-deflate parameters of each direction, from the 101 response's headers. */
export function negotiatedExtensions(responseHeaders: Header[]): NegotiatedExtensions {
  const list = responseHeaders
    .filter(([k]) => k.toLowerCase() === 'sec-websocket-extensions')
    .flatMap(([, v]) => parseExtensionList(v));
  const result: NegotiatedExtensions = { client: null, server: null, others: [], problems: [] };
  for (const ext of list) {
    if (ext.name !== 'permessage-deflate') {
      result.others.push(ext.name);
      continue;
    }
    if (result.client) {
      result.problems.push('permessage-deflate accepted twice; the first one counts');
      continue;
    }
    const client: DeflateParams = { contextTakeover: true, windowBits: 15 };
    const server: DeflateParams = { contextTakeover: true, windowBits: 15 };
    const seen = new Set<string>();
    for (const [p, v] of ext.params) {
      if (seen.has(p)) result.problems.push(`duplicate ${p}`);
      seen.add(p);
      if (p === 'server_no_context_takeover') server.contextTakeover = false;
      else if (p === 'client_no_context_takeover') client.contextTakeover = false;
      else if (p === 'server_max_window_bits') server.windowBits = windowBits(v, p, result.problems);
      else if (p === 'client_max_window_bits') client.windowBits = windowBits(v, p, result.problems);
      else result.problems.push(`unknown parameter ${p}`);
      if ((p === 'server_no_context_takeover' || p === 'client_no_context_takeover') && v !== true) {
        result.problems.push(`${p} with a value`);
      }
    }
    result.client = client;
    result.server = server;
  }
  return result;
}
