// greytap's SOCKS5 listener with real clients: a refused handshake (not SOCKS5, wrong password, an
// unsupported command) is bad input, so it is counted in connection_errors_total like bad HTTP is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { apiGet, connectSocks, curl, startGreytap, waitFor, type Greytap } from '../helpers/harness.js';

async function socksErrors(g: Greytap): Promise<number> {
  const text = await (await fetch(g.api + '/metrics')).text();
  return Number(/^greytap_connection_errors_total\{listener="socks",error="bad_socks"\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** Sends bytes, collects what comes back until the listener closes. */
function exchange(addr: string, bytes: Buffer): Promise<Buffer> {
  const [h, p] = addr.split(':');
  return new Promise((resolve) => {
    const s = net.connect(Number(p), h, () => s.write(bytes));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('error', () => {});
  });
}

test('refused SOCKS5 handshakes are counted as bad_socks: curl --socks4, a wrong password, BIND, garbage', async () => {
  const g = await startGreytap(['--socks-auth', 'agent:pw']);
  try {
    const before = await socksErrors(g);
    assert.equal(before, 0, 'the series is there from start-up (first test of the file)');
    const v4 = await curl(['--socks4', g.socks, 'http://127.0.0.1:9/'], 5_000);
    assert.notEqual(v4.code, 0);
    const wrong = await curl(['-x', `socks5h://agent:wrong@${g.socks}`, 'http://x.test/'], 5_000);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /rejected|authentication/i);
    // authenticated, then BIND: REP 07
    const bind = await exchange(g.socks, Buffer.from([5, 1, 2, 1, 5, ...Buffer.from('agent'), 2, ...Buffer.from('pw'), 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]));
    assert.deepEqual([...bind.subarray(0, 6)], [5, 2, 1, 0, 5, 7]);
    const garbage = await exchange(g.socks, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    assert.match(garbage.toString('latin1'), /^HTTP\/1\.1 400 [^]*this is a SOCKS5 port/, 'an HTTP client is told where it is');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await socksErrors(g), before + 4);
  } finally {
    await g.stop();
  }
});

test('a client that half-closes before finishing the handshake is let go at once, not held until the handshake timeout', async () => {
  const g = await startGreytap([]);
  try {
    const active = async () => Number(/^greytap_connections_active\{listener="socks"\} (\d+)/m.exec(await (await fetch(g.api + '/metrics')).text())?.[1]);
    const [h, p] = g.socks.split(':');
    const errorsBefore = await socksErrors(g); // (the registry is the process's: earlier tests counted too)
    // a port probe (connect, FIN) and a client that gives up after the method selection
    for (const bytes of [Buffer.alloc(0), Buffer.from([5, 1, 0])]) {
      const t0 = Date.now();
      await new Promise<void>((resolve) => {
        const s = net.connect(Number(p), h, () => s.end(bytes));
        s.on('data', () => {});
        s.on('close', () => resolve());
        s.on('error', () => {});
      });
      assert.ok(Date.now() - t0 < 2000, `closed after ${Date.now() - t0} ms`);
    }
    assert.equal(await active(), 0);
    assert.equal((await socksErrors(g)) - errorsBefore, 1, 'the one that gave up mid-handshake is counted, the probe is not');
  } finally {
    await g.stop();
  }
});

test('a SOCKS5 domain is a host name in any case: recorded, mapped and filtered lowercased, as the HTTP proxy does', async () => {
  const origin = net.createServer((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const port = (origin.address() as net.AddressInfo).port;
  const g = await startGreytap(['--map', `mixed.test:${port}=127.0.0.1:${port}`]);
  try {
    const s = await connectSocks(g.socks, 'MiXeD.Test', port);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.end('GET /case HTTP/1.1\r\nHost: MiXeD.Test\r\nConnection: close\r\n\r\n');
    await new Promise((r) => s.once('close', r));
    assert.match(Buffer.concat(got).toString(), /^HTTP\/1\.1 200 OK[\s\S]*ok$/, '--map matched the lowercased name');
    const page = await waitFor(async () => (await apiGet(g, '/api/transactions?host=mixed.test')).items.length ? apiGet(g, '/api/transactions?host=mixed.test') : undefined, 'the exchange under its lowercased host');
    assert.equal(page.items[0].host, 'mixed.test');
    assert.equal(page.items[0].path, '/case');
  } finally {
    await g.stop();
    origin.close();
  }
});
