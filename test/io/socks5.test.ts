// SOCKS5 handshake playbooks (bytes in → steps out), then real curl through a minimal listener built
// on the state machine to prove real clients' byte sequences parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { REP, Socks5Handshake, socks5Reply, replyForDialError, ipToBytes, MAX_HANDSHAKE_MESSAGE, type Socks5Step } from '../../src/io/socks5.js';

const run = promisify(execFile);
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const str = (s: string) => Buffer.from(s, 'latin1');
const cat = (...b: Buffer[]) => Buffer.concat(b);
const lenStr = (s: string) => cat(Buffer.from([Buffer.byteLength(s)]), Buffer.from(s));
const port = (p: number) => Buffer.from([p >> 8, p & 0xff]);

const USERS = [{ user: 'agent-1', pass: 's3cret' }, { user: 'agent-2', pass: 'other' }];
const NOAUTH_HELLO = hex('05 01 00');
const AUTH_HELLO = hex('05 02 00 02');
const authMsg = (u: string, p: string) => cat(hex('01'), lenStr(u), lenStr(p));
const reqIPv4 = (ip: number[], p: number, cmd = 1) => cat(Buffer.from([5, cmd, 0, 1, ...ip]), port(p));
const reqDomain = (d: string, p: number) => cat(hex('05 01 00 03'), lenStr(d), port(p));
const reqIPv6 = (b: Buffer, p: number) => cat(hex('05 01 00 04'), b, port(p));

/**
 * Feeds chunks like a listener would: once the handshake yields 'request', later chunks are payload
 * (appended to that step's rest). Returns every write (concatenated) and the last step.
 */
function drive(users: typeof USERS | null, chunks: Buffer[]): { writes: Buffer; last: Socks5Step; steps: Socks5Step[] } {
  const hs = new Socks5Handshake({ users });
  const steps: Socks5Step[] = [];
  for (const c of chunks) {
    const done = steps[steps.length - 1];
    if (done?.type === 'request') done.rest = cat(done.rest, c);
    else steps.push(hs.push(c));
  }
  const writes = cat(...steps.map((s) => s.write ?? Buffer.alloc(0)));
  return { writes, last: steps[steps.length - 1], steps };
}

/** Every way to deliver `bytes`: whole, split in two at each offset, one byte at a time. */
function deliveries(bytes: Buffer): Buffer[][] {
  const out: Buffer[][] = [[bytes]];
  for (let i = 0; i <= bytes.length; i++) out.push([bytes.subarray(0, i), bytes.subarray(i)]);
  out.push([...bytes].map((b) => Buffer.from([b])));
  return out;
}

function assertRequest(step: Socks5Step, want: object, rest: Buffer = Buffer.alloc(0)) {
  assert.equal(step.type, 'request', JSON.stringify(step));
  if (step.type !== 'request') return;
  assert.deepEqual(step.request, want);
  assert.deepEqual(step.rest, rest);
}

test('no-auth: method selection reply, then an IPv4 CONNECT', () => {
  const hs = new Socks5Handshake({ users: null });
  assert.deepEqual(hs.push(NOAUTH_HELLO), { type: 'need-more', write: hex('05 00') });
  const s = hs.push(reqIPv4([127, 0, 0, 1], 443));
  assertRequest(s, { cmd: 1, host: '127.0.0.1', port: 443, atyp: 'ipv4' });
  assert.equal(s.write, undefined, 'the CONNECT reply is the listener\'s, after dialing');
});

test('client offering several methods gets the one we require', () => {
  assert.deepEqual(new Socks5Handshake({ users: null }).push(hex('05 03 01 02 00')), { type: 'need-more', write: hex('05 00') });
  assert.deepEqual(new Socks5Handshake({ users: USERS }).push(hex('05 03 00 01 02')), { type: 'need-more', write: hex('05 02') });
});

test('username/password ok: RFC 1929 status 0, user recorded on the request', () => {
  const hs = new Socks5Handshake({ users: USERS });
  assert.deepEqual(hs.push(AUTH_HELLO), { type: 'need-more', write: hex('05 02') });
  assert.deepEqual(hs.push(authMsg('agent-2', 'other')), { type: 'need-more', write: hex('01 00') });
  assertRequest(hs.push(reqDomain('api.openai.com', 443)), { cmd: 1, host: 'api.openai.com', port: 443, atyp: 'domain', user: 'agent-2' });
});

test('username/password wrong: status 1 then close; unknown user too', () => {
  for (const [u, p] of [['agent-1', 'nope'], ['agent-1', 'other'], ['mallory', 's3cret'], ['', '']]) {
    const { writes, last } = drive(USERS, [AUTH_HELLO, authMsg(u, p)]);
    assert.deepEqual(writes, hex('05 02 01 01'));
    assert.equal(last.type, 'error');
    assert.ok(last.type === 'error' && last.close && /authentication failed/.test(last.detail));
  }
});

test('method mismatch: 0xFF rejection and close', () => {
  const a = drive(USERS, [NOAUTH_HELLO]); // we require auth, client offers none
  assert.deepEqual(a.writes, hex('05 ff'));
  assert.ok(a.last.type === 'error' && /no acceptable auth method/.test(a.last.detail));
  const b = drive(null, [hex('05 01 02')]); // no-auth server, client offers only user/pass
  assert.deepEqual(b.writes, hex('05 ff'));
  const c = drive(null, [hex('05 00')]); // NMETHODS = 0
  assert.deepEqual(c.writes, hex('05 ff'));
  assert.equal(c.last.type, 'error');
});

test('bad RFC 1929 subnegotiation version', () => {
  const { writes, last } = drive(USERS, [AUTH_HELLO, hex('05 01 00')]);
  assert.deepEqual(writes, hex('05 02 01 01'));
  assert.ok(last.type === 'error' && /subnegotiation version/.test(last.detail));
});

test('IPv6 addresses are formatted canonically (compressed, as net prints them)', () => {
  const cases: [string, string][] = [
    ['20010db8000000000000000000000001', '2001:db8::1'],
    ['00000000000000000000000000000001', '::1'],
    ['00000000000000000000ffff01020304', '::ffff:1.2.3.4'],
    ['20010DB8000000010000000000000001', '2001:db8:0:1::1'],
    ['fe800000000000000000000000000000', 'fe80::'],
    ['00010000000000020000000000000003', '1:0:0:2::3'],
  ];
  for (const [bytes, want] of cases) {
    const { last } = drive(null, [NOAUTH_HELLO, reqIPv6(hex(bytes), 8080)]);
    assertRequest(last, { cmd: 1, host: want, port: 8080, atyp: 'ipv6' });
    assert.deepEqual(ipToBytes(want), hex(bytes), 'round trip');
  }
});

test('domain names keep their text; empty or control bytes are refused with REP 1', () => {
  assertRequest(drive(null, [NOAUTH_HELLO, reqDomain('Chat.Example.TEST', 80)]).last, { cmd: 1, host: 'Chat.Example.TEST', port: 80, atyp: 'domain' });
  assertRequest(drive(null, [NOAUTH_HELLO, reqDomain('x'.repeat(255), 1)]).last, { cmd: 1, host: 'x'.repeat(255), port: 1, atyp: 'domain' });
  for (const bad of ['', 'evil\r\nhost', 'a b']) {
    const { writes, last } = drive(null, [NOAUTH_HELLO, reqDomain(bad, 80)]);
    assert.deepEqual(writes, cat(hex('05 00'), socks5Reply(REP.GENERAL_FAILURE)));
    assert.ok(last.type === 'error' && /invalid domain name/.test(last.detail), bad);
  }
});

test('split at every byte boundary: the same writes and the same request', () => {
  const flows: { users: typeof USERS | null; bytes: Buffer; writes: Buffer; want: object; rest?: Buffer }[] = [
    { users: null, bytes: cat(NOAUTH_HELLO, reqIPv4([10, 1, 2, 3], 8443)), writes: hex('05 00'), want: { cmd: 1, host: '10.1.2.3', port: 8443, atyp: 'ipv4' } },
    { users: null, bytes: cat(NOAUTH_HELLO, reqIPv6(hex('20010db8000000000000000000000001'), 443)), writes: hex('05 00'), want: { cmd: 1, host: '2001:db8::1', port: 443, atyp: 'ipv6' } },
    {
      users: USERS,
      bytes: cat(AUTH_HELLO, authMsg('agent-1', 's3cret'), reqDomain('api.anthropic.com', 443), str('\x16\x03\x01payload')),
      writes: hex('05 02 01 00'),
      want: { cmd: 1, host: 'api.anthropic.com', port: 443, atyp: 'domain', user: 'agent-1' },
      rest: str('\x16\x03\x01payload'),
    },
  ];
  for (const f of flows) {
    for (const chunks of deliveries(f.bytes)) {
      const { writes, last, steps } = drive(f.users, chunks);
      assert.deepEqual(writes, f.writes, `split ${chunks.map((c) => c.length).join('+')}`);
      assertRequest(last, f.want, f.rest);
      assert.ok(steps.slice(0, -1).every((s) => s.type === 'need-more'));
    }
  }
  // Failures too: a wrong password split anywhere still yields 05 02, then 01 01 and close.
  for (const chunks of deliveries(cat(AUTH_HELLO, authMsg('agent-1', 'wrong')))) {
    const { writes, last } = drive(USERS, chunks);
    assert.deepEqual(writes, hex('05 02 01 01'));
    assert.equal(last.type, 'error');
  }
});

test('eager client: hello + request + payload in one chunk → request with all writes and rest', () => {
  const payload = str('GET / HTTP/1.1\r\nHost: example.test\r\n\r\n');
  const { steps } = drive(null, [cat(NOAUTH_HELLO, reqDomain('example.test', 80), payload)]);
  assert.equal(steps.length, 1);
  assertRequest(steps[0], { cmd: 1, host: 'example.test', port: 80, atyp: 'domain' }, payload);
  assert.deepEqual(steps[0].write, hex('05 00'));
});

test('BIND and UDP ASSOCIATE → REP 07 and close; unknown ATYP → REP 08', () => {
  for (const cmd of [2, 3, 9]) {
    const { writes, last } = drive(null, [NOAUTH_HELLO, reqIPv4([1, 2, 3, 4], 80, cmd)]);
    assert.deepEqual(writes, cat(hex('05 00'), hex('05 07 00 01 00000000 0000')));
    assert.ok(last.type === 'error' && last.close && /not supported/.test(last.detail));
  }
  // Decided from the 4-byte header alone: no need to wait for an address of unknown length.
  const { writes, last } = drive(null, [NOAUTH_HELLO, hex('05 01 00 02')]);
  assert.deepEqual(writes, cat(hex('05 00'), hex('05 08 00 01 00000000 0000')));
  assert.ok(last.type === 'error' && /address type 0x2/.test(last.detail));
});

test('garbage: clear detail, a refusal the client understands where it has one, later pushes keep failing', () => {
  const http400 = /^HTTP\/1\.1 400 Bad Request\r\n[^]*this is a SOCKS5 port/;
  const cases: [Buffer, RegExp, RegExp | Buffer | undefined][] = [
    [str('GET http://example.test/ HTTP/1.1\r\n\r\n'), /looks like HTTP/, http400],
    [str('CONNECT example.test:443 HTTP/1.1\r\n\r\n'), /looks like HTTP/, http400],
    [hex('04 01 00 50 7f000001 00'), /SOCKS4/, hex('00 5b 0000 00000000')], // SOCKS4 "request rejected"
    [hex('16 03 01 02 00 01'), /TLS ClientHello/, undefined],
    [hex('00 00 00 00'), /version byte 0x00/, undefined],
  ];
  for (const [bytes, re, refusal] of cases) {
    const hs = new Socks5Handshake({ users: null });
    const s = hs.push(bytes);
    assert.ok(s.type === 'error' && re.test(s.detail), `${bytes.toString('hex')}: ${JSON.stringify(s)}`);
    if (refusal instanceof RegExp) assert.match(s.write!.toString('latin1'), refusal);
    else assert.deepEqual(s.write, refusal);
    assert.equal(hs.push(NOAUTH_HELLO).type, 'error');
  }
  // A bad version in the request stage (after a valid hello) gets REP 1.
  const { writes, last } = drive(null, [NOAUTH_HELLO, hex('04 01 00 01 7f000001 0050')]);
  assert.deepEqual(writes, cat(hex('05 00'), socks5Reply(REP.GENERAL_FAILURE)));
  assert.ok(last.type === 'error' && /bad request version/.test(last.detail));
});

test('pushing after the handshake completed is an error, not a second request', () => {
  const hs = new Socks5Handshake({ users: null });
  hs.push(cat(NOAUTH_HELLO, reqIPv4([127, 0, 0, 1], 80)));
  const s = hs.push(str('more'));
  assert.ok(s.type === 'error' && /after the handshake completed/.test(s.detail));
});

test('bounded buffering: a slow drip of the largest message never holds more than one message', () => {
  const hs = new Socks5Handshake({ users: USERS });
  hs.push(AUTH_HELLO);
  const longest = authMsg('u'.repeat(255), 'p'.repeat(255));
  assert.equal(longest.length, MAX_HANDSHAKE_MESSAGE);
  let max = 0;
  for (let i = 0; i < longest.length - 1; i++) {
    assert.equal(hs.push(longest.subarray(i, i + 1)).type, 'need-more');
    max = Math.max(max, hs.buffered);
  }
  assert.ok(max < MAX_HANDSHAKE_MESSAGE);
  const last = hs.push(longest.subarray(-1)); // completes → wrong credentials
  assert.equal(last.type, 'error');
  assert.equal(hs.buffered, 0);
});

test('socks5Reply encodes IPv4, IPv6 and domain bind addresses', () => {
  assert.deepEqual(socks5Reply(REP.SUCCEEDED), hex('05 00 00 01 00000000 0000'));
  assert.deepEqual(socks5Reply(REP.SUCCEEDED, { host: '192.168.1.20', port: 54321 }), hex('05 00 00 01 c0a80114 d431'));
  assert.deepEqual(socks5Reply(REP.CONNECTION_REFUSED, { host: '::1', port: 80 }), hex('05 05 00 04 00000000000000000000000000000001 0050'));
  assert.deepEqual(socks5Reply(REP.SUCCEEDED, { host: '[2001:db8::1]', port: 1 }), hex('05 00 00 04 20010db8000000000000000000000001 0001'));
  assert.deepEqual(socks5Reply(REP.SUCCEEDED, { host: 'proxy.test', port: 443 }), cat(hex('05 00 00 03 0a'), str('proxy.test'), hex('01bb')));
});

test('replyForDialError maps errno codes to RFC 1928 reply codes', () => {
  const e = (code: string) => Object.assign(new Error(code), { code });
  assert.equal(replyForDialError(e('ECONNREFUSED')), REP.CONNECTION_REFUSED);
  assert.equal(replyForDialError(e('ENOTFOUND')), REP.HOST_UNREACHABLE);
  assert.equal(replyForDialError(e('EAI_AGAIN')), REP.HOST_UNREACHABLE);
  assert.equal(replyForDialError(e('ENETUNREACH')), REP.NETWORK_UNREACHABLE);
  assert.equal(replyForDialError(e('EHOSTUNREACH')), REP.HOST_UNREACHABLE);
  assert.equal(replyForDialError(e('ETIMEDOUT')), REP.HOST_UNREACHABLE);
  assert.equal(replyForDialError(e('EACCES')), REP.NOT_ALLOWED);
  assert.equal(replyForDialError(e('ECONNRESET')), REP.GENERAL_FAILURE);
  assert.equal(replyForDialError(new Error('no code')), REP.GENERAL_FAILURE);
});

// ---- real client: curl against a minimal listener built only from this module

async function withSocksFront(users: typeof USERS | null, fn: (socksPort: number, httpPort: number, seen: object[]) => Promise<void>) {
  const origin = http.createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const httpPort = (origin.address() as net.AddressInfo).port;
  const seen: object[] = [];
  const front = net.createServer((client) => {
    const hs = new Socks5Handshake({ users });
    const onData = (chunk: Buffer) => {
      const s = hs.push(chunk);
      if (s.write) client.write(s.write);
      if (s.type === 'error') return void client.end();
      if (s.type !== 'request') return;
      client.off('data', onData);
      seen.push(s.request);
      const up = net.connect({ host: s.request.host === 'origin.test' ? '127.0.0.1' : s.request.host, port: s.request.port });
      up.once('error', (err) => client.end(socks5Reply(replyForDialError(err))));
      up.once('connect', () => {
        client.write(socks5Reply(REP.SUCCEEDED, { host: up.localAddress!, port: up.localPort! }));
        if (s.rest.length) up.write(s.rest);
        client.pipe(up).pipe(client);
      });
    };
    client.on('data', onData);
    client.on('error', () => {});
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  try {
    await fn((front.address() as net.AddressInfo).port, httpPort, seen);
  } finally {
    front.close();
    origin.close();
    origin.closeAllConnections();
  }
}

test('real curl: --socks5-hostname with user/pass, --socks5 (IPv4), refused → curl reports it', async () => {
  await withSocksFront(USERS, async (socksPort, httpPort, seen) => {
    const a = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', `127.0.0.1:${socksPort}`, '--proxy-user', 'agent-1:s3cret', `http://origin.test:${httpPort}/a`]);
    assert.equal(a.stdout, 'hello /a');
    const b = await run('curl', ['-sS', '--max-time', '10', '-x', `socks5://agent-2:other@127.0.0.1:${socksPort}`, `http://127.0.0.1:${httpPort}/b`]);
    assert.equal(b.stdout, 'hello /b');
    assert.deepEqual(seen, [
      { cmd: 1, host: 'origin.test', port: httpPort, atyp: 'domain', user: 'agent-1' },
      { cmd: 1, host: '127.0.0.1', port: httpPort, atyp: 'ipv4', user: 'agent-2' },
    ]);
    const bad = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', `127.0.0.1:${socksPort}`, '--proxy-user', 'agent-1:wrong', `http://origin.test:${httpPort}/`]).catch((e) => e);
    assert.ok(bad.code !== 0 && /auth|Authentication|User was rejected/i.test(bad.stderr), bad.stderr);
  });
  await withSocksFront(null, async (socksPort) => {
    // A closed port: the dial fails with ECONNREFUSED and the client sees REP 5.
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const res = await run('curl', ['-sS', '--max-time', '10', '--socks5', `127.0.0.1:${socksPort}`, `http://127.0.0.1:${deadPort}/`]).catch((e) => e);
    // curl 7.88 prints the raw reply code: "Can't complete SOCKS5 connection to 127.0.0.1. (5)"
    assert.ok(res.code !== 0 && /refused|\(5\)/i.test(res.stderr), res.stderr);
  });
});
