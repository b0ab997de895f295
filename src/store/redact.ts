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

/** A name as the tests below read it: lower case, `_` as `-` (an `x_api_key` header is an `x-api-key`). */
function normalName(name: string): string {
  const n = name.toLowerCase();
  return n.includes('_') ? n.replace(/_/g, '-') : n;
}

export function isSecretHeader(name: string, extra: readonly string[] = []): boolean {
  const n = normalName(name);
  if (ALWAYS.has(n)) return true;
  for (const s of SUBSTRINGS) if (n.includes(s)) return true;
  for (const s of extra) if (s && n.includes(normalName(s))) return true;
  return false;
}

/** Subprotocol words that announce a credential after them (besides secret header names). */
const SUBPROTOCOL_MARKS = new Set(['bearer', 'auth', 'jwt']);
const marksCredential = (word: string, extra: readonly string[]) => SUBPROTOCOL_MARKS.has(word.toLowerCase()) || isSecretHeader(word, extra);

/**
 * Browsers cannot set headers on a WebSocket, so credentials travel as subprotocols: OpenAI's
 * Realtime API takes `openai-insecure-api-key.sk-…`, Kubernetes `base64url.bearer.authorization.k8s.io.<token>`,
 * and other servers a `token` (or `bearer`, `access_token`…) element followed by the token itself.
 * A dotted element is cut after its first word that marks a credential; an element after a bare
 * marking word is replaced whole. The rest stays.
 */
function redactSubprotocols(value: string, extra: readonly string[]): string {
  let afterMark = false;
  return value.replace(/[^,\s]+/g, (el) => {
    if (afterMark) { afterMark = false; return REDACTED; }
    const words = el.split('.');
    if (words.length === 1) { afterMark = marksCredential(el, extra); return el; }
    const at = words.findIndex((w, i) => i < words.length - 1 && marksCredential(w, extra));
    return at < 0 ? el : `${words.slice(0, at + 1).join('.')}.${REDACTED}`;
  });
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
 * A path or URL whose credential parameters' values are replaced: names that would be secret as
 * header names (api_key, access_token, client_secret…, and the extras), are in QUERY_NAMES, or end
 * in "signature" (X-Amz-Signature). The fragment's parameters too: an OAuth implicit grant
 * (RFC 6749 §4.2.2) redirects with `#access_token=…` in its Location.
 * Idempotent; a path without a query or fragment is returned as it is.
 */
export function redactPath(path: string, extra?: readonly string[]): string {
  const hash = path.indexOf('#');
  const end = hash < 0 ? path.length : hash;
  const first = path.indexOf('?');
  const q = first < end ? first : -1; // a `?` inside the fragment starts no query
  if (q < 0 && hash < 0) return path;
  const head = q < 0 ? path.slice(0, end) : path.slice(0, q + 1) + redactParams(path.slice(q + 1, end), extra);
  return hash < 0 ? head : head + '#' + redactParams(path.slice(hash + 1), extra);
}

function redactParams(params: string, extra: readonly string[] | undefined): string {
  return params.replace(/(^|&)([^=&]+)=([^&]*)/g, (all, sep: string, name: string) => {
    let n = name;
    try { n = decodeURIComponent(name); } catch { /* a malformed escape: judge the name as written */ }
    n = normalName(n);
    return QUERY_NAMES.has(n) || n.endsWith('signature') || isSecretHeader(n, extra) ? `${sep}${name}=${REDACTED}` : all;
  });
}

/**
 * Free text that may quote a request target or URL (an error's detail quoting a malformed request
 * line): a URL's userinfo and every credential parameter of a word holding `?` or `#` replaced.
 */
export function redactText(text: string, extra?: readonly string[]): string {
  return text
    .replace(/\/\/[^\s/?#@"]*@/g, `//${REDACTED}@`)
    .replace(/[^\s"]+/g, (word) => (word.includes('?') || word.includes('#') ? redactPath(word, extra) : word)); // (linear: a pattern around [?#] backtracked on long words)
}
