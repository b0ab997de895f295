// The interception CA and leaves against real verifiers: Node's tls, curl (OpenSSL), Python's ssl,
// and the openssl CLI — through a real TLS server on 127.0.0.1 that picks contexts like the listener
// will (SNICallback for names, the local IP when the client sends no SNI).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { loadOrCreateCA, readCaPem, upstreamCaList, type CertAuthority } from '../../src/io/tls-intercept.js';
import { ConfigError } from '../../src/config.js';
import { certCache } from '../../src/metrics.js';
import { makeTestPki } from '../helpers/test-ca.js';

const run = promisify(execFile);
const DAY = 86_400_000;
let tmp: string;
let ca: CertAuthority;
let server: net.Server;
let port: number;
let port6: number | undefined;
let server6: net.Server | undefined;

/** A TLS server answering one tiny HTTP response; context per SNI, or per local IP without SNI. */
function startServer(host: string): Promise<net.Server> {
  const srv = net.createServer((raw) => {
    const sock = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: ca.secureContextFor(raw.localAddress!),
      SNICallback: (name, cb) => {
        try {
          cb(null, ca.secureContextFor(name));
        } catch (e) {
          cb(e as Error);
        }
      },
    });
    let head = '';
    sock.on('data', (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) sock.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve(srv));
  });
}

function connect(opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(opts, () => resolve(s));
    s.once('error', reject);
  });
}

async function cacheCount(result: 'hit' | 'miss'): Promise<number> {
  return (await certCache.get()).values.find((v) => v.labels.result === result)?.value ?? 0;
}

const toPem = (der: Buffer) => new crypto.X509Certificate(der).toString();

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'greytap-tls-test-'));
  ca = loadOrCreateCA(path.join(tmp, 'data'));
  server = await startServer('127.0.0.1');
  port = (server.address() as net.AddressInfo).port;
  try {
    server6 = await startServer('::1');
    port6 = (server6.address() as net.AddressInfo).port;
  } catch {
    server6 = undefined; // no IPv6 loopback on this machine: the IPv6 SAN is still checked offline below
  }
});

after(() => {
  server.close();
  server6?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('CA files: dir 0700, key 0600, reused on the next load; readCaPem returns the same CA', () => {
  const dir = path.join(tmp, 'data', 'ca');
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(dir, 'greytap-ca-key.pem')).mode & 0o777, 0o600);
  assert.equal(ca.caCertPath, path.join(dir, 'greytap-ca.pem'));
  assert.equal(fs.readFileSync(ca.caCertPath, 'utf8'), ca.caCertPem);
  const again = loadOrCreateCA(path.join(tmp, 'data'));
  assert.equal(again.caCertPem, ca.caCertPem);
  assert.equal(readCaPem(path.join(tmp, 'data')), ca.caCertPem);

  const x = new crypto.X509Certificate(ca.caCertPem);
  assert.ok(x.ca, 'basicConstraints CA:true');
  assert.equal(x.subject, `CN=greytap CA ${os.hostname()}\nO=greytap`);
  assert.ok(x.verify(x.publicKey), 'self-signed');
  const years = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / (365 * DAY);
  assert.ok(years > 9.9 && years < 10.1, `~10 years, got ${years}`);
});

test('readCaPem creates the CA when missing; a widened key mode is tightened', () => {
  const d = path.join(tmp, 'fresh');
  const pem = readCaPem(d);
  assert.match(pem, /^-----BEGIN CERTIFICATE-----/);
  fs.chmodSync(path.join(d, 'ca', 'greytap-ca-key.pem'), 0o644);
  assert.equal(loadOrCreateCA(d).caCertPem, pem);
  assert.equal(fs.statSync(path.join(d, 'ca', 'greytap-ca-key.pem')).mode & 0o777, 0o600);
});

test('broken CA files give a clear error instead of a silent new CA', () => {
  const d = path.join(tmp, 'broken');
  readCaPem(d);
  fs.writeFileSync(path.join(d, 'ca', 'greytap-ca-key.pem'), 'not a key');
  assert.throws(() => loadOrCreateCA(d), /CA key .*greytap-ca-key\.pem is unreadable or invalid.*delete/);
  const other = path.join(tmp, 'other');
  readCaPem(other);
  fs.copyFileSync(path.join(other, 'ca', 'greytap-ca-key.pem'), path.join(d, 'ca', 'greytap-ca-key.pem'));
  assert.throws(() => loadOrCreateCA(d), /does not match/);
  // the certificate gone, the key still there: refused, not replaced by a new CA clients do not trust
  fs.rmSync(path.join(d, 'ca', 'greytap-ca.pem'));
  assert.throws(() => loadOrCreateCA(d), /CA key .* is there but its certificate .* is not/);
  assert.equal(fs.existsSync(path.join(d, 'ca', 'greytap-ca.pem')), false);
});

test('Node tls with SNI verifies the leaf; SAN, CN, validity and extensions are right', async () => {
  const s = await connect({ host: '127.0.0.1', port, servername: 'api.example.test', ca: ca.caCertPem });
  try {
    assert.equal(s.authorized, true);
    const peer = s.getPeerCertificate();
    assert.equal(peer.subjectaltname, 'DNS:api.example.test');
    assert.equal(peer.subject.CN, 'api.example.test');
    const x = new crypto.X509Certificate(peer.raw);
    assert.ok(!x.ca);
    assert.ok(x.checkIssued(new crypto.X509Certificate(ca.caCertPem)));
    assert.equal(x.keyUsage?.join(','), '1.3.6.1.5.5.7.3.1', 'extKeyUsage serverAuth');
    const from = Date.parse(x.validFrom);
    const to = Date.parse(x.validTo);
    assert.ok(from < Date.now() - DAY / 2, 'backdated ~1 day');
    assert.ok(to - from <= 397 * DAY, 'Chromium rejects > 398 days');
    const firstByte = parseInt(x.serialNumber.slice(0, 2), 16);
    assert.ok(x.serialNumber.length % 2 === 0 && firstByte >= 0x01 && firstByte <= 0x7f, `serial first byte 0x01-0x7f: ${x.serialNumber}`);
  } finally {
    s.destroy();
  }
});

test('a name the leaf does not cover is rejected by the client', async () => {
  const s = await connect({ host: '127.0.0.1', port, servername: 'a.example.test', ca: ca.caCertPem, checkServerIdentity: () => undefined });
  const peer = s.getPeerCertificate();
  s.destroy();
  assert.ok(tls.checkServerIdentity('b.example.test', peer) instanceof Error);
  await assert.rejects(connect({ host: '127.0.0.1', port, servername: 'api.example.test', ca: tls.rootCertificates as string[] }), /unable to verify|self.signed|issuer/i);
});

test('real curl (OpenSSL) verifies with --cacert and --resolve', async () => {
  const r = await run('curl', ['-sS', '--max-time', '10', '--cacert', ca.caCertPath, '--resolve', `api.example.test:${port}:127.0.0.1`, `https://api.example.test:${port}/`]);
  assert.equal(r.stdout, 'ok');
  // Upper-case host: names are case-insensitive.
  const r2 = await run('curl', ['-sS', '--max-time', '10', '--cacert', ca.caCertPath, '--resolve', `API.Example.TEST:${port}:127.0.0.1`, `https://API.Example.TEST:${port}/`]);
  assert.equal(r2.stdout, 'ok');
});

test('IP literal without SNI gets an iPAddress SAN that Node verifies', async () => {
  const s = await connect({ host: '127.0.0.1', port, ca: ca.caCertPem }); // Node sends no SNI for an IP
  try {
    assert.equal(s.authorized, true);
    const peer = s.getPeerCertificate();
    assert.equal(peer.subjectaltname, 'IP Address:127.0.0.1');
    assert.equal(tls.checkServerIdentity('127.0.0.1', peer), undefined);
    assert.ok(tls.checkServerIdentity('127.0.0.2', peer) instanceof Error);
  } finally {
    s.destroy();
  }
});

test('IPv6 literal: iPAddress SAN of 16 bytes', async () => {
  const leaf = new crypto.X509Certificate(ca.issueLeaf(['[2001:DB8:0:0::1]']).cert);
  assert.equal(leaf.checkIP('2001:db8::1'), '2001:db8::1');
  assert.equal(leaf.subject, 'CN=2001:db8::1');
  if (port6 === undefined) return;
  const s = await connect({ host: '::1', port: port6, ca: ca.caCertPem });
  try {
    assert.equal(s.authorized, true);
    assert.equal(s.getPeerCertificate().subjectaltname, 'IP Address:0:0:0:0:0:0:0:1');
  } finally {
    s.destroy();
  }
});

test('Python ssl verifies both a host name and an IP literal', async () => {
  const py = `
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for name in (sys.argv[3], '127.0.0.1'):
    with socket.create_connection(('127.0.0.1', int(sys.argv[2]))) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
            data = b''
            while True:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            print(name, s.version(), data.split(b'\\r\\n\\r\\n', 1)[1].decode())
`;
  const r = await run('/usr/bin/python3', ['-c', py, ca.caCertPath, String(port), 'py.example.test']);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0], /^py\.example\.test TLSv1\.[23] ok$/);
  assert.match(lines[1], /^127\.0\.0\.1 TLSv1\.[23] ok$/);
});

test('openssl parses the served leaf and `openssl verify -CAfile -x509_strict` passes', async () => {
  const s = await connect({ host: '127.0.0.1', port, servername: 'verify.example.test', ca: ca.caCertPem });
  const der = s.getPeerCertificate().raw;
  s.destroy();
  const leafPath = path.join(tmp, 'leaf.pem');
  fs.writeFileSync(leafPath, toPem(der));
  const text = (await run('openssl', ['x509', '-noout', '-text', '-in', leafPath])).stdout;
  assert.match(text, /DNS:verify\.example\.test/);
  assert.match(text, /CA:FALSE/);
  assert.match(text, /Key Usage: critical\s+Digital Signature/);
  assert.match(text, /TLS Web Server Authentication/);
  assert.match(text, /Authority Key Identifier/);
  assert.match(text, /Subject Key Identifier/);
  assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  const v = await run('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-verify_hostname', 'verify.example.test', '-CAfile', ca.caCertPath, leafPath]);
  assert.match(v.stdout, /: OK/);
  const caText = (await run('openssl', ['x509', '-noout', '-text', '-in', ca.caCertPath])).stdout;
  assert.match(caText, /Basic Constraints: critical\s+CA:TRUE/);
  assert.match(caText, /Certificate Sign, CRL Sign/);
});

test('cert cache: second lookup is a hit, names are normalised, one certificate for concurrent first handshakes', async () => {
  const [h0, m0] = [await cacheCount('hit'), await cacheCount('miss')];
  const a = ca.secureContextFor('cache.example.test');
  assert.equal(ca.secureContextFor('cache.example.test'), a);
  assert.equal(ca.secureContextFor('CACHE.Example.Test.'), a);
  assert.equal(await cacheCount('miss'), m0 + 1);
  assert.equal(await cacheCount('hit'), h0 + 2);
  // IPv6 spellings share one entry; an IPv4-mapped address is its IPv4 address.
  assert.equal(ca.secureContextFor('[2001:DB8:0::1]'), ca.secureContextFor('2001:db8::1'));
  assert.equal(ca.secureContextFor('::ffff:127.0.0.1'), ca.secureContextFor('127.0.0.1'));

  // Two clients racing for a host never seen: one miss, one hit, the same certificate.
  const m1 = await cacheCount('miss');
  const [s1, s2] = await Promise.all([1, 2].map(() => connect({ host: '127.0.0.1', port, servername: 'race.example.test', ca: ca.caCertPem })));
  const [c1, c2] = [s1.getPeerCertificate(), s2.getPeerCertificate()];
  s1.destroy();
  s2.destroy();
  assert.equal(c1.serialNumber, c2.serialNumber);
  assert.equal(await cacheCount('miss'), m1 + 1);
});

test('leaves share one key pair; the LRU is bounded', async () => {
  const k1 = new crypto.X509Certificate(ca.issueLeaf(['one.test']).cert).publicKey.export({ type: 'spki', format: 'der' });
  const k2 = new crypto.X509Certificate(ca.issueLeaf(['two.test']).cert).publicKey.export({ type: 'spki', format: 'der' });
  assert.deepEqual(k1, k2);

  const small = loadOrCreateCA(path.join(tmp, 'data'), { cacheSize: 2 });
  const m0 = await cacheCount('miss');
  const a = small.secureContextFor('a.test');
  small.secureContextFor('b.test');
  assert.equal(small.secureContextFor('a.test'), a, 'a is still cached and now most recent');
  small.secureContextFor('c.test'); // evicts b
  assert.equal(small.secureContextFor('a.test'), a);
  small.secureContextFor('b.test');
  assert.equal(await cacheCount('miss'), m0 + 4, 'a, b, c, then b again');
});

test('a server name that cannot be a dNSName is refused with a clear error, and the handshake fails cleanly', async () => {
  assert.throws(() => ca.secureContextFor('bad name!'), /cannot issue a certificate for server name "bad name!"/);
  assert.throws(() => ca.secureContextFor(''), /cannot issue/);
  assert.throws(() => ca.secureContextFor('a'.repeat(64) + '.test'), /cannot issue/);
  await assert.rejects(connect({ host: '127.0.0.1', port, servername: 'under_score..test', ca: ca.caCertPem }));
  // The server keeps serving others.
  const s = await connect({ host: '127.0.0.1', port, servername: 'still.example.test', ca: ca.caCertPem });
  assert.equal(s.authorized, true);
  s.destroy();
});

test('long names (CN limit 64) go in the SAN only, with a critical SAN', () => {
  const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.example.test`;
  const x = new crypto.X509Certificate(ca.issueLeaf([long]).cert);
  assert.equal(x.subject, undefined);
  assert.equal(x.checkHost(long), long);
});

test('makeTestPki: an upstream server with its own CA, trusted through upstreamCaList', async () => {
  const pki = makeTestPki();
  try {
    const srv = tls.createServer({ ...pki.serverContext(['upstream.test', '127.0.0.1']) }, (s) => s.end('hi'));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const p = (srv.address() as net.AddressInfo).port;
    const trust = upstreamCaList([pki.caPath]);
    assert.equal(trust.length, upstreamCaList([]).length + 1);
    const s = await connect({ host: '127.0.0.1', port: p, servername: 'upstream.test', ca: trust });
    assert.equal(s.authorized, true);
    s.destroy();
    await assert.rejects(connect({ host: '127.0.0.1', port: p, servername: 'upstream.test', ca: ca.caCertPem }));
    srv.close();
  } finally {
    pki.cleanup();
  }
  assert.equal(fs.existsSync(pki.dir), false);
});

test('upstreamCaList: several certs per file; unreadable or invalid files throw a clear error', () => {
  const two = path.join(tmp, 'two.pem');
  fs.writeFileSync(two, `comment line\n${ca.caCertPem}\n${readCaPem(path.join(tmp, 'fresh'))}`);
  assert.equal(upstreamCaList([two]).length, upstreamCaList([]).length + 2);
  assert.throws(() => upstreamCaList([path.join(tmp, 'missing.pem')]), /--upstream-ca .*missing\.pem: cannot read \(ENOENT\)/);
  const empty = path.join(tmp, 'empty.pem');
  fs.writeFileSync(empty, 'hello');
  assert.throws(() => upstreamCaList([empty]), /empty\.pem: no PEM certificate/);
  const bad = path.join(tmp, 'bad.pem');
  fs.writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  assert.throws(() => upstreamCaList([bad]), /bad\.pem: certificate #1 is invalid/);
  assert.throws(() => upstreamCaList([tmp]), /cannot read \(EISDIR\)/);
  // the trust files named by the environment are checked the same way, and say where they were named
  assert.throws(() => upstreamCaList([], { SSL_CERT_FILE: empty }), (e: Error) => e instanceof ConfigError && /^SSL_CERT_FILE .*empty\.pem: no PEM certificate/.test(e.message));
  assert.throws(() => upstreamCaList([], { NODE_EXTRA_CA_CERTS: path.join(tmp, 'missing.pem') }), /NODE_EXTRA_CA_CERTS .*missing\.pem: cannot read \(ENOENT\)/);
  // SSL_CERT_FILE stands for the system bundle, as in OpenSSL: Node's roots + its certificates
  assert.equal(upstreamCaList([], { SSL_CERT_FILE: two }).length, tls.rootCertificates.length + 2);
});

test('cost of one leaf (build + sign + SecureContext), printed for the record', () => {
  const times: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t = process.hrtime.bigint();
    ca.secureContextFor(`cost-${i}.example.test`);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  console.log(`# leaf: median ${times[100].toFixed(3)} ms, p90 ${times[180].toFixed(3)} ms over 200 names`);
  assert.equal(times.length, 200);
});
