// A fake `wss://api.openai.test/v1/responses` that speaks codex's Responses API over WebSocket the
// way the real server does: one JSON event per message, `sequence_number` per response, items
// announced, streamed as deltas, closed with `.done`, and `response.completed` carrying the full
// `output[]` and `usage`. permessage-deflate with context takeover (the `ws` default), threshold 0
// so every message is compressed. Replies are scripted by the test per prompt_cache_key.
//
// Also the codex-like client: a `ws` client through greytap's CONNECT tunnel with codex's headers,
// sending `response.create` and folding the events it gets back, as codex does.
import https from 'node:https';
import tls from 'node:tls';
import type net from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import type { TestPki } from '../helpers/test-ca.js';
import { connectTunnel, type Greytap } from '../helpers/harness.js';

export interface CodexUsage { input: number; cached: number; output: number; reasoning: number }

/** One scripted response. Items are emitted in this order: reasoning, message text, function call. */
export interface CodexReply {
  id: string;
  model?: string;
  reasoning?: string[]; // summary text deltas (one summary part)
  text?: string[]; // output_text deltas
  call?: { callId: string; name: string; args: string[] }; // function_call_arguments deltas
  usage: CodexUsage;
  /** awaited after the last output_text delta, before `.done` (a live view of a response in progress) */
  hold?: Promise<void>;
  /** stop after the last output_text delta and never complete (the client is expected to give up) */
  cut?: boolean;
  /** awaited before each event: lets two sockets stream in a fixed interleaving */
  gate?: (send: () => void) => Promise<void>;
}

/** The reply to the n-th `response.create` of a connection (pre-warms excluded), or undefined for an `error` event. */
export type CodexScript = (req: any, n: number, tag: string) => CodexReply | undefined;

export interface CodexOrigin {
  server: https.Server;
  port: number;
  /** scripts by prompt_cache_key */
  scripts: Map<string, CodexScript>;
  /** the `response.create` bodies each connection (by ?t= tag) received, parsed */
  requests: Map<string, any[]>;
  /** the 101 request headers by tag */
  headers: Map<string, Record<string, string | string[] | undefined>>;
  close(): Promise<void>;
}

const MODEL = 'gpt-5-codex';

export const codexUsage = (u: CodexUsage) => ({
  input_tokens: u.input, input_tokens_details: { cached_tokens: u.cached },
  output_tokens: u.output, output_tokens_details: { reasoning_tokens: u.reasoning }, total_tokens: u.input + u.output,
});

/** The items a scripted reply ends with (what `response.completed` lists in `output`). */
export function replyOutput(r: CodexReply): any[] {
  const out: any[] = [];
  const n = r.id.slice(5);
  if (r.reasoning) out.push({ id: `rs_${n}`, type: 'reasoning', summary: [{ type: 'summary_text', text: r.reasoning.join('') }], encrypted_content: `gAAAAAB${n}enc` });
  if (r.text) out.push({ id: `msg_${n}`, type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', annotations: [], logprobs: [], text: r.text.join('') }] });
  if (r.call) out.push({ id: `fc_${n}`, type: 'function_call', status: 'completed', arguments: r.call.args.join(''), call_id: r.call.callId, name: r.call.name });
  return out;
}

function responseObject(r: CodexReply, status: string, output: any[] = [], usage: any = null) {
  return { id: r.id, object: 'response', created_at: 1_760_000_000, status, model: r.model ?? MODEL, output, parallel_tool_calls: false, usage };
}

/** Streams one reply. Resolves when the last event is written (or when the script cuts the stream). */
async function streamReply(ws: WebSocket, r: CodexReply): Promise<void> {
  let seq = 0;
  const send = async (ev: Record<string, unknown>) => {
    const data = JSON.stringify({ ...ev, sequence_number: seq++ });
    const write = () => new Promise<void>((res, rej) => ws.send(data, (e) => (e ? rej(e) : res())));
    if (r.gate) { let p!: Promise<void>; await r.gate(() => { p = write(); }); await p; } else await write();
  };
  const done = replyOutput(r);
  await send({ type: 'response.created', response: responseObject(r, 'in_progress') });
  await send({ type: 'response.in_progress', response: responseObject(r, 'in_progress') });
  let idx = 0;
  for (const item of done) {
    const output_index = idx++;
    const item_id = item.id;
    if (item.type === 'reasoning') {
      await send({ type: 'response.output_item.added', output_index, item: { id: item_id, type: 'reasoning', summary: [] } });
      await send({ type: 'response.reasoning_summary_part.added', item_id, output_index, summary_index: 0, part: { type: 'summary_text', text: '' } });
      for (const delta of r.reasoning!) await send({ type: 'response.reasoning_summary_text.delta', item_id, output_index, summary_index: 0, delta });
      await send({ type: 'response.reasoning_summary_text.done', item_id, output_index, summary_index: 0, text: item.summary[0].text });
      await send({ type: 'response.reasoning_summary_part.done', item_id, output_index, summary_index: 0, part: item.summary[0] });
    } else if (item.type === 'message') {
      await send({ type: 'response.output_item.added', output_index, item: { id: item_id, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
      await send({ type: 'response.content_part.added', item_id, output_index, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } });
      for (const delta of r.text!) await send({ type: 'response.output_text.delta', item_id, output_index, content_index: 0, delta, logprobs: [] });
      if (r.hold) await r.hold;
      if (r.cut) return;
      await send({ type: 'response.output_text.done', item_id, output_index, content_index: 0, text: item.content[0].text, logprobs: [] });
      await send({ type: 'response.content_part.done', item_id, output_index, content_index: 0, part: item.content[0] });
    } else {
      await send({ type: 'response.output_item.added', output_index, item: { ...item, status: 'in_progress', arguments: '' } });
      for (const delta of r.call!.args) await send({ type: 'response.function_call_arguments.delta', item_id, output_index, delta });
      await send({ type: 'response.function_call_arguments.done', item_id, output_index, arguments: item.arguments });
    }
    await send({ type: 'response.output_item.done', output_index, item });
  }
  await send({ type: 'response.completed', response: responseObject(r, 'completed', done, codexUsage(r.usage)) });
}

export async function startCodexOrigin(pki: TestPki): Promise<CodexOrigin> {
  const scripts = new Map<string, CodexScript>();
  const requests = new Map<string, any[]>();
  const headers = new Map<string, Record<string, string | string[] | undefined>>();
  const server = https.createServer(pki.serverContext(['api.openai.test']), (_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: { threshold: 0 }, maxPayload: 64 << 20 });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'https://api.openai.test');
    if (url.pathname !== '/v1/responses') return socket.destroy();
    const tag = url.searchParams.get('t') ?? '';
    headers.set(tag, req.headers);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const got: any[] = [];
      requests.set(tag, got);
      let n = 0;
      // One response at a time per socket, as the server does: requests queue behind the stream.
      let chain = Promise.resolve();
      ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        const req = JSON.parse(data.toString());
        got.push(req);
        chain = chain.then(async () => {
          if (ws.readyState !== WebSocket.OPEN) return;
          if (req.generate === false) {
            // pre-warm: a response with no output
            const r: CodexReply = { id: `resp_w${got.length}`, usage: { input: 0, cached: 0, output: 0, reasoning: 0 }, gate: scripts.get(req.prompt_cache_key)?.(req, -1, tag)?.gate };
            await streamPrewarm(ws, r);
            return;
          }
          const reply = scripts.get(req.prompt_cache_key)?.(req, n++, tag);
          if (!reply) {
            ws.send(JSON.stringify({ type: 'error', sequence_number: 0, error: { type: 'invalid_request_error', code: 'no_script', message: `no scripted reply for ${req.prompt_cache_key}` } }));
            return;
          }
          await streamReply(ws, reply);
        }).catch(() => { /* the client went away mid-stream */ });
      });
      ws.on('error', () => {});
      ws.on('close', (code, reason) => { if (ws.readyState !== WebSocket.CLOSED) ws.close(code, reason); });
    });
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  return {
    server, port, scripts, requests, headers,
    close: () => new Promise<void>((r) => { for (const c of wss.clients) c.terminate(); server.closeAllConnections(); server.close(() => r()); }),
  };
}

async function streamPrewarm(ws: WebSocket, r: CodexReply): Promise<void> {
  let seq = 0;
  for (const ev of [
    { type: 'response.created', response: responseObject(r, 'in_progress') },
    { type: 'response.completed', response: responseObject(r, 'completed', [], codexUsage(r.usage)) },
  ]) {
    const data = JSON.stringify({ ...ev, sequence_number: seq++ });
    const write = () => new Promise<void>((res, rej) => ws.send(data, (e) => (e ? rej(e) : res())));
    if (r.gate) { let p!: Promise<void>; await r.gate(() => { p = write(); }); await p; } else await write();
  }
}

/**
 * Two (or more) sockets streaming in a fixed interleaving: party i sends its k-th event only after
 * every party sent its (k-1)-th — A0 B0 A1 B1 … on the wire. Each party must send as many events.
 */
export class Lockstep {
  private turn = 0;
  private readonly waiting = new Map<number, () => void>();
  constructor(private readonly parties: number) {}

  gate(party: number): (send: () => void) => Promise<void> {
    return async (send) => {
      while (this.turn % this.parties !== party) await new Promise<void>((r) => this.waiting.set(party, r));
      send();
      this.turn++;
      const next = this.waiting.get(this.turn % this.parties);
      if (next) { this.waiting.delete(this.turn % this.parties); next(); }
    };
  }
}

// ── the codex-like client ───────────────────────────────────────────────────────────────────

export const CODEX_INSTRUCTIONS = 'You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI on a user\'s computer.';
export const CODEX_TOOLS = [
  { type: 'function', name: 'shell', description: 'Runs a shell command and returns its output.', strict: false,
    parameters: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } }, workdir: { type: 'string' }, timeout_ms: { type: 'number' } }, required: ['command'], additionalProperties: false } },
  { type: 'function', name: 'update_plan', description: 'Updates the task plan.', strict: false, parameters: { type: 'object', properties: { plan: { type: 'array' } }, required: ['plan'] } },
];

export const userMsg = (text: string) => ({ type: 'message', role: 'user', content: [{ type: 'input_text', text }] });
export const developerMsg = (text: string) => ({ type: 'message', role: 'developer', content: [{ type: 'input_text', text }] });

/** What the client saw of one response. */
export interface SeenResponse { events: any[]; id?: string; text: string; reasoning: string; args: string; terminal?: any }

export class CodexClient {
  /** every client opened and not yet closed: a failed test's after() ends them (open tunnels would keep the proxy from stopping) */
  static readonly open_ = new Set<CodexClient>();
  readonly seen: SeenResponse[] = [];
  private cur?: SeenResponse;
  private waiters: (() => void)[] = [];
  /** every event received, in order (shared logs show interleaving between clients) */
  readonly log: any[];
  private turnN = 0;

  private constructor(readonly ws: WebSocket, readonly tag: string, readonly pck: string, log: any[]) {
    this.log = log;
    ws.on('message', (data) => {
      const ev = JSON.parse(data.toString());
      log.push({ tag, ev });
      if (ev.type === 'response.created') { this.cur = { events: [], text: '', reasoning: '', args: '' }; this.seen.push(this.cur); }
      const c = this.cur;
      if (!c) return;
      c.events.push(ev);
      c.id ??= ev.response?.id;
      if (ev.type === 'response.output_text.delta') c.text += ev.delta;
      if (ev.type === 'response.reasoning_summary_text.delta') c.reasoning += ev.delta;
      if (ev.type === 'response.function_call_arguments.delta') c.args += ev.delta;
      if (['response.completed', 'response.failed', 'response.incomplete', 'error'].includes(ev.type)) c.terminal = ev;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Opens `wss://api.openai.test/v1/responses?t=<tag>` through the CONNECT tunnel with codex's headers. */
  static async open(g: Greytap, tag: string, pck: string, log: any[] = []): Promise<CodexClient> {
    const raw = await connectTunnel(g.httpProxy, 'api.openai.test:443');
    const ca = await (await fetch(g.api + '/ca.pem')).text();
    const sock = tls.connect({ socket: raw, servername: 'api.openai.test', ca, ALPNProtocols: ['http/1.1'] });
    const ws = new WebSocket(`wss://api.openai.test/v1/responses?t=${tag}`, {
      createConnection: () => sock,
      perMessageDeflate: { threshold: 0 },
      maxPayload: 64 << 20,
      headers: {
        authorization: 'Bearer sk-test-not-a-real-key',
        originator: 'codex_cli_rs',
        'user-agent': 'codex_cli_rs/0.50.0 (Debian 12.0.0; x86_64) xterm-256color',
        'openai-beta': 'responses_websockets=2026-02-04',
        session_id: pck,
      },
    });
    await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    const c = new CodexClient(ws, tag, pck, log);
    CodexClient.open_.add(c);
    ws.once('close', () => CodexClient.open_.delete(c));
    return c;
  }

  /** Sends a `response.create` with the new input items, as codex does (instructions and tools on every request). */
  send(input: unknown[], extra: Record<string, unknown> = {}): void {
    const turnId = `turn-${this.turnN++}`;
    this.ws.send(JSON.stringify({
      type: 'response.create', model: MODEL, instructions: CODEX_INSTRUCTIONS, input, tools: CODEX_TOOLS,
      tool_choice: 'auto', parallel_tool_calls: false, reasoning: { effort: 'medium', summary: 'auto' }, store: false, stream: true,
      include: ['reasoning.encrypted_content'], prompt_cache_key: this.pck,
      client_metadata: { 'x-codex-turn-metadata': JSON.stringify({ session_id: this.pck, turn_id: turnId, cwd: '/home/dev/repo' }) },
      ...extra,
    }));
  }

  /** Resolves when the n-th response (0-based, pre-warm included) satisfies `until` (default: it ended). */
  async response(n: number, until: (r: SeenResponse) => boolean = (r) => r.terminal !== undefined): Promise<SeenResponse> {
    for (;;) {
      const r = this.seen[n];
      if (r && until(r)) return r;
      if (this.ws.readyState !== WebSocket.OPEN) throw new Error(`${this.tag}: socket closed before response ${n}`);
      await new Promise<void>((res) => { this.waiters.push(res); setTimeout(res, 200); });
    }
  }

  close(code = 1000, reason = ''): Promise<void> {
    return new Promise((r) => { if (this.ws.readyState === WebSocket.CLOSED) return r(); this.ws.once('close', () => r()); this.ws.close(code, reason); });
  }
}
