// permessage-deflate as real servers negotiate and send it, through the real proxy: a scripted wss
// origin answers the 101 with a chosen Sec-WebSocket-Extensions and writes chosen frames (window
// bits under 15, quoted values, the second of several offers, final blocks mid-connection, RFC 7692
// violations), a raw client writes chosen masked frames; and the `ws` package with one
// no_context_takeover alone. Captured messages must be the plaintext, violations recorded and
// counted, and each peer must read exactly the other's bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import zlib from 'node:zlib';
import type net from 'node:net';
import type https from 'node:https';
import { createHash, randomBytes } from 'node:crypto';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, connectTunnel, waitFor, type Greytap } from '../helpers/harness.js';
import { capturedMessages, payloadOf, startWsOrigin, openClient, closeClient } from './ws-helpers.js';

const pki = makeTestPki();
let g: Greytap;
let scripted: tls.Server;
let wsOrigin: https.Server;
interface Script { ext?: string; serverFrames: Buffer[]; wireIn: Buffer[] }
const scripts = new Map<string, Script>();

function frame(b0: number, payload: Buffer, masked = false): Buffer {
  const n = payload.length;
  const len = n < 126 ? [n] : n < 65536 ? [126, n >> 8, n & 255] : [127, 0, 0, 0, 0, n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255];
  if (masked) len[0] |= 0x80;
  if (!masked) return Buffer.concat([Buffer.from([b0, ...len]), payload]);
  const key = randomBytes(4);
  return Buffer.concat([Buffer.from([b0, ...len]), key, Buffer.from(payload.map((x, i) => x ^ key[i % 4]))]);
}

type End = 'sync' | 'final' | 'keep-tail';
/**
 * A sender with an LZ77 window of 2^bits (context takeover: its earlier plaintext is the dictionary).
 * `final`: the message ends its DEFLATE stream (RFC 7692 §7.2.3.3); `keep-tail`: the 00 00 ff ff of
 * the sync flush is not removed (a §7.2.1 violation).
 */
function sender(bits: number, takeover = true): (plain: string, end?: End) => Buffer {
  let sent = Buffer.alloc(0);
  return (text, end = 'sync') => {
    const plain = Buffer.from(text);
    const dictionary = takeover && sent.length > 0 ? sent : undefined;
    sent = Buffer.concat([sent, plain]).subarray(-(1 << bits));
    if (end === 'final') return Buffer.concat([zlib.deflateRawSync(plain, { dictionary, windowBits: bits }), Buffer.from([0])]);
    const out = zlib.deflateRawSync(plain, { dictionary, windowBits: bits, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    return end === 'keep-tail' ? out : out.subarray(0, out.length - 4);
  };
}

before(async () => {
  scripted = tls.createServer(pki.serverContext(['raw.test']), (s) => {
    let acc = Buffer.alloc(0);
    let sc: Script | undefined;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      if (sc) return void sc.wireIn.push(d);
      acc = Buffer.concat([acc, d]);
      const end = acc.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = acc.subarray(0, end).toString('latin1');
      sc = scripts.get(/[?&]t=([\w-]+)/.exec(head)![1])!;
      sc.wireIn.push(acc.subarray(end + 4));
      const accept = createHash('sha1').update(/sec-websocket-key: *(\S+)/i.exec(head)![1] + '258EAFA5-E914-47DA-95CA-C5AB0DC65B11').digest('base64');
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${sc.ext ? `Sec-WebSocket-Extensions: ${sc.ext}\r\n` : ''}\r\n`);
      s.write(Buffer.concat(sc.serverFrames));
      setTimeout(() => s.end(), 200);
    });
  });
  const port = await new Promise<number>((r) => scripted.listen(0, '127.0.0.1', () => r((scripted.address() as net.AddressInfo).port)));
  const o = await startWsOrigin(pki);
  wsOrigin = o.server;
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `raw.test:443=127.0.0.1:${port}`, '--map', `ws.test:443=127.0.0.1:${o.port}`, '--workers', '2']);
});
after(async () => { await g?.stop(); scripted?.close(); wsOrigin?.closeAllConnections(); wsOrigin?.close(); });

let tags = 0;
/** One scripted connection; its captured messages (`records` of them, by default one per frame) in wire order, after checking both directions' bytes went through untouched. */
async function run(o: { offer?: string; ext?: string; serverFrames?: Buffer[]; clientFrames?: Buffer[]; records?: number }): Promise<any[]> {
  const tag = `s${++tags}`;
  const sc: Script = { ext: o.ext, serverFrames: o.serverFrames ?? [], wireIn: [] };
  scripts.set(tag, sc);
  const ca = await (await fetch(g.api + '/ca.pem')).text();
  const s = tls.connect({ socket: await connectTunnel(g.httpProxy, 'raw.test:443'), servername: 'raw.test', ca });
  s.on('error', () => {});
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  const offer = o.offer ?? 'permessage-deflate; client_max_window_bits';
  s.write(`GET /x?t=${tag} HTTP/1.1\r\nHost: raw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: ${offer}\r\n\r\n`);
  await waitFor(() => Buffer.concat(got).includes('\r\n\r\n'), '101');
  const up = Buffer.concat(o.clientFrames ?? []);
  s.write(up);
  await new Promise((r) => s.once('close', r));
  const down = Buffer.concat(got);
  assert.deepEqual(down.subarray(down.indexOf('\r\n\r\n') + 4), Buffer.concat(sc.serverFrames), 'the client read exactly the origin frames');
  assert.deepEqual(Buffer.concat(sc.wireIn), up, 'the origin read exactly the client frames');
  const want = o.records ?? (o.serverFrames?.length ?? 0) + (o.clientFrames?.length ?? 0);
  return (await capturedMessages(g, tag, (ms) => ms.length > 0 && (ms.length >= want || ms.some((m) => m.error)))).messages;
}

async function badFrames(): Promise<number> {
  const text = await (await fetch(g.api + '/metrics')).text();
  return Number(text.split('\n').find((l) => l.startsWith('greytap_decode_errors_total{kind="bad_frame"}'))!.split(' ')[1]);
}

async function assertPlain(messages: any[], dir: string, plains: string[]) {
  const data = messages.filter((m) => m.direction === dir && m.opcode === 'text');
  assert.equal(data.length, plains.length, `${dir} messages`);
  for (const [i, m] of data.entries()) {
    assert.equal(m.error, undefined, `${dir} #${i}: ${m.error} ${m.errorDetail ?? ''}`);
    assert.equal(m.compressed, true, `${dir} #${i} compressed`);
    assert.equal(await payloadOf(g, m), plains[i], `${dir} #${i}`);
  }
}

const words = (i: number) => `m${i} ` + Array.from({ length: 5 + ((i * 7) % 60) }, (_, k) => `w${(i * 31 + k * 17) % 97}`).join(' ');

test('window bits 9 and 10 with final blocks mid-connection (RFC 7692 §7.2.3.3): every message decoded', async () => {
  for (const bits of [9, 10]) {
    const s = sender(bits);
    const c = sender(bits);
    const plains = Array.from({ length: 40 }, (_, i) => words(i));
    const messages = await run({
      offer: `permessage-deflate; client_max_window_bits; server_max_window_bits=${bits}`,
      ext: `permessage-deflate; client_max_window_bits=${bits}; server_max_window_bits=${bits}`,
      serverFrames: plains.map((p, i) => frame(0xc1, s(p, i % 3 === 1 ? 'final' : 'sync'))),
      clientFrames: plains.map((p, i) => frame(0xc1, c(p, i % 4 === 2 ? 'final' : 'sync'), true)),
    });
    await assertPlain(messages, 'server', plains);
    await assertPlain(messages, 'client', plains);
  }
});

test('quoted parameter values, and the second of two offers accepted: followed as answered', async () => {
  const s = sender(10);
  const plains = Array.from({ length: 10 }, (_, i) => words(i).repeat(20));
  const quoted = await run({ ext: 'permessage-deflate; client_max_window_bits="10"; server_max_window_bits="10"', serverFrames: plains.map((p) => frame(0xc1, s(p))) });
  await assertPlain(quoted, 'server', plains);
  const nc = sender(15, false);
  const second = await run({
    offer: 'permessage-deflate; client_max_window_bits=9; server_max_window_bits=9; server_no_context_takeover, permessage-deflate',
    ext: 'permessage-deflate',
    serverFrames: plains.map((p) => frame(0xc1, nc(p))),
  });
  await assertPlain(second, 'server', plains);
});

test('a compressed message whose last frame is empty, or whose first frame is; one byte per frame', async () => {
  const plain = 'compressed, split over frames '.repeat(4);
  const z = sender(15, false)(plain);
  const messages = await run({
    ext: 'permessage-deflate',
    serverFrames: [frame(0x41, z), frame(0x80, Buffer.alloc(0))],
    clientFrames: [
      frame(0x41, Buffer.alloc(0), true), frame(0x00, z.subarray(0, 3), true), frame(0x89, Buffer.from('p'), true), frame(0x80, z.subarray(3), true),
      ...[...z].map((b, i) => frame((i === 0 ? 0x41 : 0x00) | (i === z.length - 1 ? 0x80 : 0), Buffer.from([b]), true)),
    ],
    records: 4, // the ping, and one message per side plus the second client one
  });
  await assertPlain(messages, 'server', [plain]);
  await assertPlain(messages, 'client', [plain, plain]);
});

test('the 00 00 ff ff tail left on: decoded without context takeover; with it the next message fails as in a real receiver', async () => {
  const s = sender(15, false);
  const plains = ['first message, tail kept', 'second message, tail kept'];
  await assertPlain(await run({ ext: 'permessage-deflate; server_no_context_takeover', serverFrames: plains.map((p) => frame(0xc1, s(p, 'keep-tail'))) }), 'server', plains);
  // a persistent inflater (ws, Python websockets, zlib) is left inside a stored block's header by the doubled tail
  const t = sender(15);
  const messages = await run({ ext: 'permessage-deflate', serverFrames: [frame(0xc1, t(plains[0], 'keep-tail')), frame(0xc1, t(plains[1], 'keep-tail'))] });
  assert.equal(await payloadOf(g, messages[0]), plains[0]);
  assert.equal(messages[1].error, 'inflate_failed');
});

test('RSV1 without permessage-deflate, on a continuation frame, on a control frame: bad_frame, counted, bytes forwarded', async () => {
  const z = sender(15, false)('Hello hello hello');
  const cases: [Parameters<typeof run>[0], string, string][] = [
    [{ ext: undefined, serverFrames: [frame(0xc1, z)] }, 'server', 'RSV1 set without permessage-deflate'],
    [{ ext: undefined, clientFrames: [frame(0xc1, z, true)] }, 'client', 'RSV1 set without permessage-deflate'],
    [{ ext: 'permessage-deflate', serverFrames: [frame(0x41, z.subarray(0, 5)), frame(0xc0, z.subarray(5))] }, 'server', 'RSV1 set on a continuation frame'],
    [{ ext: 'permessage-deflate', clientFrames: [frame(0x41, z.subarray(0, 5), true), frame(0xc0, z.subarray(5), true)] }, 'client', 'RSV1 set on a continuation frame'],
    [{ ext: 'permessage-deflate', serverFrames: [frame(0xc9, Buffer.from('ping'))] }, 'server', 'RSV1 set on a control frame'],
    [{ ext: 'permessage-deflate', clientFrames: [frame(0xca, Buffer.from('pong'), true)] }, 'client', 'RSV1 set on a control frame'],
  ];
  for (const [o, dir, detail] of cases) {
    const before = await badFrames();
    const messages = await run(o);
    const bad = messages.find((m) => m.direction === dir && m.error === 'bad_frame');
    assert.equal(bad?.errorDetail, detail);
    assert.equal(messages.some((m) => m.body === 'Hello hello hello'), false, 'nothing inflated');
    assert.equal(await badFrames(), before + 1, `${detail}: counted once`);
  }
});

test('ws peers with server_no_context_takeover alone, client_no_context_takeover alone, 10 window bits: captured exactly', async () => {
  for (const path of ['/snoctx', '/cnoctx', '/bits10']) {
    const msgs = Array.from({ length: 80 }, (_, i) => words(i));
    const c = await openClient(g, path, 'http');
    for (const m of msgs) c.ws.send(m);
    await waitFor(() => c.received.length === msgs.length, `${path} echoes`);
    await closeClient(c);
    const { messages } = await capturedMessages(g, c.tag, (ms) => ms.filter((m) => m.opcode === 'close').length >= 2);
    await assertPlain(messages, 'client', msgs);
    await assertPlain(messages, 'server', msgs);
  }
});
