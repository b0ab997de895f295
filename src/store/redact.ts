// Credential redaction, applied before anything is stored (DESIGN.md "Records": credentials redacted).
// Bodies keep their content; header values and credential query parameters of a path (and of a
// URL-valued header) are replaced.
// Order and name case are kept so the stored head still reads like the wire.
import type { Header } from '../records.js';

export const REDACTED = '[REDACTED]';

/** Header names whose whole value is a credential. */
const ALWAYS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);
/** Substrings of header names that mark a credential (x-api-key, api-key, x-goog-api-key, x-auth-token, ocp-apim-subscription-key…). */
const SUBSTRINGS = ['api-key', 'apikey', 'token', 'secret', 'subscription-key'];
/** Query parameter names that are credentials besides those (Gemini's `?key=`, signed URLs' `sig`). */
const QUERY_NAMES = new Set(['key', 'sig', 'password', 'pwd', 'auth']);
/**
 * Headers whose value is a URL: a credential query parameter in it is redacted as in a path (a
 * redirect to a presigned URL carries the signature the next request's path has redacted).
 */
const URL_VALUED = new Set(['location', 'content-location', 'referer']);
/** Authorization-style headers keep their scheme (RFC 9110 §11.4: credentials = auth-scheme [ 1*SP token68 / params ]). */
const KEEPS_SCHEME = new Set(['authorization', 'proxy-authorization']);

export function isSecretHeader(name: string, extra: readonly string[] = []): boolean {
  const n = name.toLowerCase();
  if (ALWAYS.has(n)) return true;
  for (const s of SUBSTRINGS) if (n.includes(s)) return true;
  for (const s of extra) if (s && n.includes(s.toLowerCase())) return true;
  return false;
}

/**
 * Browsers cannot set headers on a WebSocket, so OpenAI's Realtime API takes the key as a
 * subprotocol, `openai-insecure-api-key.sk-…`: such elements keep their prefix, the others stay.
 */
function redactSubprotocols(value: string, extra: readonly string[]): string {
  return value.replace(/([^,\s]+?)\.([^,\s]+)/g, (all, prefix: string) => (isSecretHeader(prefix, extra) ? `${prefix}.${REDACTED}` : all));
}

/** "Bearer sk-…" → "Bearer [REDACTED]"; a value with no scheme (or only a scheme) → "[REDACTED]". */
function redactValue(name: string, value: string): string {
  if (KEEPS_SCHEME.has(name.toLowerCase())) {
    const m = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s+\S/.exec(value);
    if (m) return `${m[1]} ${REDACTED}`;
  }
  return REDACTED;
}

/**
 * Credential values replaced by a marker; the input is never mutated (a new array is returned when
 * something changed). Idempotent: redacting twice gives the same result, so the store re-applies it
 * as a safety net.
 */
export function redactHeaders(headers: Header[], extra?: string[]): Header[] {
  let out: Header[] | null = null;
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i];
    let v: string;
    if (isSecretHeader(name, extra)) v = redactValue(name, value);
    else if (name.length === 22 && name.toLowerCase() === 'sec-websocket-protocol') v = redactSubprotocols(value, extra ?? []);
    else if (name.length <= 16 && URL_VALUED.has(name.toLowerCase())) v = redactPath(value, extra);
    else continue;
    if (v === value) continue;
    out ??= headers.slice();
    out[i] = [name, v];
  }
  return out ?? headers;
}

/**
 * A path (with query) whose credential parameters' values are replaced: names that would be secret
 * as header names (api_key, access_token, client_secret…, and the extras), are in QUERY_NAMES, or
 * end in "signature" (X-Amz-Signature).
 * Idempotent; a path without a query is returned as it is.
 */
export function redactPath(path: string, extra?: readonly string[]): string {
  const q = path.indexOf('?');
  if (q < 0) return path;
  const hash = path.indexOf('#', q);
  const end = hash < 0 ? path.length : hash;
  const query = path.slice(q + 1, end).replace(/(^|&)([^=&]+)=([^&]*)/g, (all, sep: string, name: string) => {
    let n = name;
    try { n = decodeURIComponent(name); } catch { /* a malformed escape: judge the name as written */ }
    n = n.toLowerCase().replace(/_/g, '-');
    return QUERY_NAMES.has(n) || n.endsWith('signature') || isSecretHeader(n, extra) ? `${sep}${name}=${REDACTED}` : all;
  });
  return path.slice(0, q + 1) + query + path.slice(end);
}
