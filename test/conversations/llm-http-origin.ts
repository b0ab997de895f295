// Fake HTTPS LLM origins on one TLS server (certificate for both names): `api.anthropic.test`
// POST /v1/messages (Anthropic Messages, SSE when stream:true, JSON otherwise) and `llm.local.test`
// POST /v1/chat/completions (OpenAI Chat Completions SSE ending in [DONE]). Each SSE event is its
// own write, as a real streaming server flushes them. Replies are scripted by the test.
//
// Also the client side: a Node https client through greytap's CONNECT tunnel that posts JSON and
// reads the SSE stream, optionally destroying its socket mid-stream (a client abort).
import https from 'node:https';
import tls from 'node:tls';
import type http from 'node:http';
import type net from 'node:net';
import { decompress as zstdDecompress } from 'fzstd';
import type { TestPki } from '../helpers/test-ca.js';
import { connectTunnel, type Greytap } from '../helpers/harness.js';

/**
 * What the origin answers: SSE events (`event` name optional), a JSON body, or a recorded response
 * sent as it was (a real server's body text, e.g. from a fixture). `stall`: stop after the events and keep the response open.
 */
export type HttpReply =
  | { sse: { event?: string; data: unknown }[]; stall?: boolean }
  | { json: unknown; status?: number }
  | { recorded: { status: number; contentType: string; body: string } };

export type HttpScript = (req: { host: string; path: string; headers: http.IncomingHttpHeaders; body: any }) => HttpReply;

export interface LlmHttpOrigin {
  server: https.Server;
  port: number;
  /** scripts by "host path" (path without the query) */
  scripts: Map<string, HttpScript>;
  /** every request body received, by "host path" */
  received: Map<string, any[]>;
  close(): Promise<void>;
}

export async function startLlmHttpOrigin(pki: TestPki): Promise<LlmHttpOrigin> {
  const scripts = new Map<string, HttpScript>();
  const received = new Map<string, any[]>();
  const server = https.createServer(pki.serverContext(['api.anthropic.test', 'gemini.test', 'openai.test', 'llm.local.test']), async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const host = (req.headers.host ?? '').split(':')[0];
    const path = (req.url ?? '/').split('?')[0];
    const key = `${host} ${path}`;
    let body: any;
    // codex signed in with ChatGPT sends its request bodies zstd-coded, which the real backend undoes
    const raw = Buffer.concat(chunks);
    const text = req.headers['content-encoding'] === 'zstd' ? Buffer.from(zstdDecompress(raw)).toString('utf8') : raw.toString('utf8');
    try { body = JSON.parse(text); } catch { body = undefined; }
    (received.get(key) ?? received.set(key, []).get(key)!).push(body);
    const script = scripts.get(key);
    if (req.method !== 'POST' || !script) { res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found"}}'); return; }
    const reply = script({ host, path, headers: req.headers, body });
    if ('recorded' in reply) {
      const r = reply.recorded;
      res.writeHead(r.status, { 'content-type': r.contentType, 'content-length': Buffer.byteLength(r.body) }).end(r.body);
      return;
    }
    if ('json' in reply) {
      const text = JSON.stringify(reply.json);
      res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    for (const e of reply.sse) {
      if (res.destroyed) return;
      const data = typeof e.data === 'string' ? e.data : JSON.stringify(e.data);
      await new Promise<void>((r) => res.write(`${e.event ? `event: ${e.event}\n` : ''}data: ${data}\n\n`, () => r()));
    }
    if (!reply.stall) res.end();
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  return {
    server, port, scripts, received,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** Anthropic SSE: every event named by its type, as the API sends it. */
export const anthropicSse = (events: Record<string, unknown>[]) => events.map((data) => ({ event: String(data.type), data }));

export interface PostResult { status: number; headers: http.IncomingHttpHeaders; body: string; aborted: boolean }

/**
 * POSTs JSON to https://host/path through greytap's CONNECT tunnel: `body` is serialised, or sent
 * as it is when it is already JSON text (a recorded request) or bytes (a coded body). `abortWhen`: destroys the
 * socket as soon as the response text read so far satisfies it (a client giving up mid-stream).
 */
export async function postJson(g: Greytap, host: string, path: string, body: unknown, headers: Record<string, string>, abortWhen?: (text: string) => boolean): Promise<PostResult> {
  const raw = await connectTunnel(g.httpProxy, `${host}:443`);
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const payload = Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise<PostResult>((resolve, reject) => {
    const sock = tls.connect({ socket: raw, servername: host, ca, ALPNProtocols: ['http/1.1'] });
    const req = https.request({
      host, path, method: 'POST', createConnection: () => sock,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), accept: 'text/event-stream', ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
        if (abortWhen?.(text)) { sock.destroy(); raw.destroy(); resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, aborted: true }); }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, aborted: false }));
      res.on('error', () => { /* our own abort */ });
    });
    req.on('error', (e) => { if (!abortWhen) reject(e); });
    req.end(payload);
  });
}
