// Saves what greytap captured of a real agent's HTTP calls to one host as a replay fixture for
// test/conversations/real-clients.test.ts: each POST's request and response as greytap stored them
// (headers already redacted by greytap: authorization, x-api-key, cookies), oldest first, the
// request bodies' long texts cut (elide).
//
//   node dist/bench/agent-fixture.js --api http://127.0.0.1:PORT --host api.anthropic.com \
//        --client "claude-code 2.1.197" --how "what the client was asked to do" --out FILE.json
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Header } from '../src/records.js';

/** One recorded exchange. Bodies are the decoded text greytap stored. */
export interface FixtureExchange {
  method: string;
  path: string;
  reqHeaders: Header[];
  reqBody: string;
  status: number;
  respHeaders: Header[];
  respBody: string;
}

export interface AgentFixture { client: string; how: string; exchanges: FixtureExchange[] }

/** Headers a replay must not copy: framing, compression and the connection are the replaying client's own. */
export const HOP_HEADERS = new Set(['host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'accept-encoding', 'content-encoding']);

/** Texts longer than this are cut in a saved fixture (see elide). */
const KEEP_CHARS = 160;

/**
 * A request body with the client's own long texts cut: its system prompt, tool descriptions and
 * injected reminders are the vendor's text, not ours to ship, and no test needs more than their
 * start (a text cut the same way in every request still matches across them). JSON structure,
 * short texts (prompts, tool calls, results, the billing header) and every key are kept.
 */
export function elide(value: unknown): unknown {
  if (typeof value === 'string') return value.length > KEEP_CHARS ? `${value.slice(0, KEEP_CHARS)}[… ${value.length - KEEP_CHARS} characters left out of the fixture]` : value;
  if (Array.isArray(value)) return value.map(elide);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, elide(v)]));
  return value;
}

/** The body as JSON text with its long strings elided; a body that is not JSON as it is. */
function elideBody(body: string): string {
  try { return JSON.stringify(elide(JSON.parse(body))); } catch { return body; }
}

/**
 * Writes the fixture of every POST greytap (API at `api`) captured to `host` (from a client whose
 * User-Agent matches `ua`, when given: several clients share a host); returns how many.
 */
export async function saveFixture(api: string, host: string, client: string, how: string, out: string, ua?: RegExp): Promise<number> {
  const get = async (p: string) => { const r = await fetch(api + p); if (!r.ok) throw new Error(`${p}: ${r.status}`); return r.json() as Promise<any>; };
  const list = (await get(`/api/transactions?kind=HTTP&host=${encodeURIComponent(host)}&limit=1000`)).items as any[];
  const exchanges: FixtureExchange[] = [];
  for (const t of list.filter((x) => x.method === 'POST').sort((x, y) => x.ts - y.ts)) {
    const full = await get(`/api/transactions/${t.id}`);
    if (ua && !ua.test(String((full.reqHeaders as Header[]).find(([k]) => k.toLowerCase() === 'user-agent')?.[1] ?? ''))) continue;
    exchanges.push({ method: full.method, path: full.path, reqHeaders: full.reqHeaders, reqBody: elideBody(full.reqBody ?? ''), status: full.status, respHeaders: full.respHeaders, respBody: full.respBody ?? '' });
  }
  const fixture: AgentFixture = { client, how, exchanges };
  writeFileSync(out, JSON.stringify(fixture, null, 1) + '\n');
  return exchanges.length;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values: a } = parseArgs({ options: { api: { type: 'string' }, host: { type: 'string' }, client: { type: 'string' }, how: { type: 'string' }, out: { type: 'string' } } });
  if (!a.api || !a.host || !a.out) throw new Error('usage: --api URL --host HOST --client NAME --how TEXT --out FILE');
  console.log(`${await saveFixture(a.api, a.host, a.client ?? '', a.how ?? '', a.out)} exchanges → ${a.out}`);
}
