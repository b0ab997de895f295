// Independent WebSocket implementations through greytap: Python `websockets` (client and server)
// and headless Chromium. Their compression and fragmentation are not the `ws` package's, so exact
// capture here shows the decoder follows the RFCs, not one library's habits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type https from 'node:https';
import { chromium } from 'playwright-core';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, tmpDir, waitFor, type Greytap } from '../helpers/harness.js';
import { startWsOrigin, openClient, closeClient, capturedMessages, payloadOf } from './ws-helpers.js';

const PY = '/usr/bin/python3';
const SCRIPT = join(process.cwd(), 'test/ws/py_ws_peer.py');
const pki = makeTestPki();
let g: Greytap;
let origin: https.Server;
let pyServer: ReturnType<typeof spawn>;
const dir = tmpDir();

before(async () => {
  const o = await startWsOrigin(pki, ['ws.test', 'py.test']);
  origin = o.server;
  const { key, cert } = pki.serverContext(['py.test']) as { key: string; cert: string };
  writeFileSync(join(dir, 'key.pem'), key);
  writeFileSync(join(dir, 'cert.pem'), cert);
  pyServer = spawn(PY, [SCRIPT, 'server', join(dir, 'cert.pem'), join(dir, 'key.pem')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pyPort = await new Promise<number>((resolve, reject) => {
    pyServer.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    pyServer.once('exit', (c) => reject(new Error(`python server exited ${c}`)));
  });
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `ws.test:443=127.0.0.1:${o.port}`, '--map', `py.test:443=127.0.0.1:${pyPort}`]);
});
after(async () => {
  pyServer?.kill();
  await g?.stop();
  origin?.closeAllConnections();
  origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('Python websockets client through SOCKS5 → ws origin: every message captured exactly', async () => {
  const tag = 'python-client';
  const out = await new Promise<string>((resolve, reject) =>
    execFile(PY, [SCRIPT, 'client', g.socks, 'ws.test', `/ctx?t=${tag}`, g.caPath, '300'], { maxBuffer: 64 << 20 }, (e, so, se) => (e ? reject(new Error(se || e.message)) : resolve(so))));
  const report = JSON.parse(out);
  assert.equal(report.ok, true, 'python saw its echoes intact');
  assert.match(report.extensions, /permessage-deflate/);
  const sent: (string | Buffer)[] = report.sent.map((m: any) => (typeof m === 'string' ? m : Buffer.from(m.b64, 'base64')));
  const { messages } = await capturedMessages(g, tag, (ms) => ms.filter((m) => m.opcode === 'close').length >= 2);
  for (const dir of ['client', 'server']) {
    const data = messages.filter((m) => m.direction === dir && (m.opcode === 'text' || m.opcode === 'binary'));
    assert.equal(data.length, sent.length, `${dir} messages`);
    for (const [i, m] of data.entries()) {
      assert.equal(m.error, undefined, `${dir} #${i} ${m.error}`);
      assert.equal(m.compressed, true);
      assert.deepEqual(await payloadOf(g, m), sent[i], `${dir} #${i}`);
    }
  }
  const close = messages.find((m) => m.opcode === 'close' && m.direction === 'client');
  assert.deepEqual([close.closeCode, close.closeReason], [1000, 'python done']);
});

test('ws client through HTTP CONNECT → Python websockets server: compression negotiated by Python, captured exactly', async () => {
  const c = await openClient(g, '/', 'http', {}, 'py.test');
  const msgs = Array.from({ length: 200 }, (_, i) => JSON.stringify({ type: 'response.output_text.delta', delta: 'token '.repeat(i % 11 + 1), i }));
  for (const m of msgs) c.ws.send(m);
  await waitFor(() => c.received.length === msgs.length, 'echoes from python');
  assert.match(c.ws.extensions, /permessage-deflate/);
  await closeClient(c);
  const { messages } = await capturedMessages(g, c.tag, (ms) => ms.filter((m) => m.opcode === 'close').length >= 2);
  const server = messages.filter((m) => m.direction === 'server' && m.opcode === 'text');
  assert.equal(server.length, msgs.length);
  for (const [i, m] of server.entries()) {
    assert.equal(m.error, undefined, `#${i} ${m.error} ${m.errorDetail ?? ''}`);
    assert.equal(await payloadOf(g, m), msgs[i]);
  }
});

test('headless Chromium through SOCKS5 opens wss:// from a page: its handshake and compression are captured exactly', async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--proxy-server=socks5://${g.socks}`, '--ignore-certificate-errors'],
  });
  try {
    const page = await browser.newPage();
    await page.goto('https://ws.test/page', { timeout: 30_000 });
    await page.waitForFunction(() => document.title.startsWith('done:') || document.title === 'error', null, { timeout: 30_000 });
    const title = await page.title();
    assert.match(title, /^done:permessage-deflate/);
  } finally { await browser.close(); }
  const { messages, upgrade } = await capturedMessages(g, 'browser', (ms) => ms.filter((m) => m.direction === 'server' && m.opcode === 'text').length >= 50);
  const reqExt = upgrade.reqHeaders.find(([n]: [string]) => n.toLowerCase() === 'sec-websocket-extensions');
  assert.match(reqExt[1], /permessage-deflate/, 'Chromium offered compression and the offer was kept');
  const client = messages.filter((m) => m.direction === 'client' && m.opcode === 'text');
  assert.equal(client.length, 50);
  for (const [i, m] of client.entries()) {
    assert.equal(m.error, undefined);
    assert.equal(m.compressed, true);
    assert.deepEqual(JSON.parse(String(await payloadOf(g, m))), { type: 'response.create', i, text: 'browser message '.repeat(i % 7 + 1) });
  }
});
