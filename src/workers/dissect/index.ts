// Which API a captured exchange speaks, and which agent sent it. A built-in endpoint table
// (path + method), rules that win over it (loadDissectRules reads them from the JSON file of
// --dissect-rules: serve hands them to the capture workers, `conversations --rebuild` to its
// assembly), and a fallback that recognises a chat-completions body on any host.
import { readFileSync } from 'node:fs';
import { ConfigError, globMatch } from '../../config.js';
import type { ClientName, Header, HttpTransaction, Provider } from '../../records.js';
import { isObj, parseJson, type Exchange } from './blocks.js';
import { dissectAnthropic } from './anthropic.js';
import { dissectChat } from './openai-chat.js';
import { dissectGemini } from './gemini.js';
import { dissectResponsesHttp } from './openai-responses.js';

export interface DissectRule {
  host: string; // glob, e.g. "*.openai.azure.com"
  /** a path prefix, or a regular expression when it starts with '^' */
  path?: string;
  provider: Provider;
}

/** A bad --dissect-rules file: a ConfigError, so the CLI prints its one line and exits 2. */
export class DissectRulesError extends ConfigError {}

const PROVIDERS: Provider[] = ['openai-responses', 'openai-ws', 'openai-chat', 'anthropic', 'gemini'];

/** Reads `{ "rules": [{ "host", "path", "provider" }] }`; throws DissectRulesError with a one-line reason naming the option and file. */
export function loadDissectRules(path: string): DissectRule[] {
  const fail = (why: string) => new DissectRulesError(`--dissect-rules ${path}: ${why}`);
  let j: unknown;
  try { j = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw fail((e as Error).message); }
  const rules = isObj(j) ? j.rules : undefined;
  if (!Array.isArray(rules)) throw fail('expected {"rules": [...]}');
  return rules.map((r, i) => {
    if (!isObj(r) || typeof r.host !== 'string' || !PROVIDERS.includes(r.provider) || (r.path !== undefined && typeof r.path !== 'string')) {
      throw fail(`rule ${i}: expected {"host": glob, "path"?: prefix or ^regex, "provider": one of ${PROVIDERS.join('|')}}`);
    }
    if (r.path?.startsWith('^')) {
      try { new RegExp(r.path); } catch (e) { throw fail(`rule ${i}: ${(e as Error).message}`); }
    }
    return { host: r.host, path: r.path, provider: r.provider };
  });
}

function ruleMatches(r: DissectRule, host: string, path: string): boolean {
  if (!globMatch(r.host, host)) return false;
  if (r.path === undefined) return true;
  return r.path.startsWith('^') ? new RegExp(r.path).test(path) : path.startsWith(r.path);
}

/** The built-in endpoint table. `path` without the query string. */
export function builtinProvider(method: string, path: string): Provider | undefined {
  if (/:(stream)?generateContent$/i.test(path)) return 'gemini';
  if (method !== 'POST') return undefined;
  if (/\/chat\/completions$/.test(path)) return 'openai-chat';
  if (/(^|\/)v1\/messages$/.test(path)) return 'anthropic';
  if (/(^|\/)responses$/.test(path)) return 'openai-responses';
  return undefined;
}

/** The provider of an HTTP exchange, or undefined when it is not an LLM API call. */
export function classifyHttp(tx: Pick<HttpTransaction, 'method' | 'host' | 'path'>, body: unknown, rules: DissectRule[] = []): Provider | undefined {
  const path = tx.path.split('?')[0];
  for (const r of rules) if (ruleMatches(r, tx.host, tx.path) || ruleMatches(r, tx.host, path)) return r.provider;
  const p = builtinProvider(tx.method.toUpperCase(), path);
  if (p) return p;
  if (tx.method.toUpperCase() === 'POST' && isObj(body) && Array.isArray(body.messages) && typeof body.model === 'string') return 'openai-chat';
  return undefined;
}

/** A WebSocket connection speaks the Responses API when its path says so or its client sends response.create. */
export function isOpenaiWsPath(path: string, rules: DissectRule[] = [], host = ''): boolean {
  for (const r of rules) if (ruleMatches(r, host, path)) return r.provider === 'openai-ws' || r.provider === 'openai-responses';
  return /(^|\/)responses$/.test(path.split('?')[0]);
}

/** HTTP exchange → dissected request/reply, or undefined (not an LLM call, or a body that is not JSON). */
export function dissectHttp(tx: HttpTransaction, rules: DissectRule[] = []): { exchange?: Exchange; bad?: boolean } {
  const body = parseJson(tx.reqBody);
  const provider = classifyHttp(tx, body, rules);
  if (!provider) return {};
  if (!isObj(body)) return { bad: true };
  switch (provider) {
    case 'anthropic': return { exchange: dissectAnthropic(tx, body) };
    case 'gemini': return { exchange: dissectGemini(tx, body) };
    case 'openai-responses': case 'openai-ws': return { exchange: dissectResponsesHttp(tx, body) };
    default: return { exchange: dissectChat(tx, body) };
  }
}

function header(h: Header[] | undefined, name: string): string | undefined {
  const n = name.toLowerCase();
  return h?.find(([k]) => k.toLowerCase() === n)?.[1];
}

/** Which agent sent a request, from its headers. */
export function detectClient(h: Header[] | undefined): ClientName {
  const ua = (header(h, 'user-agent') ?? '').toLowerCase();
  const originator = (header(h, 'originator') ?? '').toLowerCase();
  if (originator.startsWith('codex') || ua.startsWith('codex') || header(h, 'x-codex-turn-metadata') !== undefined) return 'codex';
  if (ua.startsWith('claude-cli/') || ua.includes('claude-code')) return 'claude-code';
  if (ua.includes('geminicli') || ua.includes('gemini-cli')) return 'gemini-cli';
  if (ua.startsWith('qwencode/')) return 'qwen-code'; // a Gemini CLI fork that speaks Chat Completions
  if (ua.includes('opencode')) return 'opencode';
  // aider speaks through litellm/openai-python; it names itself in OpenRouter's attribution headers
  if (ua.includes('aider') || /aider/i.test(header(h, 'x-title') ?? '') || /aider\.chat/i.test(header(h, 'http-referer') ?? '')) return 'aider';
  return 'generic';
}
