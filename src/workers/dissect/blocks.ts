// The shapes every dissector produces: a request's history as messages and a response as a reply,
// both already in Conversation block form (src/records.ts). Shared helpers live here so the five
// dissectors agree on scaffolding, tool-call arguments and how a message is recognised again when a
// later request sends it back as history.
import { createHash } from 'node:crypto';
import type { Block, HttpTransaction, Provider, Turn, Usage } from '../../records.js';

export type Role = Turn['role'];

/** One message of a request's history (consecutive messages of the same role are merged). */
export interface Msg { role: Role; blocks: Block[] }

/** What one response produced: the assistant turn before it is placed in a conversation. */
export interface Reply {
  blocks: Block[];
  usage?: Usage;
  responseId?: string;
  model?: string;
  /**
   * 'response.failed' | 'response.incomplete' | 'error' | 'aborted' | 'max_tokens' | 'refused' —
   * absent when complete (or still streaming)
   */
  incomplete?: string;
  error?: string;
  /** the stream is still open (a live view of a response in progress) */
  streaming?: boolean;
}

/**
 * A finish reason that means the reply was cut short or withheld, as `incomplete`: Anthropic's
 * stop_reason, Chat Completions' finish_reason and Gemini's finishReason name the same two things
 * differently. (A tool call cut at the token limit carries half its arguments.)
 */
export function stoppedShort(reason: unknown): string | undefined {
  switch (reason) {
    case 'max_tokens': case 'length': case 'MAX_TOKENS': return 'max_tokens';
    case 'refusal': case 'content_filter': case 'SAFETY': case 'PROHIBITED_CONTENT': case 'BLOCKLIST': return 'refused';
    default: return undefined;
  }
}

/**
 * JSON text, tolerating a leading BOM (RFC 8259 §8.1: a parser may ignore it; bodies keep theirs),
 * its values nested deeper than MAX_DEPTH kept as their JSON text (see capDepth).
 */
export function parseJson(s: string | undefined): unknown {
  if (s === undefined) return undefined;
  let v: unknown;
  try { v = JSON.parse(s.charCodeAt(0) === 0xfeff ? s.slice(1) : s); } catch { return undefined; }
  return capDepth(v);
}

/** Deeper than this a parsed value is text: legitimate tool arguments and results nest a few dozen levels at most. */
const MAX_DEPTH = 100;

/**
 * Captured values are kept in conversations, and the store (msgpack) and the API (JSON.stringify)
 * write them out recursively: a tool argument nested 10,000 levels deep (20 KB of brackets)
 * overflowed the stack there, and then every update of its conversation failed. JSON.parse itself
 * does not recurse, and neither does this walk.
 */
function capDepth(root: unknown): unknown {
  if (typeof root !== 'object' || root === null) return root;
  const stack: (Record<string, unknown> | unknown[])[] = [root as Record<string, unknown>];
  const depths: number[] = [1];
  const visit = (c: Record<string, unknown> | unknown[], k: string | number, v: unknown, d: number) => {
    if (typeof v !== 'object' || v === null) return;
    if (d < MAX_DEPTH) { stack.push(v as Record<string, unknown>); depths.push(d + 1); return; }
    // (an own "__proto__" key, as JSON.parse makes it, is not replaced by assigning to it)
    Object.defineProperty(c, k, { value: deepText(v), writable: true, enumerable: true, configurable: true });
  };
  while (stack.length) {
    const c = stack.pop()!;
    const d = depths.pop()!;
    if (Array.isArray(c)) for (let i = 0; i < c.length; i++) visit(c, i, c[i], d);
    else for (const k in c) visit(c, k, c[k], d);
  }
  return root;
}

/** Text already made, in deepText's work list. */
class Piece { constructor(readonly text: string) {} }

/** JSON.stringify without recursion (which the stack depth would cut short, at a depth that depends on the thread). */
function deepText(v: unknown): string {
  const out: string[] = [];
  const work: unknown[] = [v];
  while (work.length) {
    const x = work.pop();
    if (x instanceof Piece) out.push(x.text);
    else if (Array.isArray(x)) {
      out.push('[');
      work.push(new Piece(']'));
      for (let i = x.length - 1; i >= 0; i--) { work.push(x[i] ?? null); if (i) work.push(new Piece(',')); }
    } else if (typeof x === 'object' && x !== null) {
      out.push('{');
      work.push(new Piece('}'));
      const keys = Object.keys(x);
      for (let i = keys.length - 1; i >= 0; i--) {
        work.push((x as Record<string, unknown>)[keys[i]], new Piece(`${i ? ',' : ''}${JSON.stringify(keys[i])}:`));
      }
    } else out.push(JSON.stringify(x) ?? 'null');
  }
  return out.join('');
}

export function isObj(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
export const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * A stream's position of an item, part or call (output_index, content_index, Anthropic's block
 * index, a tool call's index) when it is one a stream could use, else undefined (read as absent).
 * The folds keep these in arrays by position: 4294967294 would make an array every later pass walks
 * in full (and the store writes out, for a WebSocket response), 0.5 a property none of them sees.
 */
export function streamIndex(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 10_000 ? v : undefined;
}

// Text the agent injects into the user/developer channel that the operator did not type: codex's
// environment/instructions wrappers, Claude Code's reminders and slash-command echoes, Gemini CLI's
// and Qwen Code's session context (date, OS, folder listing).
const SCAFFOLDING = [
  /^<environment_context>/, /^<session_context>/, /^<user_instructions>/, /^<system-reminder>/, /^# AGENTS\.md instructions/,
  /^<permissions instructions>/, /^<INSTRUCTIONS>/, /^<user_shell_command>/, /^<turn_aborted>/,
  /^<command-name>/, /^<command-message>/, /^<local-command-stdout>/, /^<local-command-stderr>/,
  /^Caveat: The messages below were generated by the user while running local commands/,
  /^This is the (?:Gemini CLI|Qwen Code)\. We are setting up the context for our chat\./,
];

export function isScaffolding(text: string): boolean {
  const t = text.trimStart();
  return SCAFFOLDING.some((re) => re.test(t));
}

/** A text block; user/developer text that is agent scaffolding is flagged so it is not shown as a prompt. */
export function textBlock(text: string, role: Role): Block {
  return (role === 'user' || role === 'developer') && isScaffolding(text) ? { type: 'text', text, scaffolding: true } : { type: 'text', text };
}

/** Tool-call arguments travel as a JSON string: keep the string, parse it when it parses. */
export function toolCall(callId: string, name: string, raw: unknown): Block {
  if (typeof raw === 'string') {
    const parsed = parseJson(raw);
    return { type: 'tool_call', callId, name, arguments: parsed === undefined ? raw : parsed, argumentsRaw: raw };
  }
  return { type: 'tool_call', callId, name, arguments: raw ?? {} };
}

/**
 * A tool's output as the wire gave it: a string, or content parts (Anthropic's tool_result, a Chat
 * Completions tool message). Parts that are all text collapse to their text; anything else (an
 * image, say) is kept as it came.
 */
export function toolOutput(c: unknown): unknown {
  if (Array.isArray(c) && c.every((x) => isObj(x) && x.type === 'text' && typeof x.text === 'string')) return c.map((x) => x.text).join('\n');
  return c;
}

/**
 * Appends items one at a time: push(...items) passes every item as an argument on the stack, and a
 * message of a few hundred thousand content parts overflowed it.
 */
export function append<T>(to: T[], items: readonly T[]): void {
  for (const x of items) to.push(x);
}

/** Appends a message, merging it into the previous one when the role repeats (codex sends several user items in a row). */
export function pushMsg(out: Msg[], role: Role, blocks: Block[]): void {
  if (blocks.length === 0) return;
  const last = out[out.length - 1];
  if (last && last.role === role) append(last.blocks, blocks);
  else out.push({ role, blocks: [...blocks] });
}

/**
 * A message of tool results is the 'tool' turn whatever role the wire used (Anthropic sends them as
 * user), also when the agent rides its own scaffolding along (Claude Code's reminders).
 */
export function roleFor(role: Role, blocks: Block[]): Role {
  const toolTurn = blocks.some((b) => b.type === 'tool_result') && blocks.every((b) => b.type === 'tool_result' || (b.type === 'text' && b.scaffolding));
  return toolTurn ? 'tool' : role;
}

const REMINDER_OPEN = '<system-reminder>';
const REMINDER_CLOSE = /^<system-reminder>[\s\S]*<\/system-reminder>\s*$/;

/**
 * Claude Code (2.1.332) appends its reminders to a tool's output ("hi\n\n<system-reminder>…"): the
 * output the tool gave, and the trailing reminders apart (in their order), so a conversation shows
 * the one as the result and the others as scaffolding. A reminder in the middle of an output stays.
 */
export function splitTrailingReminders(text: string): { output: string; reminders: string[] } {
  // Walked back by index: the rest of the output sliced, scanned and trimmed with /\n+$/ again for
  // every reminder was quadratic in the reminders, and that regex in a run of blank lines.
  const reminders: string[] = [];
  let end = text.length;
  for (;;) {
    const at = end < REMINDER_OPEN.length ? -1 : text.lastIndexOf(REMINDER_OPEN, end - REMINDER_OPEN.length);
    if (at < 0 || (at > 0 && text[at - 1] !== '\n') || !REMINDER_CLOSE.test(text.slice(at, end))) break;
    reminders.push(text.slice(at, end).trimEnd());
    end = at;
    while (end > 0 && text[end - 1] === '\n') end--;
  }
  return { output: end === text.length ? text : text.slice(0, end), reminders: reminders.reverse() };
}

/**
 * How a message is recognised when a later request sends it back as history: role, visible text and
 * tool-call ids. Reasoning is left out (providers drop or encrypt it in history) and so are argument
 * formatting differences.
 */
export function msgSig(role: Role, blocks: Block[]): string {
  return hash(msgKey(role, blocks));
}

/** What msgSig hashes: equal for the same messages, for comparisons that are never stored (an order of magnitude cheaper than the hash). */
export function msgKey(role: Role, blocks: Block[]): string {
  const parts: string[] = [role];
  for (const b of blocks) {
    if (b.type === 'text') parts.push('t:' + b.text.trim());
    else if (b.type === 'tool_call') parts.push('c:' + b.callId + ':' + b.name);
    else if (b.type === 'tool_result') parts.push('r:' + b.callId);
  }
  return parts.join('\u0000');
}

export function hash(s: string, len = 16): string {
  return createHash('sha256').update(s).digest('hex').slice(0, len);
}

export function addUsage(u: Usage): Usage | undefined {
  const out: Usage = {};
  for (const [k, v] of Object.entries(u)) if (typeof v === 'number') (out as any)[k] = v;
  return Object.keys(out).length ? out : undefined;
}

/** One HTTP request/response pair, dissected. */
export interface Exchange {
  provider: Provider;
  /** assembly key; '' when it must be resolved from previousResponseId */
  key: string;
  model?: string;
  /** the request's messages: the whole history, or only the new items after previousResponseId */
  history: Msg[];
  previousResponseId?: string;
  reply?: Reply;
  /** the assembly key of the conversation whose agent started this one (a codex sub-agent's parent thread) */
  parentKey?: string;
}

/**
 * Message-prefix growth (chat, gemini, anything without a session id): every request re-sends the
 * whole history, so the conversation is found by what never changes — the model and the first
 * system and first user message. Two sessions that open with the same words on the same model share
 * a key; the assembler keeps them apart only while one extends the other (see assemble-http.ts).
 */
export function prefixKey(provider: Provider, model: string | undefined, history: Msg[]): string {
  const sys = history.find((m) => m.role === 'system' || m.role === 'developer');
  const first = history.find((m) => m.role === 'user');
  return `${provider}:prefix:${hash([model ?? '', sys ? msgSig(sys.role, sys.blocks) : '', first ? msgSig(first.role, first.blocks) : ''].join('|'))}`;
}

/** A response that is an HTTP error or never came: a reply marked 'error' / 'aborted'. */
export function errorReply(tx: HttpTransaction): Reply | undefined {
  if (tx.status === undefined) return { blocks: [], incomplete: 'aborted', ...(tx.error ? { error: tx.error } : {}) };
  if (tx.status >= 400) {
    const body = parseJson(tx.respBody);
    const msg = isObj(body) ? (str(body.error?.message) ?? str(body.message) ?? str(body.error)) : tx.respBody?.slice(0, 500);
    return { blocks: [], incomplete: 'error', error: `HTTP ${tx.status}${msg ? ': ' + msg : ''}` };
  }
  return undefined;
}

/** The transaction ended abnormally (connection cut, capture truncated). */
export function wasCut(tx: HttpTransaction): boolean {
  return tx.error !== undefined || tx.truncated;
}
