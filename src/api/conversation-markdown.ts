// A Conversation as Markdown, for `greytap conversations --format markdown`: one section per turn,
// tool calls and results as fenced JSON, scaffolding folded away so the operator reads the prompts.
import type { Block, Conversation, Turn, Usage } from '../records.js';

const ROLE: Record<Turn['role'], string> = { user: 'User', assistant: 'Assistant', system: 'System', developer: 'Developer', tool: 'Tool' };

/** A backtick run of at least `min`, longer than any inside `s`, so `s` cannot close it. */
function delimiter(s: string, min: number): string {
  // a loop, not Math.max(...runs): a tool output with ~150k runs overflowed the call stack
  let n = min;
  for (const m of s.matchAll(/`+/g)) if (m[0].length >= n) n = m[0].length + 1;
  return '`'.repeat(n);
}

/** A fenced block its content cannot close. */
function fenced(body: string, lang = ''): string {
  const f = delimiter(body, 3);
  return `${f}${lang}\n${body}\n${f}`;
}

/**
 * Inline code a name cannot end (CommonMark: a tool name with backticks broke out into raw HTML).
 * Line breaks become spaces, as a code span renders them anyway: a blank line would end the paragraph, span and all.
 */
function code(name: string): string {
  const s = name.replace(/\r\n|\r|\n/g, ' ');
  const f = delimiter(s, 1);
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return `${f}${pad}${s}${pad}${f}`;
}

/** A captured value in running text (a model name, an error): no raw HTML. */
const inline = (s: string) => s.replace(/</g, '&lt;');

/**
 * Control characters but tab and newline, as visible escapes: the markdown goes to a terminal
 * first, and captured text (a tool's output, a model's reply) may carry escape sequences that set
 * the window title, write the clipboard or clear the screen. A CR of a CRLF is dropped.
 */
function visibleControls(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function asText(v: unknown): { text: string; lang: string } {
  if (typeof v === 'string') return { text: v, lang: '' };
  return { text: JSON.stringify(v, null, 2) ?? String(v), lang: 'json' };
}

function usageLine(u: Usage): string {
  const parts: string[] = [];
  if (u.inputTokens !== undefined) parts.push(`input ${u.inputTokens}` + (u.cachedTokens !== undefined ? ` (cached ${u.cachedTokens})` : ''));
  if (u.outputTokens !== undefined) parts.push(`output ${u.outputTokens}` + (u.reasoningTokens !== undefined ? ` (reasoning ${u.reasoningTokens})` : ''));
  if (u.totalTokens !== undefined) parts.push(`total ${u.totalTokens}`);
  return parts.join(', ');
}

function block(b: Block): string {
  switch (b.type) {
    case 'text':
      if (b.scaffolding) {
        const first = b.text.trimStart().split('\n')[0].slice(0, 80);
        return `<details><summary>scaffolding: ${inline(first)}</summary>\n\n${fenced(b.text)}\n\n</details>`;
      }
      return b.text;
    case 'reasoning':
      return b.text.split('\n').map((l) => '> ' + l).join('\n');
    case 'tool_call': {
      const a = asText(b.arguments);
      return `**tool call** ${code(b.name)} (${inline(b.callId)})\n\n${fenced(a.text, a.lang)}`;
    }
    case 'tool_result': {
      const o = asText(b.output);
      return `**tool result**${b.name ? ` ${code(b.name)}` : ''} (${inline(b.callId)})${b.isError ? ' — error' : ''}\n\n${fenced(o.text, o.lang)}`;
    }
  }
}

export function conversationMarkdown(c: Conversation): string {
  const out: string[] = [];
  out.push(`# Conversation ${c.id}`, '');
  out.push(`- client: ${inline(c.client)}`, `- provider: ${inline(c.provider)}`);
  if (c.model) out.push(`- model: ${inline(c.model)}`);
  if (c.parent) out.push(`- a sub-agent, started by conversation ${c.parent}`);
  out.push(`- started: ${new Date(c.startedTs).toISOString()}`, `- updated: ${new Date(c.updatedTs).toISOString()}`);
  if (c.incomplete) out.push(`- incomplete: ${inline(c.incomplete)}`);
  out.push('');
  turns(out, c.turns, '##');
  for (const sub of c.subagents ?? []) {
    out.push(`## Sub-agent of tool call ${inline(sub.callId)}${sub.model ? ` (${inline(sub.model)})` : ''}`, '');
    turns(out, sub.turns, '###');
  }
  return visibleControls(out.join('\n'));
}

function turns(out: string[], list: Turn[], heading: string): void {
  list.forEach((t, i) => {
    const flags = inline([t.model, t.incomplete ? `incomplete: ${t.incomplete}` : '', t.superseded ? 'superseded: a later history no longer carries it' : ''].filter(Boolean).join(', '));
    out.push(`${heading} ${i + 1}. ${ROLE[t.role] ?? t.role}${flags ? ` (${flags})` : ''}`, '');
    for (const b of t.blocks) out.push(block(b), '');
    if (t.error) out.push(`**error:** ${inline(t.error)}`, '');
    if (t.usage) out.push(`_usage: ${usageLine(t.usage)}_`, '');
    out.push(`<sub>source: ${t.source.join(', ')}</sub>`, '');
  });
}
