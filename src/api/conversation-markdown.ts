// A Conversation as Markdown, for `greytap conversations --format markdown`: one section per turn,
// tool calls and results as fenced JSON, scaffolding folded away so the operator reads the prompts.
import type { Block, Conversation, Turn, Usage } from '../records.js';

const ROLE: Record<Turn['role'], string> = { user: 'User', assistant: 'Assistant', system: 'System', developer: 'Developer', tool: 'Tool' };

/** A fence longer than any backtick run inside, so content cannot close it. */
function fenced(body: string, lang = ''): string {
  // a loop, not Math.max(...runs): a tool output with ~150k runs overflowed the call stack
  let n = 3;
  for (const m of body.matchAll(/`+/g)) if (m[0].length >= n) n = m[0].length + 1;
  const f = '`'.repeat(n);
  return `${f}${lang}\n${body}\n${f}`;
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
        return `<details><summary>scaffolding: ${first.replace(/</g, '&lt;')}</summary>\n\n${fenced(b.text)}\n\n</details>`;
      }
      return b.text;
    case 'reasoning':
      return b.text.split('\n').map((l) => '> ' + l).join('\n');
    case 'tool_call': {
      const a = asText(b.arguments);
      return `**tool call** \`${b.name}\` (${b.callId})\n\n${fenced(a.text, a.lang)}`;
    }
    case 'tool_result': {
      const o = asText(b.output);
      return `**tool result**${b.name ? ` \`${b.name}\`` : ''} (${b.callId})${b.isError ? ' — error' : ''}\n\n${fenced(o.text, o.lang)}`;
    }
  }
}

export function conversationMarkdown(c: Conversation): string {
  const out: string[] = [];
  out.push(`# Conversation ${c.id}`, '');
  out.push(`- client: ${c.client}`, `- provider: ${c.provider}`);
  if (c.model) out.push(`- model: ${c.model}`);
  if (c.parent) out.push(`- a sub-agent, started by conversation ${c.parent}`);
  out.push(`- started: ${new Date(c.startedTs).toISOString()}`, `- updated: ${new Date(c.updatedTs).toISOString()}`);
  if (c.incomplete) out.push(`- incomplete: ${c.incomplete}`);
  out.push('');
  turns(out, c.turns, '##');
  for (const sub of c.subagents ?? []) {
    out.push(`## Sub-agent of tool call ${sub.callId}${sub.model ? ` (${sub.model})` : ''}`, '');
    turns(out, sub.turns, '###');
  }
  return out.join('\n');
}

function turns(out: string[], list: Turn[], heading: string): void {
  list.forEach((t, i) => {
    const flags = [t.model, t.incomplete ? `incomplete: ${t.incomplete}` : '', t.superseded ? 'superseded: a later history no longer carries it' : ''].filter(Boolean).join(', ');
    out.push(`${heading} ${i + 1}. ${ROLE[t.role] ?? t.role}${flags ? ` (${flags})` : ''}`, '');
    for (const b of t.blocks) out.push(block(b), '');
    if (t.error) out.push(`**error:** ${t.error}`, '');
    if (t.usage) out.push(`_usage: ${usageLine(t.usage)}_`, '');
    out.push(`<sub>source: ${t.source.join(', ')}</sub>`, '');
  });
}
