// A target that is greytap's own proxy listener is a loop: an absolute-URI request to it would be
// forwarded to itself again and again (each hop one more pair of sockets) until the process ran out
// of descriptors. Real listeners on 127.0.0.1, real curl and a real SOCKS5 client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startGreytap, connectSocks, curl, type Greytap } from '../helpers/harness.js';

async function metric(g: Greytap, re: RegExp): Promise<number> {
  const text = await (await fetch(g.api + '/metrics')).text();
  return [...text.matchAll(new RegExp(re.source, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
}
const accepted = (g: Greytap) => metric(g, /^greytap_connections_total\{[^}]*\} (\d+)/);
const loopErrors = (g: Greytap) => metric(g, /^greytap_connection_errors_total\{[^}]*error="upstream_unreachable"\} (\d+)/);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A SOCKS5 CONNECT to an IPv4 target; resolves with the reply code. */
function socksConnectIPv4(socks: string, ip: string, port: number): Promise<number> {
  const [h, p] = socks.split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(p), h, () => s.write(Buffer.from([5, 1, 0])));
    let buf = Buffer.alloc(0);
    let sent = false;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!sent && buf.length >= 2) {
        sent = true;
        buf = buf.subarray(2);
        s.write(Buffer.from([5, 1, 0, 1, ...ip.split('.').map(Number), port >> 8, port & 255]));
      }
      if (sent && buf.length >= 2) { s.destroy(); resolve(buf[1]); }
    });
    s.once('error', reject);
    s.setTimeout(5000, () => { s.destroy(); reject(new Error('no SOCKS5 reply')); });
  });
}

test('requests aimed at greytap itself (absolute URI, CONNECT, SOCKS5, by IP, name or --map) are refused at once, not looped', async () => {
  const port = await freePort();
  const g = await startGreytap(['--http-proxy', `127.0.0.1:${port}`, '--map', `loop.test:80=127.0.0.1:${port}`]);
  try {
    const before = await accepted(g);
    const errorsBefore = await loopErrors(g);
    const [httpPort, socksPort] = [port, Number(g.socks.split(':')[1])];

    // the absolute-URI request that used to go round for ever
    const abs = await curl(['-x', `http://${g.httpProxy}`, `http://127.0.0.1:${httpPort}/`], 5_000);
    assert.equal(abs.code, 0, abs.stderr);
    assert.match(abs.stdout, /greytap: cannot reach 127\.0\.0\.1:\d+: .*own proxy listener: refusing a proxy loop/);
    // the same through a name that only --map points at us
    const mapped = await curl(['-x', `http://${g.httpProxy}`, '-w', '%{http_code}', 'http://loop.test/'], 5_000);
    assert.match(mapped.stdout, /mapped to 127\.0\.0\.1:\d+\) is greytap's own proxy listener[\s\S]*502$/);
    // CONNECT to the SOCKS listener, by name (localhost) and by IP
    for (const target of [`localhost:${socksPort}`, `127.0.0.1:${socksPort}`]) {
      const r = await curl(['-p', '-x', `http://${g.httpProxy}`, `http://${target}/`], 5_000);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /502/, `CONNECT ${target}: ${r.stderr}`);
    }
    // SOCKS5 CONNECT to the HTTP listener, and to itself: REP 02 (connection not allowed by ruleset)
    assert.equal(await socksConnectIPv4(g.socks, '127.0.0.1', httpPort), 2);
    await assert.rejects(connectSocks(g.socks, 'localhost', socksPort), (e: Error & { rep?: number }) => e.rep === 2);

    // six refusals: each accepted its client and the one self-connection it dialled, nothing more
    const grown = (await accepted(g)) - before;
    assert.ok(grown <= 12, `${grown} connections accepted for 6 looping requests`);
    assert.equal((await loopErrors(g)) - errorsBefore, 6);

    // and greytap still serves
    const ok = await curl(['-x', `http://${g.httpProxy}`, `${g.api}/healthz`], 5_000);
    assert.match(ok.stdout, /^ok/);
  } finally {
    await g.stop();
  }
});

test('a listener on a wildcard address (0.0.0.0) is recognised through 127.0.0.1', async () => {
  const g = await startGreytap(['--http-proxy', '0.0.0.0:0', '--allow-remote']);
  try {
    const before = await accepted(g);
    const r = await curl(['-x', `http://${g.httpProxy}`, `http://${g.httpProxy}/`], 5_000);
    assert.match(r.stdout, /own proxy listener: refusing a proxy loop/);
    assert.ok((await accepted(g)) - before <= 2);
  } finally {
    await g.stop();
  }
});
