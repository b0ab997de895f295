// A fake model server for running REAL coding agents (codex, Claude Code) through greytap, offline:
// HTTPS for api.openai.com and api.anthropic.com (greytap routes them here with --map and trusts
// the certificate with --upstream-ca). It answers the OpenAI Responses API (POST /v1/responses as
// SSE, and the WebSocket mode on the same path, permessage-deflate) and the Anthropic Messages API
// (POST /v1/messages as SSE, or JSON when stream is false), event by event as the real servers do.
// The Responses API is also served on chatgpt.com's /backend-api/codex/responses, where codex signed
// in with ChatGPT sends its turns (zstd-coded request bodies).
//
// The "model" is a fixed two-step script, decided from the request alone so that any number of
// side requests work: while the conversation holds no tool result, it asks to run `echo hi` with
// whichever shell tool the client offers; once it sees the result, it answers in text. Requests
// that offer no shell tool (titles, summaries) get a short text answer.
//
// Every request and what was answered is appended to <dir>/origin.jsonl (bench/agents.sh prints it).
//
//   node dist/bench/agent-origin.js --dir DIR     → prints `port N` and writes DIR/upstream-ca.pem
import https from 'node:https';
import type net from 'node:net';
import { appendFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { decompress } from 'fzstd';
import { loadOrCreateCA } from '../src/io/tls-intercept.js';
import { splitTrailingReminders, toolOutput } from '../src/workers/dissect/blocks.js';

/** the names greytap routes here, and 127.0.0.1 for clients run without the proxy */
export const ORIGIN_HOSTS = ['api.openai.com', 'api.anthropic.com', 'chatgpt.com', 'generativelanguage.googleapis.com', '127.0.0.1'];
export const TOOL_COMMAND = 'echo hi';
/** the Responses API with an API key, and the ChatGPT backend codex uses when signed in with ChatGPT */
const RESPONSES_PATHS = new Set(['/v1/responses', '/backend-api/codex/responses']);
export const NO_WS_ACCOUNT_SUFFIX = '_http';

type Sse = { event?: string; data: unknown }[];

// ── the script ───────────────────────────────────────────────────────────────────────────────

/** A Responses tool call for `echo hi` in the shape of the shell tool the request offers, if any. */
function responsesShellCall(tools: unknown): { name: string; arguments: string } | undefined {
  const names = new Set((Array.isArray(tools) ? tools : []).map((t: any) => t?.name).filter(Boolean));
  if (names.has('exec_command')) return { name: 'exec_command', arguments: JSON.stringify({ cmd: TOOL_COMMAND }) };
  if (names.has('shell_command')) return { name: 'shell_command', arguments: JSON.stringify({ command: TOOL_COMMAND }) };
  if (names.has('shell')) return { name: 'shell', arguments: JSON.stringify({ command: ['bash', '-lc', TOOL_COMMAND] }) };
  return undefined;
}

/**
 * codex's own sub-agents (the multi_agent_v1 tools): a prompt that asks for a subagent gets
 * spawn_agent with the task, then wait_agent on the id it returned, then the answer.
 */
function responsesAgentCall(body: any): { name: string; arguments: string; namespace: string } | undefined {
  const ns = (Array.isArray(body?.tools) ? body.tools : []).find((t: any) => t?.type === 'namespace' && t?.name === 'multi_agent_v1');
  if (!ns) return undefined;
  const input: any[] = Array.isArray(body?.input) ? body.input : [];
  const typed = input.filter((i) => i?.type === 'message' && i.role === 'user').flatMap((i) => (Array.isArray(i.content) ? i.content : [])).map((c: any) => String(c?.text ?? ''));
  const outputs = input.filter((i) => i?.type === 'function_call_output').map((i) => String(i.output ?? ''));
  // (over a WebSocket a request carries only what is new: the spawn's output, then the wait's)
  const spawned = /"agent_id"\s*:\s*"([^"]+)"/.exec(outputs[outputs.length - 1] ?? '')?.[1];
  if (spawned) return { namespace: 'multi_agent_v1', name: 'wait_agent', arguments: JSON.stringify({ targets: [spawned], timeout_ms: 60000 }) };
  if (outputs.length === 0 && asksForSubagent(typed)) {
    return { namespace: 'multi_agent_v1', name: 'spawn_agent', arguments: JSON.stringify({ message: `Run ${TOOL_COMMAND} and tell me what it printed` }) };
  }
  return undefined;
}

/** The user (not the agent's scaffolding) asked for a sub-agent. */
const asksForSubagent = (texts: string[]) => texts.some((t) => /subagent/i.test(t) && !t.trimStart().startsWith('<'));

function responsesToolOutput(input: unknown): string | undefined {
  if (!Array.isArray(input)) return undefined;
  const out = input.filter((i: any) => typeof i?.type === 'string' && i.type.endsWith('_call_output')).pop(); // the latest
  if (!out) return undefined;
  return typeof out.output === 'string' ? out.output : JSON.stringify(out.output);
}

/** The model's last word: what the tool printed (its end, where a hand-back's report is), or a greeting. */
const answer = (output: string | undefined) => (output === undefined ? 'Hello from the fake model.' : `The command printed: ${output.trim().slice(-200)}`);

let seq = 0;
const nextId = () => `${Date.now().toString(36)}${(seq++).toString(36)}`;

/** The Responses API events for one request body. */
export function responsesEvents(body: any): Record<string, unknown>[] {
  const n = nextId();
  const model = typeof body?.model === 'string' ? body.model : 'gpt-5-codex';
  const agent = responsesAgentCall(body);
  const result = agent ? undefined : responsesToolOutput(body?.input);
  const call = agent ?? (result === undefined ? responsesShellCall(body?.tools) : undefined);
  const usage = { input_tokens: 120, input_tokens_details: { cached_tokens: 0 }, output_tokens: 12, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 132 };
  const resp = (status: string, output: unknown[] = [], u: unknown = null) => ({ id: `resp_${n}`, object: 'response', created_at: Math.floor(Date.now() / 1000), status, model, output, usage: u });
  const evs: Record<string, unknown>[] = [
    { type: 'response.created', response: resp('in_progress') },
    { type: 'response.in_progress', response: resp('in_progress') },
  ];
  let item: Record<string, unknown>;
  if (call) {
    item = { id: `fc_${n}`, type: 'function_call', status: 'completed', arguments: call.arguments, call_id: `call_${n}`, name: call.name, ...('namespace' in call ? { namespace: call.namespace } : {}) };
    evs.push({ type: 'response.output_item.added', output_index: 0, item: { ...item, status: 'in_progress', arguments: '' } });
    const half = Math.floor(call.arguments.length / 2);
    for (const delta of [call.arguments.slice(0, half), call.arguments.slice(half)]) evs.push({ type: 'response.function_call_arguments.delta', item_id: item.id, output_index: 0, delta });
    evs.push({ type: 'response.function_call_arguments.done', item_id: item.id, output_index: 0, arguments: call.arguments });
  } else {
    const text = answer(result);
    const part = { type: 'output_text', annotations: [], logprobs: [], text };
    item = { id: `msg_${n}`, type: 'message', status: 'completed', role: 'assistant', content: [part] };
    evs.push({ type: 'response.output_item.added', output_index: 0, item: { ...item, status: 'in_progress', content: [] } });
    evs.push({ type: 'response.content_part.added', item_id: item.id, output_index: 0, content_index: 0, part: { ...part, text: '' } });
    for (const delta of text.match(/.{1,8}/gs) ?? []) evs.push({ type: 'response.output_text.delta', item_id: item.id, output_index: 0, content_index: 0, delta, logprobs: [] });
    evs.push({ type: 'response.output_text.done', item_id: item.id, output_index: 0, content_index: 0, text, logprobs: [] });
    evs.push({ type: 'response.content_part.done', item_id: item.id, output_index: 0, content_index: 0, part });
  }
  evs.push({ type: 'response.output_item.done', output_index: 0, item });
  evs.push({ type: 'response.completed', response: resp('completed', [item], usage) });
  return evs.map((e, i) => ({ ...e, sequence_number: i }));
}

/** codex pre-warms a socket with `generate: false`: the server answers with a response that has no output. */
function prewarmEvents(body: any): Record<string, unknown>[] {
  const id = `resp_${nextId()}`;
  const resp = (status: string) => ({ id, object: 'response', created_at: Math.floor(Date.now() / 1000), status, model: body?.model, output: [], usage: null });
  return [{ type: 'response.created', response: resp('in_progress') }, { type: 'response.completed', response: resp('completed') }].map((e, i) => ({ ...e, sequence_number: i }));
}

/** The Anthropic Messages events for one request body (the first is message_start). */
export function anthropicEvents(body: any): Record<string, unknown>[] {
  const n = nextId();
  const model = typeof body?.model === 'string' ? body.model : 'claude-sonnet-4-5';
  const msgs: any[] = Array.isArray(body?.messages) ? body.messages : [];
  const results = msgs.flatMap((m) => (Array.isArray(m?.content) ? m.content : [])).filter((b: any) => b?.type === 'tool_result');
  // the latest (Claude Code's sub-agents send a system message after it)
  const result = results[results.length - 1];
  // Claude Code's tool is Bash, opencode's bash. A prompt that asks for a subagent gets Claude
  // Code's Agent tool instead, with the same task: the subagent then asks for Bash.
  const tools: any[] = Array.isArray(body?.tools) ? body.tools : [];
  const typed = msgs.flatMap((m) => (m?.role !== 'user' ? [] : typeof m.content === 'string' ? [m.content] : (Array.isArray(m.content) ? m.content : []).map((b: any) => (b?.type === 'text' ? String(b.text) : ''))));
  const agent = asksForSubagent(typed) ? tools.find((t) => t?.name === 'Agent') : undefined;
  const bash = agent ?? tools.find((t: any) => /^bash$/i.test(t?.name));
  const usage = { input_tokens: 120, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 };
  const evs: Record<string, unknown>[] = [
    { type: 'message_start', message: { id: `msg_${n}`, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage } },
  ];
  let stop: string;
  // The sub-agent (asked for on haiku) runs the command three times, so that its line grows longer
  // than its parent's: the case that once hid the parent's line.
  if (bash && (results.length === 0 || (/haiku/.test(model) && results.length < 3))) {
    const input = JSON.stringify(agent
      ? { description: 'Run echo hi', prompt: `Run ${TOOL_COMMAND} and tell me what it printed`, subagent_type: 'general-purpose', run_in_background: false, model: 'haiku' }
      : { command: TOOL_COMMAND, description: 'Print hi' });
    evs.push({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    evs.push({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'I will run it.' } });
    evs.push({ type: 'content_block_stop', index: 0 });
    evs.push({ type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: `toolu_${n}`, name: bash.name, input: {} } });
    const half = Math.floor(input.length / 2);
    for (const partial_json of [input.slice(0, half), input.slice(half)]) evs.push({ type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json } });
    evs.push({ type: 'content_block_stop', index: 1 });
    stop = 'tool_use';
  } else {
    // the tool's own output: a model reads past the reminders Claude Code appends to it
    const out = toolOutput(result?.content);
    const r = result ? (typeof out === 'string' ? splitTrailingReminders(out).output : JSON.stringify(out)) : undefined;
    const text = answer(r);
    evs.push({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    for (const t of text.match(/.{1,8}/gs) ?? []) evs.push({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } });
    evs.push({ type: 'content_block_stop', index: 0 });
    stop = 'end_turn';
  }
  evs.push({ type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: 14 } });
  evs.push({ type: 'message_stop' });
  return evs;
}

/** The non-streamed Anthropic Message the same events describe. */
function anthropicMessage(evs: Record<string, any>[]): Record<string, unknown> {
  const msg = { ...evs[0].message, content: [] as any[] };
  const json: string[] = [];
  for (const e of evs) {
    if (e.type === 'content_block_start') { msg.content[e.index] = { ...e.content_block }; json[e.index] = ''; }
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') msg.content[e.index].text += e.delta.text;
    if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') json[e.index] += e.delta.partial_json;
    if (e.type === 'content_block_stop' && msg.content[e.index].type === 'tool_use') msg.content[e.index].input = JSON.parse(json[e.index] || '{}');
    if (e.type === 'message_delta') { msg.stop_reason = e.delta.stop_reason; msg.usage = { ...msg.usage, ...e.usage }; }
  }
  return msg;
}

/**
 * The Chat Completions chunks for one request body (stream: true), the shell tool being whichever of
 * the request's functions takes a command. A request that wants JSON back (response_format) gets the
 * same one-object answer as Gemini's side questions.
 */
export function chatChunks(body: any): Record<string, unknown>[] {
  const n = nextId();
  const model = typeof body?.model === 'string' ? body.model : 'gpt-4o';
  const msgs: any[] = Array.isArray(body?.messages) ? body.messages : [];
  const result = msgs.find((m) => m?.role === 'tool');
  const shell = (Array.isArray(body?.tools) ? body.tools : []).map((t: any) => t?.function).find((f: any) => /shell|bash|exec/i.test(f?.name ?? ''));
  const chunk = (delta: unknown, finish_reason: string | null = null) => ({ id: `chatcmpl-${n}`, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model, choices: [{ index: 0, delta, finish_reason }] });
  const usage = { id: `chatcmpl-${n}`, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model, choices: [], usage: { prompt_tokens: 120, completion_tokens: 12, total_tokens: 132 } };
  if (body?.response_format?.type?.startsWith?.('json')) {
    return [chunk({ role: 'assistant', content: JSON.stringify(SIDE_ANSWER) }), chunk({}, 'stop'), usage];
  }
  if (shell && !result) {
    const args = JSON.stringify({ command: TOOL_COMMAND });
    const half = Math.floor(args.length / 2);
    return [
      chunk({ role: 'assistant', content: 'I will run it.' }),
      chunk({ tool_calls: [{ index: 0, id: `call_${n}`, type: 'function', function: { name: shell.name, arguments: args.slice(0, half) } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: args.slice(half) } }] }),
      chunk({}, 'tool_calls'), usage,
    ];
  }
  const out = result === undefined ? undefined : toolOutput(result.content);
  const text = answer(out === undefined || typeof out === 'string' ? out : JSON.stringify(out));
  return [chunk({ role: 'assistant', content: '' }), ...(text.match(/.{1,8}/gs) ?? []).map((t) => chunk({ content: t })), chunk({}, 'stop'), usage];
}

/** Gemini CLI's and Qwen Code's side questions (which model, who speaks next), answered at once. */
const SIDE_ANSWER = { reasoning: 'the fake model routes everything to one model and hands the turn back', model_choice: 'flash', next_speaker: 'user' };

/**
 * The Gemini API's chunks (generateContent / streamGenerateContent) for one request body. Gemini CLI
 * also asks side questions with a JSON response schema (which model to route to, who speaks next):
 * those get one JSON object that answers both ("the user speaks next").
 */
export function geminiChunks(body: any): Record<string, unknown>[] {
  const n = nextId();
  const contents: any[] = Array.isArray(body?.contents) ? body.contents : [];
  const parts = (c: any): any[] => (Array.isArray(c?.parts) ? c.parts : []);
  const response = contents.flatMap(parts).find((p) => p?.functionResponse)?.functionResponse;
  const shell = (Array.isArray(body?.tools) ? body.tools : []).flatMap((t: any) => t?.functionDeclarations ?? []).find((f: any) => f?.name === 'run_shell_command');
  const usageMetadata = { promptTokenCount: 120, candidatesTokenCount: 12, totalTokenCount: 132 };
  const chunk = (ps: unknown[], finishReason?: string) => ({ candidates: [{ content: { role: 'model', parts: ps }, index: 0, ...(finishReason ? { finishReason } : {}) }], usageMetadata, modelVersion: 'gemini-2.5-pro', responseId: `gem_${n}` });
  if (body?.generationConfig?.responseMimeType === 'application/json') {
    return [chunk([{ text: JSON.stringify(SIDE_ANSWER) }], 'STOP')];
  }
  if (shell && !response) return [chunk([{ text: 'I will run it.' }]), chunk([{ functionCall: { name: 'run_shell_command', args: { command: TOOL_COMMAND } } }], 'STOP')];
  const out = response?.response?.output ?? response?.response;
  const text = answer(out === undefined || typeof out === 'string' ? out : JSON.stringify(out));
  return [...(text.match(/.{1,8}/gs) ?? [])].map((t, i, all) => chunk([{ text: t }], i === all.length - 1 ? 'STOP' : undefined));
}

// ── the server ───────────────────────────────────────────────────────────────────────────────

export async function startAgentOrigin(dir: string): Promise<{ port: number; caPath: string; close(): Promise<void> }> {
  mkdirSync(dir, { recursive: true });
  const ca = loadOrCreateCA(join(dir, 'origin-ca'), { commonName: 'greytap agents bench origin CA', cacheSize: 4 });
  const caPath = join(dir, 'upstream-ca.pem');
  copyFileSync(ca.caCertPath, caPath);
  const logPath = join(dir, 'origin.jsonl');
  const log = (o: Record<string, unknown>) => appendFileSync(logPath, JSON.stringify({ t: new Date().toISOString(), ...o }) + '\n');

  const server = https.createServer(ca.issueLeaf(ORIGIN_HOSTS), async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    // codex signed in with ChatGPT zstd-codes its request bodies (what greytap must undo too)
    const coded = Buffer.concat(chunks);
    const raw = (req.headers['content-encoding'] === 'zstd' ? Buffer.from(decompress(coded)) : coded).toString('utf8');
    let body: any;
    try { body = JSON.parse(raw); } catch { body = undefined; }
    const path = (req.url ?? '/').split('?')[0];
    const entry: Record<string, unknown> = { method: req.method, host: req.headers.host, url: req.url, headers: req.headers, body: body ?? raw };
    const sse = (events: Sse) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-request-id': `req_${nextId()}` });
      for (const e of events) res.write(`${e.event ? `event: ${e.event}\n` : ''}data: ${typeof e.data === 'string' ? e.data : JSON.stringify(e.data)}\n\n`); // a string as it is ([DONE])
      res.end();
    };
    if (req.method === 'POST' && RESPONSES_PATHS.has(path)) {
      const evs = responsesEvents(body);
      log({ ...entry, answered: evs });
      return sse(evs.map((data) => ({ event: String(data.type), data })));
    }
    if (req.method === 'POST' && path === '/v1/chat/completions') {
      const chunks = chatChunks(body);
      log({ ...entry, answered: chunks });
      if (body?.stream) return sse([...chunks.map((data) => ({ data })), { data: '[DONE]' }]);
      const text = chunks.map((c: any) => c.choices[0]?.delta?.content ?? '').join('');
      const calls = chunks.flatMap((c: any) => c.choices[0]?.delta?.tool_calls ?? []);
      const message = { role: 'assistant', content: text || null, ...(calls.length ? { tool_calls: [{ ...calls[0], function: { name: calls[0].function.name, arguments: calls.map((c: any) => c.function.arguments).join('') } }] } : {}) };
      const whole = JSON.stringify({ id: (chunks[0] as any).id, object: 'chat.completion', created: (chunks[0] as any).created, model: (chunks[0] as any).model, choices: [{ index: 0, message, finish_reason: calls.length ? 'tool_calls' : 'stop' }], usage: (chunks[chunks.length - 1] as any).usage });
      return void res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(whole) }).end(whole);
    }
    if (req.method === 'POST' && path === '/v1/messages') {
      const evs = anthropicEvents(body);
      log({ ...entry, answered: evs });
      if (body?.stream) return sse(evs.map((data) => ({ event: String(data.type), data })));
      const text = JSON.stringify(anthropicMessage(evs));
      return void res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    }
    const gemini = /^\/v1(?:beta)?\/models\/[^/:]+:(streamGenerateContent|generateContent|countTokens)$/.exec(path);
    if (req.method === 'POST' && gemini) {
      if (gemini[1] === 'countTokens') {
        log({ ...entry, answered: 200 });
        return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"totalTokens":120}');
      }
      const chunks = geminiChunks(body);
      log({ ...entry, answered: chunks });
      if (gemini[1] === 'streamGenerateContent') return sse(chunks.map((data) => ({ data })));
      const last = chunks[chunks.length - 1] as any;
      const whole = { ...last, candidates: [{ ...last.candidates[0], content: { role: 'model', parts: chunks.flatMap((c: any) => c.candidates[0].content.parts) } }] };
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(whole));
    }
    if (req.method === 'GET' && path === '/backend-api/wham/accounts/check') {
      // codex (ChatGPT sign-in) asks which backend serves the account before its first turn
      const id = String(req.headers['chatgpt-account-id'] ?? 'acct_greytap_agents');
      const text = JSON.stringify({ accounts: [{ id, structure: 'personal', workspace_backend_origin: 'NO_CONSTRAINT', account_routing_override: 'NO_CONSTRAINT' }], account_ordering: [id], default_account_id: id });
      log({ ...entry, answered: 200 });
      return void res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    }
    log({ ...entry, answered: 404 });
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"type":"not_found_error","message":"not found"}}');
  });

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: { threshold: 0 }, maxPayload: 64 << 20 });
  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '/').split('?')[0];
    log({ method: 'GET', upgrade: 'websocket', host: req.headers.host, url: req.url, headers: req.headers });
    if (!RESPONSES_PATHS.has(path)) return socket.destroy();
    // An account named *_http is refused WebSocket (as behind a network that drops upgrades): codex
    // then falls back to HTTP + SSE at once, zstd-coding its request bodies.
    if (String(req.headers['chatgpt-account-id'] ?? '').endsWith(NO_WS_ACCOUNT_SUFFIX)) {
      return void socket.end('HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n');
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      let chain = Promise.resolve();
      ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        const body = JSON.parse(data.toString());
        chain = chain.then(async () => {
          const evs = body.generate === false ? prewarmEvents(body) : responsesEvents(body);
          log({ ws: true, url: req.url, body, answered: evs });
          for (const e of evs) await new Promise<void>((r) => ws.send(JSON.stringify(e), () => r()));
        }).catch(() => {});
      });
      ws.on('error', () => {});
    });
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  return { port, caPath, close: () => new Promise<void>((r) => { for (const c of wss.clients) c.terminate(); server.closeAllConnections(); server.close(() => r()); }) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--dir');
  const dir = i > 0 ? process.argv[i + 1] : '/tmp/agents-origin';
  const o = await startAgentOrigin(dir);
  console.log(`port ${o.port}`);
  console.log(`upstream-ca ${o.caPath}`);
}
