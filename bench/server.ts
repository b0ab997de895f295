// The upstream of every contender, in a process of its own (forked by the runner):
// HTTPS + WSS on 127.0.0.1 with the bench certificate (bench.test, *.bench.test, 127.0.0.1).
//   /ws?deflate=1|0     WebSocket echo (permessage-deflate with context takeover, threshold 0 — or off)
//   /http?resp=N        any method; the request body is read and dropped; N bytes of JSON back
//   /sse?n=N            text/event-stream: N small events, one write each (LLM token streaming);
//                       each carries the server's monotonic clock so the client can time delivery
//   /bulk?bytes=N       N bytes (Content-Length), written in 64 KiB chunks with backpressure
// argv[2]: a JSON file { key, cert } (PEM).
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { jsonMessage } from './payload.js';
import type { ReadyMessage } from './protocol.js';

const { key, cert } = JSON.parse(readFileSync(process.argv[2], 'utf8')) as { key: string; cert: string };
const MAX_WS_PAYLOAD = 16 << 20;

// Server side of the negotiation: accept the client's offer, no_context_takeover never forced.
const wssDeflate = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_PAYLOAD, perMessageDeflate: { threshold: 0 } });
const wssPlain = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_PAYLOAD, perMessageDeflate: false });
const echo = (ws: WebSocket) => {
  ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
};
wssDeflate.on('connection', echo);
wssPlain.on('connection', echo);

const bodies = new Map<number, Buffer>();
const body = (n: number) => {
  let b = bodies.get(n);
  if (!b) bodies.set(n, (b = n >= 64 ? jsonMessage(n, n) : Buffer.alloc(n, 0x61)));
  return b;
};
const BULK_CHUNK = Buffer.alloc(64 * 1024, 0x5a);

function num(u: URL, name: string, dflt: number, max: number): number {
  const v = Number(u.searchParams.get(name) ?? dflt);
  return Number.isFinite(v) && v >= 0 ? Math.min(v, max) : dflt;
}

/** Resolves on 'drain' or 'close', whichever comes first, and leaves no listener behind. */
function writable(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => { res.removeListener('drain', done); res.removeListener('close', done); resolve(); };
    res.once('drain', done);
    res.once('close', done);
  });
}

async function sse(res: ServerResponse, n: number): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const words = ['the', ' model', ' says', ' hello', ' token', ' stream', ' of', ' text'];
  for (let i = 0; i < n && !res.destroyed; i++) {
    const ev = `event: delta\ndata: {"t":"${process.hrtime.bigint()}","i":${i},"delta":"${words[i & 7]}"}\n\n`;
    if (!res.write(ev)) await writable(res);
  }
  res.end('event: done\ndata: [DONE]\n\n');
}

async function bulk(res: ServerResponse, n: number): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
  let left = n;
  while (left > 0 && !res.destroyed) {
    const c = left >= BULK_CHUNK.length ? BULK_CHUNK : BULK_CHUNK.subarray(0, left);
    left -= c.length;
    if (!res.write(c)) await writable(res);
  }
  res.end();
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const u = new URL(req.url ?? '/', 'https://bench.test');
  req.on('error', () => res.destroy());
  req.resume(); // request bodies are read and dropped
  req.once('end', () => {
    if (u.pathname === '/http') {
      const b = body(num(u, 'resp', 1024, 64 << 20));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(b.length) });
      res.end(b);
    } else if (u.pathname === '/sse') {
      void sse(res, num(u, 'n', 1000, 1_000_000)).catch(() => res.destroy());
    } else if (u.pathname === '/bulk') {
      void bulk(res, num(u, 'bytes', 1 << 20, 2 ** 40)).catch(() => res.destroy());
    } else {
      res.writeHead(404, { 'content-length': '0' });
      res.end();
    }
  });
}

const server = https.createServer({ key, cert, keepAliveTimeout: 120_000, noDelay: true, requestTimeout: 0 }, onRequest);
server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
  const u = new URL(req.url ?? '/', 'https://bench.test');
  if (u.pathname !== '/ws') { socket.destroy(); return; }
  const wss = u.searchParams.get('deflate') === '1' ? wssDeflate : wssPlain;
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.on('clientError', (_e, socket) => socket.destroy());
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  const msg: ReadyMessage = { ready: true, port: typeof addr === 'object' && addr ? addr.port : 0 };
  process.send?.(msg);
});
// The runner owns this process: when it goes, so do we.
process.on('disconnect', () => process.exit(0));
