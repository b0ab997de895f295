// Credential redaction, applied before anything is stored (DESIGN.md "Records": credentials redacted).
// Bodies keep their content; only header values are replaced. Order and name case are kept so the
// stored head still reads like the wire.
import type { Header } from '../records.js';

export const REDACTED = '[REDACTED]';

/** Header names whose whole value is a credential. */
const ALWAYS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);
/** Substrings of header names that mark a credential (x-api-key, api-key, x-goog-api-key, x-auth-token…). */
const SUBSTRINGS = ['api-key', 'apikey', 'token', 'secret'];
/** Authorization-style headers keep their scheme (RFC 9110 §11.4: credentials = auth-scheme [ 1*SP token68 / params ]). */
const KEEPS_SCHEME = new Set(['authorization', 'proxy-authorization']);

export function isSecretHeader(name: string, extra: readonly string[] = []): boolean {
  const n = name.toLowerCase();
  if (ALWAYS.has(n)) return true;
  for (const s of SUBSTRINGS) if (n.includes(s)) return true;
  for (const s of extra) if (s && n.includes(s.toLowerCase())) return true;
  return false;
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
    if (!isSecretHeader(name, extra)) continue;
    const v = redactValue(name, value);
    if (v === value) continue;
    out ??= headers.slice();
    out[i] = [name, v];
  }
  return out ?? headers;
}
