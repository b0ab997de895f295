// `greytap serve` as its users run it: a real process, its banner, its signals and its files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpDir, waitFor } from './helpers/harness.js';

const BIN = new URL('../../bin/greytap.js', import.meta.url).pathname;

interface Served { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> }

function serve(args: string[]): Served {
  const child = spawn(process.execPath, [BIN, 'serve', '--workers', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

function idleClient(addr: string): net.Socket {
  const [h, p] = addr.split(':');
  const s = net.connect(Number(p), h);
  s.on('error', () => {});
  return s;
}

test('serve: the data directory is the owner\'s alone; SIGTERM exits promptly with idle clients connected; a port in use is one clear line', async () => {
  const dir = join(tmpDir(), 'data');
  const g = serve(['--data-dir', dir, '--http-proxy', '127.0.0.1:0', '--socks', '127.0.0.1:0', '--api', 'off']);
  const sockets: net.Socket[] = [];
  try {
    const banner = await waitFor(() => /http-proxy (\S+)\s+socks5 (\S+)/.exec(g.out()), 'the banner');
    assert.match(g.out(), /CA certificate: \S+ {2}\(trust it\)/, 'no API address to fetch the CA from when the API is off');
    // captured bodies are not redacted: nobody but the owner may read the store
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.ok(readdirSync(dir).length > 0);

    // a second serve on the same address: one line naming the option, exit 2, no stack
    const clash = serve(['--data-dir', join(tmpDir(), 'other'), '--http-proxy', banner[1], '--socks', '127.0.0.1:0', '--api', 'off']);
    assert.equal(await clash.exited, 2);
    assert.equal(clash.err().trim(), `greytap: --http-proxy ${banner[1]}: address already in use`);

    // clients that connected and said nothing (one mid-head) must not hold the exit until their handshake timeout
    sockets.push(idleClient(banner[1]), idleClient(banner[2]));
    const partial = idleClient(banner[1]);
    partial.write('GET http://a.test/ HTTP/1.1\r\n');
    sockets.push(partial);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    g.child.kill('SIGTERM');
    assert.equal(await g.exited, 0);
    assert.ok(Date.now() - t0 < 8000, `exited after ${Date.now() - t0} ms`);
  } finally {
    for (const s of sockets) s.destroy();
    g.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
