// `greytap serve` as its users run it: a real process, its banner, its signals and its files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { curl, tmpDir, waitFor } from './helpers/harness.js';
import { makeTestPki } from './helpers/test-ca.js';

const BIN = new URL('../../bin/greytap.js', import.meta.url).pathname;

interface Served { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> }

/** The `greytap` command, as a user runs it. */
function greytap(args: string[], env: NodeJS.ProcessEnv = process.env): Served {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '', err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

function serve(args: string[], env?: NodeJS.ProcessEnv): Served {
  return greytap(['serve', '--workers', '1', ...args], env);
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
    const clash = serve(['--data-dir', join(dirname(dir), 'other'), '--http-proxy', banner[1], '--socks', '127.0.0.1:0', '--api', 'off']);
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
    rmSync(dirname(dir), { recursive: true, force: true }); // (the temp dir holding `data`)
  }
});

test('bad options of every command: exit 2 with one line naming the option and the path, no stack trace', async () => {
  const tmp = tmpDir();
  const missing = join(tmp, 'missing');
  const notDir = join(tmp, 'a-file');
  writeFileSync(notDir, 'not a directory');
  const dbFile = join(tmp, 'db-is-a-file');
  mkdirSync(dbFile);
  writeFileSync(join(dbFile, 'db'), 'not a store');
  const listeners = ['--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', 'off'];
  try {
    for (const [args, line] of [
      [['serve', '--data-dir', join(tmp, 'd1'), ...listeners, '--upstream-ca', join(missing, 'ca.pem')], `--upstream-ca ${missing}/ca.pem: cannot read (ENOENT)`],
      [['serve', '--data-dir', join(tmp, 'd2'), ...listeners, '--upstream-ca', notDir], `--upstream-ca ${notDir}: no PEM certificate`],
      [['serve', '--data-dir', dbFile, ...listeners], `--data-dir ${dbFile}: `],
      [['serve', '--data-dir', join(notDir, 'x'), ...listeners], `--data-dir ${notDir}/x: ENOTDIR`],
      [['serve', '--config', join(missing, 'greytap.json')], `--config ${missing}/greytap.json: ENOENT`],
      [['serve', '--map', 'a.test:443=nowhere'], '--map: expected HOST:PORT'],
      [['export', '--data-dir', missing], `--data-dir ${missing}: no store at ${missing}/db`],
      [['conversations', '--data-dir', missing], `--data-dir ${missing}: no store at ${missing}/db`],
      // a mistyped directory must not become a new empty store that "rebuilt 0 conversations"
      [['conversations', '--rebuild', '--data-dir', missing], `--data-dir ${missing}: no store at ${missing}/db`],
      [['ca', '--data-dir', notDir], `--data-dir ${notDir}: ENOTDIR`],
      [['serve', '--data-dir', join(tmp, 'd3'), ...listeners, '--dissect-rules', notDir], `--dissect-rules ${notDir}: Unexpected token`],
      [['conversations', '--rebuild', '--data-dir', missing, '--dissect-rules', join(missing, 'rules.json')], `--dissect-rules ${missing}/rules.json: ENOENT`],
      [['conversations', '--data-dir', missing, '--dissect-rules', notDir], '--dissect-rules: only with --rebuild'],
    ] as const) {
      const g = greytap([...args]);
      assert.equal(await g.exited, 2, `${args.join(' ')}: ${g.err()}`);
      const err = g.err().trimEnd();
      assert.ok(err.startsWith(`greytap: ${line}`) && !err.includes('\n'), `${args.join(' ')}: one line starting "greytap: ${line}", got:\n${err}`);
    }
    assert.equal(existsSync(missing), false, 'nothing created at a missing --data-dir');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('no open relay by a name: a listener name that resolves to a non-loopback address is refused without --allow-remote, taken with it', async (t) => {
  // The name is checked by where it was bound, not by its text: in a private mount namespace (the
  // machine's /etc/hosts untouched) `127.relay.test` resolves to 0.0.0.0.
  const tmp = tmpDir();
  const hosts = join(tmp, 'hosts');
  writeFileSync(hosts, '127.0.0.1 localhost\n0.0.0.0 127.relay.test\n');
  const inNamespace = (args: string[]): Served => {
    const child = spawn('unshare', ['--mount', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hosts, process.execPath, BIN, 'serve', '--workers', '1', '--data-dir', join(tmp, 'data'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    return { child, out: () => out, err: () => err, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
  };
  try {
    const probe = spawn('unshare', ['--mount', 'sh', '-c', 'mount --bind "$0" /etc/hosts', hosts], { stdio: 'ignore' });
    const can = await new Promise<boolean>((r) => { probe.on('exit', (c) => r(c === 0)); probe.on('error', () => r(false)); });
    if (!can) { t.skip('needs unshare --mount (root): CI runs as root'); return; }
    for (const [option, other] of [['--http-proxy', '--socks'], ['--socks', '--http-proxy'], ['--api', '--http-proxy']] as const) {
      const g = inNamespace([option, '127.relay.test:0', other, '127.0.0.1:0', ...(option === '--api' ? ['--socks'] : ['--api']), 'off']);
      const timer = setTimeout(() => g.child.kill('SIGKILL'), 20_000); // listening instead of exiting
      const code = await g.exited;
      clearTimeout(timer);
      assert.equal(code, 2, `exit ${code}: ${g.out()}${g.err()}`);
      assert.match(g.err().trim(), new RegExp(`^greytap: ${option} 127\\.relay\\.test:0 is bound to 0\\.0\\.0\\.0, not a loopback address; add --allow-remote to listen there$`));
    }
    const ok = inNamespace(['--http-proxy', '127.relay.test:0', '--socks', 'off', '--api', 'off', '--allow-remote']);
    try {
      await waitFor(() => /http-proxy 0\.0\.0\.0:\d+/.exec(ok.out()), 'the banner with the address asked for');
    } finally {
      ok.child.kill('SIGTERM');
      await ok.exited;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('origins are verified against the CA bundle of SSL_CERT_FILE and NODE_EXTRA_CA_CERTS too; a CA given nowhere is a 502', async () => {
  // three origins, each with its own CA: one CA in SSL_CERT_FILE (which stands for the system
  // bundle, where update-ca-certificates puts a corporate CA), one in NODE_EXTRA_CA_CERTS, one nowhere
  const origins = await Promise.all(['system.test', 'extra.test', 'unknown.test'].map(async (name) => {
    const pki = makeTestPki();
    const srv = https.createServer(pki.serverContext([name]), (req, res) => res.end(`hello from ${name}`));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { name, pki, srv, port: (srv.address() as net.AddressInfo).port };
  }));
  const [system, extra] = origins;
  const dir = join(tmpDir(), 'data');
  const env = { ...process.env, SSL_CERT_FILE: system.pki.caPath, NODE_EXTRA_CA_CERTS: extra.pki.caPath };
  const g = serve(['--data-dir', dir, '--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', 'off', ...origins.flatMap((o) => ['--map', `${o.name}:443=127.0.0.1:${o.port}`])], env);
  try {
    const [, proxy, caPath] = await waitFor(() => /http-proxy (\S+)[\s\S]*CA certificate: (\S+)/.exec(g.out()), 'the banner');
    for (const o of origins) {
      const r = await curl(['-x', `http://${proxy}`, '--cacert', caPath, '-w', ' %{http_code}', `https://${o.name}/`]);
      assert.equal(r.code, 0, r.stderr);
      if (o.name === 'unknown.test') assert.match(r.stdout, /greytap: TLS to unknown\.test:443 failed: unable to verify the first certificate\n 502$/);
      else assert.equal(r.stdout, `hello from ${o.name} 200`);
    }
  } finally {
    g.child.kill('SIGKILL');
    for (const o of origins) { o.srv.close(); o.pki.cleanup(); }
    rmSync(dirname(dir), { recursive: true, force: true }); // (the temp dir holding `data`)
  }
});

test('/metrics right after start-up has a series of each of greytap\'s metrics: every decode_errors_total kind at 0, the assembler\'s included, every worker_task_seconds type', async () => {
  const dir = join(tmpDir(), 'data');
  const g = serve(['--data-dir', dir, '--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', '127.0.0.1:0']);
  try {
    const [, api] = await waitFor(() => /api (http:\S+\/)/.exec(g.out()), 'the banner');
    const text = await (await fetch(`${api}metrics`)).text();
    // every kind a code path counts: the taps, the decoders, and conversation assembly (dissect, assemble)
    for (const kind of ['inflate_failed', 'invalid_utf8', 'bad_frame', 'bad_http', 'truncated_stream', 'decode_failed', 'dissect_failed', 'assemble_failed']) {
      assert.match(text, new RegExp(`^greytap_decode_errors_total\\{kind="${kind}"\\} 0$`, 'm'), kind);
    }
    // a metric without a series until its first event is a gap on a dashboard (and absent() alerts fire)
    const ours = [...text.matchAll(/^# TYPE (greytap_\w+) /gm)].map((m) => m[1]).filter((n) => !/^greytap_(process|nodejs)_/.test(n));
    assert.deepEqual(ours.filter((n) => !new RegExp(`^${n}(_count)?(\\{.*\\})? `, 'm').test(text)), [], 'metrics with no series at start-up');
    for (const type of ['http', 'ws', 'conn']) assert.match(text, new RegExp(`^greytap_worker_task_seconds_count\\{type="${type}"\\} 0$`, 'm'), type);
  } finally {
    g.child.kill('SIGKILL');
    rmSync(dirname(dir), { recursive: true, force: true }); // (the temp dir holding `data`)
  }
});

test('--dissect-rules: a gateway path mapped to the OpenAI Chat API becomes a conversation, live and in conversations --rebuild', async () => {
  // a company gateway that picks the model itself: its chat bodies carry no "model", so neither the
  // endpoint table nor the chat-completions fallback recognises them; a rule does
  const origin = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.setHeader('content-type', 'application/json').end(JSON.stringify({
      id: 'chatcmpl-gw1', object: 'chat.completion', model: 'gw-model',
      choices: [{ index: 0, message: { role: 'assistant', content: 'hello from the gateway' }, finish_reason: 'stop' }],
    })));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const tmp = tmpDir();
  const dir = join(tmp, 'data');
  const rules = join(tmp, 'rules.json');
  writeFileSync(rules, JSON.stringify({ rules: [{ host: 'gateway.test', path: '/gateway/chat', provider: 'openai-chat' }] }));
  const port = (origin.address() as net.AddressInfo).port;
  const g = serve(['--data-dir', dir, '--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', '127.0.0.1:0', '--map', `gateway.test:80=127.0.0.1:${port}`, '--dissect-rules', rules]);
  try {
    const [, proxy, api] = await waitFor(() => /http-proxy (\S+)\s+socks5 \S+\s+api (http:\S+\/)/.exec(g.out()), 'the banner');
    // one curl, one proxy connection: the exchanges are committed (and assembled) in this order
    const post = (path: string, text: string) => ['-x', `http://${proxy}`, '-H', 'content-type: application/json', '-d', JSON.stringify({ messages: [{ role: 'user', content: text }] }), `http://gateway.test${path}`];
    const r = await curl([...post('/other/chat', 'hi other'), '--next', ...post('/gateway/chat', 'hi gateway')]);
    assert.equal(r.code, 0, r.stderr);
    const list = await waitFor(async () => {
      const items = (await (await fetch(`${api}api/conversations`)).json()).items;
      return items.length > 0 && items;
    }, 'the conversation');
    const txs = (await (await fetch(`${api}api/transactions?kind=HTTP`)).json()).items;
    assert.deepEqual(txs.map((t: any) => t.path), ['/other/chat', '/gateway/chat']);
    assert.equal(txs[0].conn, txs[1].conn, 'one proxy connection');
    assert.equal(list.length, 1, 'only the path of the rule is a conversation');
    const [c] = list;
    assert.equal(c.provider, 'openai-chat');
    assert.deepEqual(c.turns.map((t: any) => [t.role, t.blocks[0].text]), [['user', 'hi gateway'], ['assistant', 'hello from the gateway']]);
    assert.deepEqual(c.turns[1].source, [txs[1].id]);

    g.child.kill('SIGTERM');
    assert.equal(await g.exited, 0);
    // the rebuild takes its own rules: every path of the gateway now
    writeFileSync(rules, JSON.stringify({ rules: [{ host: 'gateway.test', provider: 'openai-chat' }] }));
    const rebuild = greytap(['conversations', '--data-dir', dir, '--rebuild', '--dissect-rules', rules]);
    assert.equal(await rebuild.exited, 0, rebuild.err());
    const rebuilt = JSON.parse(rebuild.out());
    assert.deepEqual(rebuilt.map((x: any) => [x.provider, x.turns[0].blocks[0].text]).sort(), [['openai-chat', 'hi gateway'], ['openai-chat', 'hi other']]);
  } finally {
    g.child.kill('SIGKILL');
    origin.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('serve on a terminal that closes (SIGHUP, its output gone): it flushes what was captured, then ends by the hangup', async () => {
  const origin = http.createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  const port = (origin.address() as net.AddressInfo).port;
  const dir = join(tmpDir(), 'data');
  // serve on a pseudo-terminal, as from a shell; closing the master side is the terminal going away
  // (the kernel sends SIGHUP, and writes to the terminal fail with EIO)
  const onPty = `
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b''
while b'CA certificate' not in out:
    out += os.read(fd, 4096)
sys.stdout.write(out.decode('utf-8', 'replace')); sys.stdout.flush()
sys.stdin.readline()
os.close(fd)
_, status = os.waitpid(pid, 0)
print('exit', os.WEXITSTATUS(status) if os.WIFEXITED(status) else 'signal %d' % os.WTERMSIG(status), flush=True)
`;
  const args = [process.execPath, BIN, 'serve', '--workers', '1', '--data-dir', dir, '--http-proxy', '127.0.0.1:0', '--socks', '127.0.0.1:0', '--api', 'off', '--map', `hup.test:80=127.0.0.1:${port}`];
  const child = spawn('python3', ['-c', onPty, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  try {
    const banner = await waitFor(() => /http-proxy (\S+):(\d+)/.exec(out), 'the banner');
    const agent = new http.Agent({ keepAlive: true });
    for (let i = 0; i < 40; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        http.get({ host: banner[1], port: Number(banner[2]), path: `http://hup.test/${i}`, agent }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve(b));
        }).on('error', reject);
      });
      assert.equal(body, `hello http://hup.test/${i}`);
    }
    agent.destroy();
    child.stdin!.end('close\n');
    const status = await waitFor(() => /exit (.+)/.exec(out), 'serve to end', 20_000);
    assert.equal(status[1].trim(), 'signal 1', `ended by the hangup, once flushed (not an abort): ${out}`);
    const { openStore } = await import('../src/store/lmdb.js');
    const store = openStore(dir, { readOnly: true });
    try {
      assert.equal(store.listTransactions({ host: 'hup.test', limit: 100 }).items.length, 40, 'every exchange committed before the exit');
    } finally {
      await store.close();
    }
  } finally {
    child.kill('SIGKILL');
    origin.close();
    rmSync(dirname(dir), { recursive: true, force: true });
  }
});

test('out of file descriptors: connections past the limit are closed, a dial greytap cannot open is a 503 counted as fd_limit (not a dead upstream), and forwarding resumes once descriptors free', async () => {
  const tmp = tmpDir();
  const origin = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
  await new Promise((r) => origin.once('listening', r));
  const target = `127.0.0.1:${(origin.address() as net.AddressInfo).port}`;
  // Node raises the soft limit to the hard one at start, so the shell lowers both.
  const child = spawn('sh', ['-c', 'ulimit -n 128 && exec "$@"', 'sh', process.execPath, BIN, 'serve', '--workers', '1', '--data-dir', join(tmp, 'data'),
    '--http-proxy', '127.0.0.1:0', '--socks', 'off', '--api', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const idle: net.Socket[] = [];
  try {
    const [, proxy, api] = await waitFor(() => /http-proxy (\S+)\s+socks5 off\s+api (\S+)/.exec(out), 'the banner');
    const connect = async () => {
      const s = idleClient(proxy);
      let answer = '';
      s.on('data', (d) => (answer += d));
      s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      await waitFor(() => answer.includes('\r\n\r\n') || s.destroyed, 'an answer to CONNECT');
      return { s, answer: () => answer };
    };

    // Clients that send nothing hold one descriptor each; at the limit greytap's accepts fail and
    // libuv closes each new connection at once.
    let closedByGreytap = 0;
    while (closedByGreytap === 0) {
      assert.ok(idle.length < 256, 'greytap never ran out of descriptors under ulimit -n 128');
      for (let i = 0; i < 8; i++) {
        const s = idleClient(proxy);
        s.once('close', () => closedByGreytap++); // (the test closes none before the loop ends)
        idle.push(s);
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    // One descriptor freed: the next connection is accepted, and its dial has none left.
    idle.find((s) => !s.closed)!.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const starved = await connect();
    assert.match(starved.answer(), /^HTTP\/1\.1 503 Service Unavailable\r\n[^]*greytap: cannot reach 127\.0\.0\.1:\d+: EMFILE\n$/);

    for (const s of idle) s.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const again = await connect();
    assert.match(again.answer(), /^HTTP\/1\.1 200 /);
    again.s.write('still forwarding');
    await waitFor(() => again.answer().endsWith('still forwarding'), 'the echo through the tunnel');
    again.s.destroy();

    const metrics = await (await fetch(api + 'metrics')).text();
    assert.match(metrics, /^greytap_connection_errors_total\{listener="http",error="fd_limit"\} 1$/m);
    assert.match(metrics, /^greytap_connection_errors_total\{listener="http",error="upstream_unreachable"\} 0$/m);
    assert.match(metrics, /^greytap_process_max_fds 128$/m);
  } finally {
    for (const s of idle) s.destroy();
    child.kill('SIGKILL');
    origin.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
