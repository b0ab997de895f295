// A real wss echo origin (the `ws` package on a TLS server trusted via --upstream-ca) and clients
// that reach it through greytap's HTTP CONNECT or SOCKS5 listener with TLS interception.
import https from 'node:https';
import tls from 'node:tls';
import type net from 'node:net';
import { randomUUID } from 'node:crypto';
import WebSocket, { WebSocketServer, type PerMessageDeflateOptions } from 'ws';
import type { TestPki } from '../helpers/test-ca.js';
import { apiGet, connectSocks, connectTunnel, waitFor, type Greytap } from '../helpers/harness.js';

export interface ServerSide {
  /** per connection tag: messages the origin received, and the extension offer it saw */
  received: Map<string, (string | Buffer)[]>;
  offers: Map<string, string | undefined>;
  /** raw bytes at the origin's socket: read after the upgrade head, and written (101 head included) */
  wireIn: Map<string, Buffer[]>;
  wireOut: Map<string, Buffer[]>;
}

/** Deflate settings per path: the origin decides what is negotiated; greytap must follow. */
export const ORIGIN_DEFLATE: Record<string, PerMessageDeflateOptions | false> = {
  '/ctx': { threshold: 0 },
  '/noctx': { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true },
  '/snoctx': { threshold: 0, serverNoContextTakeover: true },
  '/cnoctx': { threshold: 0, clientNoContextTakeover: true },
  '/plain': false,
  ...Object.fromEntries([9, 10, 11, 13, 15].map((b) => [`/bits${b}`, { threshold: 0, serverMaxWindowBits: b, clientMaxWindowBits: b }])),
};

export async function startWsOrigin(pki: TestPki, hosts = ['ws.test']): Promise<{ server: https.Server; port: number; side: ServerSide }> {
  const side: ServerSide = { received: new Map(), offers: new Map(), wireIn: new Map(), wireOut: new Map() };
  const server = https.createServer(pki.serverContext(hosts), (req, res) => {
    if (req.url?.startsWith('/page')) {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(BROWSER_PAGE);
      return;
    }
    res.writeHead(404).end();
  });
  const wss = new Map(Object.entries(ORIGIN_DEFLATE).map(([p, d]) => [p, new WebSocketServer({ noServer: true, perMessageDeflate: d, maxPayload: 64 << 20 })]));
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'https://x');
    const w = wss.get(url.pathname);
    if (!w) return socket.destroy();
    const tag = url.searchParams.get('t') ?? '';
    side.offers.set(tag, req.headers['sec-websocket-extensions'] as string | undefined);
    const wireIn: Buffer[] = [Buffer.from(head)];
    const wireOut: Buffer[] = [];
    side.wireIn.set(tag, wireIn);
    side.wireOut.set(tag, wireOut);
    socket.on('data', (d: Buffer) => wireIn.push(Buffer.from(d)));
    const write = socket.write.bind(socket) as (...a: unknown[]) => boolean;
    (socket as unknown as { write: (...a: unknown[]) => boolean }).write = (d: unknown, ...rest: unknown[]) => {
      wireOut.push(Buffer.from(d as Buffer));
      return write(d, ...rest);
    };
    w.handleUpgrade(req, socket, head, (ws) => {
      const got: (string | Buffer)[] = [];
      side.received.set(tag, got);
      ws.on('message', (data, isBinary) => {
        const m = isBinary ? Buffer.from(data as Buffer) : data.toString();
        got.push(m);
        ws.send(m, { binary: isBinary });
      });
      ws.on('close', (code, reason) => { if (ws.readyState !== WebSocket.CLOSED) ws.close(code, reason); });
      ws.on('error', () => {});
    });
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  return { server, port, side };
}

export interface Client {
  ws: WebSocket;
  tag: string;
  received: (string | Buffer)[];
  /** bytes the client wrote after the handshake, and bytes it read after the 101 head */
  wireOut: Buffer[];
  wireIn: Buffer[];
}

export async function openClient(g: Greytap, path: string, via: 'http' | 'socks', opts: WebSocket.ClientOptions = {}, host = 'ws.test'): Promise<Client> {
  const tag = randomUUID();
  const raw = via === 'http' ? await connectTunnel(g.httpProxy, `${host}:443`) : await connectSocks(g.socks, host, 443);
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const sock = tls.connect({ socket: raw, servername: host, ca });
  const wireOut: Buffer[] = [];
  const wireIn: Buffer[] = [];
  let open = false;
  const write = sock.write.bind(sock) as (...a: unknown[]) => boolean;
  (sock as unknown as { write: (...a: unknown[]) => boolean }).write = (d: unknown, ...rest: unknown[]) => {
    if (open) wireOut.push(Buffer.from(d as Buffer));
    return write(d, ...rest);
  };
  sock.on('data', (d: Buffer) => wireIn.push(Buffer.from(d)));
  // threshold 0: ws would otherwise send short messages uncompressed under client_no_context_takeover
  const ws = new WebSocket(`wss://${host}${path}${path.includes('?') ? '&' : '?'}t=${tag}`, { createConnection: () => sock, maxPayload: 64 << 20, perMessageDeflate: { threshold: 0 }, ...opts });
  const received: (string | Buffer)[] = [];
  ws.on('message', (data, isBinary) => received.push(isBinary ? Buffer.from(data as Buffer) : data.toString()));
  await new Promise<void>((resolve, reject) => { ws.once('open', () => { open = true; resolve(); }); ws.once('error', reject); });
  return { ws, tag, received, wireOut, wireIn };
}

/** The bytes after the first blank line (the end of an HTTP head). */
export function afterHead(chunks: Buffer[]): Buffer {
  const all = Buffer.concat(chunks);
  return all.subarray(all.indexOf('\r\n\r\n') + 4);
}

export function closeClient(c: Client, code = 1000, reason = ''): Promise<void> {
  return new Promise((r) => { c.ws.once('close', () => r()); c.ws.close(code, reason); });
}

/** The 101 transaction of a client (found by its tag) and its connection's messages in wire order. */
export async function capturedMessages(g: Greytap, tag: string, expect: (msgs: any[]) => boolean = () => true): Promise<{ upgrade: any; messages: any[] }> {
  return waitFor(async () => {
    await g.drain();
    const txs = (await apiGet(g, `/api/transactions?kind=HTTP&limit=1000`)).items;
    const upgrade = txs.find((t: any) => t.status === 101 && t.path.includes(tag));
    if (!upgrade) return undefined;
    const conn = await apiGet(g, `/api/connections/${upgrade.conn}`);
    const messages = conn.messages as any[];
    return expect(messages) ? { upgrade, messages } : undefined;
  }, `captured messages of ${tag}`);
}

/** The decoded payload of a captured message as text or bytes, fetching bodies the listing omits. */
export async function payloadOf(g: Greytap, m: any): Promise<string | Buffer> {
  const full = m.body !== undefined || m.bodyBase64 !== undefined ? m : await apiGet(g, `/api/transactions/${m.id}`);
  return full.body !== undefined ? full.body : Buffer.from(full.bodyBase64 ?? '', 'base64');
}

/** A page that opens wss://ws.test/ctx from Chromium, echoes 50 messages, and reports in the title. */
export const BROWSER_PAGE = `<!doctype html><title>start</title><script>
const ws = new WebSocket('wss://' + location.host + '/ctx?t=browser');
let n = 0; const N = 50;
ws.onopen = () => { for (let i = 0; i < N; i++) ws.send(JSON.stringify({ type: 'response.create', i, text: 'browser message '.repeat(i % 7 + 1) })); };
ws.onmessage = () => { if (++n === N) { document.title = 'done:' + ws.extensions; ws.close(1000, 'browser done'); } };
ws.onerror = () => { document.title = 'error'; };
</script>`;
