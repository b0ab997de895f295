// What the tunnel reads from a client's TLS ClientHello, with real clients through a real greytap:
// a hello fragmented over several records (OpenSSL past -max_send_frag) still yields its SNI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http2 from 'node:http2';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { execFile } from 'node:child_process';
import { makeTestPki } from '../helpers/test-ca.js';
import { startGreytap, apiGet, waitFor, connectTunnel, type Greytap } from '../helpers/harness.js';
import { classifyFirstBytes } from '../../src/io/client-hello.js';

// 245 characters: with OpenSSL's long cipher list the server_name extension straddles byte 512,
// the end of the first record when the client fragments at 512.
const LONG = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(48)}.test`;
const pki = makeTestPki();
let origin: https.Server;
let g: Greytap;
let originPort = 0;

before(async () => {
  origin = https.createServer(pki.serverContext([LONG, 'frag.test']), (req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as net.AddressInfo).port;
  g = await startGreytap(['--upstream-ca', pki.caPath, '--map', `${LONG}:443=127.0.0.1:${originPort}`]);
});

after(async () => {
  await g?.stop();
  origin?.close();
});

function sh(cmd: string): Promise<string> {
  return new Promise((resolve) => execFile('sh', ['-c', cmd], { timeout: 20_000 }, (_e, out, err) => resolve(out + err)));
}

/** The bytes a real Node TLS client sends first (its ClientHello), captured by a TCP server. */
function realClientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = net.createServer((s) => {
      s.once('data', (d: Buffer) => { resolve(d); s.destroy(); srv.close(); });
    });
    srv.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', servername });
      c.on('error', () => {});
    });
  });
}

/** The same handshake message re-framed into records of at most `size` bytes. */
function refragment(record: Buffer, size: number): Buffer {
  const msg = record.subarray(5, 5 + record.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < msg.length; i += size) {
    const frag = msg.subarray(i, i + size);
    out.push(Buffer.from([0x16, 3, 1, frag.length >> 8, frag.length & 0xff]), frag);
  }
  return Buffer.concat(out);
}

test('real openssl fragmenting its ClientHello at 512 bytes: the leaf and the upstream SNI carry the whole name', async () => {
  const out = await sh(
    `printf 'GET /fragmented HTTP/1.1\\r\\nHost: ${LONG}\\r\\nConnection: close\\r\\n\\r\\n' | ` +
    `openssl s_client -quiet -proxy ${g.httpProxy} -connect ${LONG}:443 -servername ${LONG} -CAfile ${g.caPath} ` +
    `-verify_hostname ${LONG} -verify_return_error -max_send_frag 512 -cipher 'ALL:COMPLEMENTOFALL:@SECLEVEL=0' 2>&1`,
  );
  assert.match(out, /hello \/fragmented/, out);
  const tx = await waitFor(async () => {
    await g.drain();
    return (await apiGet(g, `/api/transactions?kind=HTTP&host=${LONG}`)).items[0];
  }, 'the fragmented-hello transaction');
  const conn = await apiGet(g, `/api/connections/${tx.conn}`);
  assert.equal(conn.sni, LONG);
});

test('a real ClientHello split into records of any size yields the same SNI; a cut name is no name', async () => {
  const hello = await realClientHello('frag.test');
  assert.deepEqual(classifyFirstBytes(hello), { kind: 'tls', sni: 'frag.test' });
  for (let size = 1; size <= 300; size++) {
    const framed = refragment(hello, size);
    assert.deepEqual(classifyFirstBytes(framed), { kind: 'tls', sni: 'frag.test' }, `records of ${size} bytes`);
    // every proper prefix is incomplete: wait for more, never guess a name
    for (const cut of [framed.length - 1, Math.floor(framed.length / 2)]) {
      assert.deepEqual(classifyFirstBytes(framed.subarray(0, cut)), { kind: 'need-more' }, `records of ${size}, cut at ${cut}`);
    }
  }
  // a hello whose first record ends inside the name, followed by something that is no handshake record
  const at = hello.indexOf('frag.test') - 5 + 4;
  const firstRecord = refragment(hello, at).subarray(0, 5 + at);
  const r = classifyFirstBytes(Buffer.concat([firstRecord, Buffer.from([0x17, 3, 3, 0, 1, 0])]));
  assert.deepEqual(r, { kind: 'tls', sni: undefined });
});

test('a non-ASCII server name is read as the client sent it, not turned into another name', async () => {
  const hello = await realClientHello('\u00f0\u00f0.test'); // Node sends its UTF-8 bytes (c3 b0 c3 b0)
  assert.ok(hello.includes(Buffer.from('\u00f0\u00f0.test')), 'the hello carries the UTF-8 bytes');
  assert.deepEqual(classifyFirstBytes(hello), { kind: 'tls', sni: '\u00f0\u00f0.test' });
});

test('SOCKS5 to an IP with the name only in the SNI (curl --socks5), hello in 64-byte records: leaf and upstream use the name', async () => {
  // A Node TLS client whose first flight is re-framed into 64-byte records on its way to the proxy.
  const [h, p] = g.socks.split(':');
  const raw = net.connect(Number(p), h);
  raw.on('error', () => {});
  await new Promise<void>((r) => raw.once('connect', r));
  raw.write(Buffer.from([5, 1, 0]));
  raw.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, originPort >> 8, originPort & 0xff]));
  let reply = Buffer.alloc(0);
  await new Promise<void>((r) => {
    const onData = (d: Buffer) => { reply = Buffer.concat([reply, d]); if (reply.length >= 12) { raw.off('data', onData); r(); } };
    raw.on('data', onData);
  });
  assert.equal(reply[3], 0, 'SOCKS5 CONNECT succeeded');
  let first = true;
  const shim = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      raw.write(first ? refragment(chunk, 64) : chunk);
      first = false;
      cb();
    },
  });
  raw.on('data', (d: Buffer) => shim.push(d));
  raw.on('end', () => shim.push(null));
  const c = tls.connect({ socket: shim, servername: 'frag.test', ca: readFileSync(g.caPath, 'utf8') });
  await new Promise<void>((resolve, reject) => { c.once('secureConnect', resolve); c.once('error', reject); });
  c.write('GET /socks-fragmented HTTP/1.1\r\nHost: frag.test\r\nConnection: close\r\n\r\n');
  let body = '';
  c.on('data', (d: Buffer) => { body += d.toString(); });
  await new Promise((r) => c.once('end', r));
  assert.match(body, /^HTTP\/1\.1 200[\s\S]*hello \/socks-fragmented$/);
  c.destroy();
  raw.destroy();
});

test('ALPN: a client offering h2 only (Node http2) is tunnelled raw and works; h2 + http/1.1 is intercepted as http/1.1', async () => {
  const h2origin = http2.createSecureServer({ ...pki.serverContext(['h2only.test']), allowHTTP1: true }, (req, res) => res.end(`${req.httpVersion} ${req.url}`));
  await new Promise<void>((r) => h2origin.listen(0, '127.0.0.1', r));
  const port = (h2origin.address() as net.AddressInfo).port;
  const g2 = await startGreytap(['--upstream-ca', pki.caPath, '--map', `h2only.test:443=127.0.0.1:${port}`]);
  try {
    // h2 only: greytap cannot speak it, so it must not answer no_application_protocol but step aside
    const rawTunnels = async (gt: Greytap) => Number(/^greytap_connections_total\{listener="http",intercepted="false"\} (\d+)/m.exec(await (await fetch(`${gt.api}/metrics`)).text())?.[1]);
    const rawBefore = await rawTunnels(g2);
    const tunnel = await connectTunnel(g2.httpProxy, 'h2only.test:443');
    const session = http2.connect('https://h2only.test', { createConnection: () => tls.connect({ socket: tunnel, servername: 'h2only.test', ALPNProtocols: ['h2'], ca: readFileSync(pki.caPath, 'utf8') }) });
    session.on('error', () => {});
    const body = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/over-h2' });
      let b = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => { b += d; });
      req.on('end', () => resolve(b));
      req.on('error', reject);
      req.end();
    });
    session.close();
    assert.equal(body, '2.0 /over-h2');
    assert.equal(await rawTunnels(g2), rawBefore + 1, 'counted as a tunnel greytap did not intercept');
    // h2 and http/1.1 offered: intercepted, http/1.1 negotiated with the client
    const t2 = await connectTunnel(g2.httpProxy, 'h2only.test:443');
    const c = tls.connect({ socket: t2, servername: 'h2only.test', ALPNProtocols: ['h2', 'http/1.1'], ca: readFileSync(g2.caPath, 'utf8') });
    await new Promise<void>((resolve, reject) => { c.once('secureConnect', resolve); c.once('error', reject); });
    assert.equal(c.alpnProtocol, 'http/1.1');
    c.write('GET /over-h1 HTTP/1.1\r\nHost: h2only.test\r\nConnection: close\r\n\r\n');
    let out = '';
    c.on('data', (d: Buffer) => { out += d.toString(); });
    await new Promise((r) => c.once('end', r));
    assert.match(out, /1\.1 \/over-h1$/);
  } finally {
    await g2.stop();
    h2origin.close();
  }
});

test('plaintext HTTP in a tunnel is told by its method, any letters-and-dashes token (M-SEARCH, a long PROPPATCH); other protocols are not', () => {
  const kind = (s: string) => classifyFirstBytes(Buffer.from(s, 'latin1')).kind;
  for (const m of ['GET', 'M-SEARCH', 'PROPPATCH', 'VERSION-CONTROL', 'BASELINE-CONTROL']) assert.equal(kind(`${m} /x HTTP/1.1\r\n`), 'http', m);
  assert.equal(kind('BASELINE-CONT'), 'need-more', 'a method not yet whole');
  assert.equal(kind('A001 LOGIN me pw\r\n'), 'other', 'an IMAP tag');
  assert.equal(kind('SSH-2.0-OpenSSH_9.6\r\n'), 'other');
});
