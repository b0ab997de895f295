// Issue 3 end to end with the `ws` package on both ends, through both listeners with TLS
// interception. Every captured message must equal what its peer sent, byte for byte, in order; both
// peers must see byte-identical streams; the handshake must reach the origin untouched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import tls from 'node:tls';
import type https from 'node:https';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, connectTunnel, waitFor, apiGet, type Greytap } from '../helpers/harness.js';
import { startWsOrigin, openClient, closeClient, capturedMessages, payloadOf, afterHead, type ServerSide } from './ws-helpers.js';

const pki = makeTestPki();
let g: Greytap;
let origin: https.Server;
let side: ServerSide;

before(async () => {
  const o = await startWsOrigin(pki);
  origin = o.server;
  side = o.side;
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `ws.test:443=127.0.0.1:${o.port}`, '--max-body', '32MiB', '--workers', '2']);
});
after(async () => { await g?.stop(); origin?.closeAllConnections(); origin?.close(); });

function codexLike(i: number): string {
  // realistic, repetitive JSON: later messages refer back into earlier ones (context takeover)
  return JSON.stringify({
    type: 'response.create', model: 'gpt-5-codex', prompt_cache_key: 'session-1234',
    input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: `step ${i}: ` + 'run the tests and fix what fails. '.repeat(1 + (i % 13)) }] }],
    nonce: randomBytes(4 + (i % 8)).toString('hex'),
  });
}

async function assertCapturedEqual(tag: string, sent: (string | Buffer)[], echoed: (string | Buffer)[], compressed: boolean) {
  const { messages } = await capturedMessages(g, tag, (ms) => ms.filter((m) => m.opcode === 'close').length >= 2);
  const data = (dir: string) => messages.filter((m) => m.direction === dir && (m.opcode === 'text' || m.opcode === 'binary'));
  const client = data('client');
  const server = data('server');
  assert.equal(client.length, sent.length, 'client messages captured');
  assert.equal(server.length, echoed.length, 'server messages captured');
  for (const [i, m] of client.entries()) {
    assert.equal(m.error, undefined, `client #${i}: ${m.error} ${m.errorDetail ?? ''}`);
    assert.deepEqual(await payloadOf(g, m), sent[i], `client message #${i}`);
    assert.equal(m.compressed, compressed);
    assert.equal(m.seq > (client[i - 1]?.seq ?? -1), true, 'seq increases in wire order');
  }
  for (const [i, m] of server.entries()) {
    assert.equal(m.error, undefined, `server #${i}: ${m.error} ${m.errorDetail ?? ''}`);
    assert.deepEqual(await payloadOf(g, m), echoed[i], `server message #${i}`);
  }
  return messages;
}

async function echoRun(path: string, via: 'http' | 'socks', msgs: (string | Buffer)[], compressed: boolean, clientOpts = {}) {
  const c = await openClient(g, path, via, clientOpts);
  for (const m of msgs) c.ws.send(m);
  await waitFor(() => c.received.length === msgs.length, `${msgs.length} echoes`, 60_000);
  await closeClient(c, 4001, 'bye');
  assert.deepEqual(side.received.get(c.tag), msgs, 'the origin received every message intact');
  assert.deepEqual(c.received, msgs, 'the client received every echo intact');
  const messages = await assertCapturedEqual(c.tag, msgs, msgs, compressed);
  return { c, messages };
}

test('permessage-deflate with context takeover: 1,000 messages each way decoded exactly (HTTP CONNECT)', async () => {
  const msgs = Array.from({ length: 1000 }, (_, i) => codexLike(i));
  const { c, messages } = await echoRun('/ctx', 'http', msgs, true);
  // the handshake reached the origin untouched, and greytap followed what was negotiated
  assert.equal(side.offers.get(c.tag), 'permessage-deflate; client_max_window_bits');
  assert.match(c.ws.extensions, /^permessage-deflate/);
  const close = messages.filter((m) => m.opcode === 'close');
  assert.deepEqual(close.map((m) => [m.direction, m.closeCode, m.closeReason]), [['client', 4001, 'bye'], ['server', 4001, 'bye']]);
  assert.ok(messages.every((m) => m.kind === (m.opcode === 'close' ? 'WS_CTRL' : m.direction === 'client' ? 'WS_REQ' : 'WS_RESP')));
});

test('context takeover through SOCKS5, binary and text mixed', async () => {
  const msgs: (string | Buffer)[] = Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? Buffer.from(codexLike(i)) : codexLike(i)));
  await echoRun('/ctx', 'socks', msgs, true);
});

test('no_context_takeover, and window bits 9–15 negotiated by the origin', async () => {
  const msgs = Array.from({ length: 60 }, (_, i) => codexLike(i));
  await echoRun('/noctx', 'http', msgs, true);
  for (const b of [9, 11, 13, 15]) await echoRun(`/bits${b}`, 'socks', msgs, true);
});

test('deflate off: plain frames captured; a key in the URL is redacted in every record', async () => {
  const msgs = Array.from({ length: 100 }, (_, i) => codexLike(i));
  const { c, messages } = await echoRun('/plain?api_key=sk-ws-secret', 'http', msgs, false, { perMessageDeflate: false });
  assert.equal(side.offers.get(c.tag), undefined);
  const { upgrade } = await capturedMessages(g, c.tag);
  for (const r of [upgrade, ...messages]) assert.equal(r.path, `/plain?api_key=[REDACTED]&t=${c.tag}`);
});

test('fragmented messages with pings between fragments', async () => {
  const c = await openClient(g, '/ctx', 'http');
  const parts = ['{"type":"response.create",', '"input":"fragmented ', 'across three frames"}'];
  c.ws.send(parts[0], { fin: false });
  c.ws.ping('between');
  c.ws.send(parts[1], { fin: false });
  c.ws.ping('again');
  c.ws.send(parts[2], { fin: true });
  c.ws.send('after');
  await waitFor(() => c.received.length === 2, 'echoes');
  await closeClient(c);
  const whole = parts.join('');
  assert.deepEqual(c.received, [whole, 'after']);
  const { messages } = await capturedMessages(g, c.tag, (ms) => ms.some((m) => m.opcode === 'close' && m.direction === 'server'));
  const client = messages.filter((m) => m.direction === 'client');
  assert.deepEqual(client.map((m) => m.opcode), ['ping', 'ping', 'text', 'text', 'close'], 'control frames take their wire position');
  const frag = client[2];
  assert.equal(frag.frames, 3);
  assert.equal(await payloadOf(g, frag), whole);
  assert.equal(await payloadOf(g, client[0]), 'between');
  assert.equal(await payloadOf(g, client[3]), 'after');
});

test('a 20 MiB binary message each way is captured whole', async () => {
  const big = randomBytes(20 << 20);
  const c = await openClient(g, '/ctx', 'socks');
  c.ws.send(big);
  await waitFor(() => c.received.length === 1, 'big echo', 120_000);
  await closeClient(c);
  const { messages } = await capturedMessages(g, c.tag, (ms) => ms.some((m) => m.opcode === 'close' && m.direction === 'server'));
  const hash = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  for (const dir of ['client', 'server']) {
    const m = messages.find((x) => x.direction === dir && x.opcode === 'binary');
    assert.equal(m.size, big.length);
    assert.equal(m.truncated, false);
    assert.equal(hash(await payloadOf(g, m)), hash(big), `${dir} 20 MiB message`);
  }
});

test('bytes are identical on both sides of the proxy (masked frames stay masked, compressed stays compressed)', async () => {
  const c = await openClient(g, '/ctx', 'http');
  const msgs = Array.from({ length: 50 }, (_, i) => codexLike(i));
  for (const m of msgs) c.ws.send(m);
  await waitFor(() => c.received.length === msgs.length, 'echoes');
  await closeClient(c);
  await waitFor(() => Buffer.concat(side.wireIn.get(c.tag)!).length === Buffer.concat(c.wireOut).length, 'origin read everything');
  assert.deepEqual(side.received.get(c.tag), msgs);
  const up = Buffer.concat(c.wireOut);
  assert.ok(up.length > 0 && (up[1] & 0x80) !== 0, 'client frames are masked');
  assert.ok((up[0] & 0x40) !== 0, 'and compressed (RSV1)');
  assert.deepEqual(Buffer.concat(side.wireIn.get(c.tag)!), up, 'origin read exactly the client frames');
  assert.deepEqual(afterHead(c.wireIn), afterHead(side.wireOut.get(c.tag)!), 'client read exactly the origin frames');
});

test('many concurrent connections keep their messages apart', async () => {
  const runs = Array.from({ length: 16 }, (_, k) => echoRun(k % 2 ? '/ctx' : '/noctx', k % 2 ? 'socks' : 'http', Array.from({ length: 50 }, (_, i) => `${k}:` + codexLike(i)), true));
  await Promise.all(runs);
});

test('bad input on one connection is recorded and does not disturb another', async () => {
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const rawClient = async (path: string, ext: boolean) => {
    const t = await connectTunnel(g.httpProxy, 'ws.test:443');
    const s = tls.connect({ socket: t, servername: 'ws.test', ca });
    await new Promise((r) => s.once('secureConnect', r));
    s.write(`GET ${path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${ext ? 'Sec-WebSocket-Extensions: permessage-deflate\r\n' : ''}\r\n`);
    await new Promise<void>((r) => { let h = ''; const on = (d: Buffer) => { h += d.toString('latin1'); if (h.includes('\r\n\r\n')) { s.off('data', on); r(); } }; s.on('data', on); });
    s.on('error', () => {});
    return s;
  };
  const frame = (b0: number, payload: Buffer) => {
    const key = randomBytes(4);
    const masked = Buffer.from(payload.map((x, i) => x ^ key[i % 4]));
    return Buffer.concat([Buffer.from([b0, 0x80 | payload.length]), key, masked]);
  };
  const good = openClient(g, '/ctx', 'socks');
  // invalid deflate data in an RSV1 frame
  const s1 = await rawClient('/ctx?t=bad-deflate', true);
  s1.write(frame(0xc1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00, 0x12])));
  // invalid UTF-8 in a text frame (deflate off)
  const s2 = await rawClient('/plain?t=bad-utf8', false);
  s2.write(frame(0x81, Buffer.from([0x68, 0xc3, 0x28])));
  // reserved opcode 3
  const s3 = await rawClient('/plain?t=bad-opcode', false);
  s3.write(frame(0x83, Buffer.from('x')));
  // a fragmented message cut by a fatal framing error (a reserved opcode between its fragments)
  const s5 = await rawClient('/plain?t=cut-by-error', false);
  s5.write(Buffer.concat([frame(0x01, Buffer.from('part one')), frame(0x83, Buffer.from('x'))]));
  // disconnect in the middle of a frame
  const s4 = await rawClient('/plain?t=mid-frame', false);
  s4.write(frame(0x81, Buffer.from('hello world')).subarray(0, 9));
  await new Promise((r) => setTimeout(r, 100));
  s4.destroy();
  const c = await good;
  c.ws.send('still fine');
  await waitFor(() => c.received.length === 1, 'echo on the good connection');
  await closeClient(c);
  const errorOf = async (tag: string, code: string) => {
    const { messages } = await capturedMessages(g, tag, (ms) => ms.some((m) => m.error === code));
    return messages.find((m) => m.error === code);
  };
  assert.equal((await errorOf('bad-deflate', 'inflate_failed')).direction, 'client');
  const badUtf8 = await apiGet(g, `/api/transactions/${(await errorOf('bad-utf8', 'invalid_utf8')).id}`);
  assert.deepEqual(Buffer.from(badUtf8.bodyBase64, 'base64'), Buffer.from([0x68, 0xc3, 0x28]));
  assert.ok(await errorOf('bad-opcode', 'bad_frame'));
  assert.ok(await errorOf('mid-frame', 'truncated_stream'));
  const cut = await apiGet(g, `/api/transactions/${(await errorOf('cut-by-error', 'bad_frame')).id}`);
  assert.deepEqual([cut.opcode, cut.body, cut.truncated], ['text', 'part one', true], 'what was seen of it, marked incomplete');
  const { messages } = await capturedMessages(g, c.tag, (ms) => ms.some((m) => m.opcode === 'text'));
  assert.equal(await payloadOf(g, messages.find((m) => m.opcode === 'text' && m.direction === 'client')), 'still fine');
  for (const s of [s1, s2, s3, s5]) s.destroy();
});
