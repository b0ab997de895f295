// Export: JSON Lines round-trips the stored records; HAR 1.2 validates against the spec's schema
// (ajv) with WebSocket messages on the 101 entry as Chrome writes them; the output's backpressure
// is respected; and export runs from another process while this one holds the store open for writing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { openStore } from '../../src/store/lmdb.js';
import { exportRecords } from '../../src/store/export.js';
import type { HttpTransaction, TransactionRecord } from '../../src/records.js';
import { HAR_SCHEMA, WS_ENTRY_SCHEMA } from './har-schema.js';
import { conn, http, tempDir, tempStore, ws } from './fixtures.js';

/** A deliberately slow sink with a tiny buffer, so write() returns false and export must wait for 'drain'. */
function sink(): { stream: Writable; text: () => string; drains: () => number } {
  const chunks: Buffer[] = [];
  let drains = 0;
  const stream = new Writable({ highWaterMark: 64, write(c, _e, cb) { chunks.push(Buffer.from(c)); setImmediate(cb); } });
  stream.on('drain', () => drains++);
  return { stream, text: () => Buffer.concat(chunks).toString('utf8'), drains: () => drains };
}

async function fill(dir: string) {
  const store = openStore(dir);
  const c = conn();
  await store.putConnection(c);
  const up = http(c.id, { status: 101, statusText: 'Switching Protocols', method: 'GET', path: '/v1/responses', scheme: 'wss', reqBody: undefined, respBody: undefined, reqBodySize: 0, respBodySize: 0,
    reqHeaders: [['Host', 'api.openai.com'], ['Upgrade', 'websocket'], ['Cookie', 'a=1; b=2']], respHeaders: [['Upgrade', 'websocket']] });
  const records: TransactionRecord[] = [
    http(c.id, { respBody: 'é'.repeat(10000), respBodySize: 20000 }),
    http(c.id, { host: 'example.com', port: 8080, scheme: 'http', method: 'GET', path: '/img?q=a+b&x', reqBody: undefined, reqBodySize: 0, respBody: undefined, respBodyBase64: 'iVBORw0KGgo=', respBodySize: 8, respHeaders: [['Content-Type', 'image/png']] }),
    http(c.id, { status: undefined, statusText: undefined, respHeaders: [], respBody: undefined, error: 'upstream_unreachable', ts: 5 }),
    http(c.id, { respBody: undefined, respEvents: [{ event: 'response.created', data: '{"a":1}' }, { data: 'line1\nline2' }], respHeaders: [['Content-Type', 'text/event-stream']] }),
    up,
    ws(c.id, up.id, 'client', 0, { ts: 1000 }),
    ws(c.id, up.id, 'server', 0, { ts: 1001, opcode: 'binary', body: undefined, bodyBase64: 'AAEC' }),
    ws(c.id, up.id, 'server', 1, { ts: 1002, kind: 'WS_CTRL', opcode: 'ping', body: '' }),
    ws(c.id, up.id, 'client', 1, { ts: 1003, kind: 'WS_CTRL', opcode: 'close', body: '', closeCode: 1000 }),
  ];
  await store.putTransactions(records);
  records.sort((a, b) => (a.id < b.id ? -1 : 1)); // export order is id order (the 101 was allocated first)
  return { store, records, up };
}

test('jsonl export round-trips every record with bodies, honours filters and backpressure', async (t) => {
  const dir = tempDir(t);
  const { store, records } = await fill(dir);
  t.after(() => store.close());
  const out = sink();
  const n = await exportRecords(store, { format: 'jsonl' }, out.stream);
  assert.equal(n, records.length);
  const lines = out.text().trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines, records.map((r) => JSON.parse(JSON.stringify(store.getTransaction(r.id)))));
  assert.equal(lines[1].respBody, 'é'.repeat(10000), 'a body stored apart is exported');
  assert.ok(out.drains() > 0, 'the sink pushed back and export waited for drain');
  assert.ok(out.stream.listenerCount('close') <= 1 && out.stream.listenerCount('error') <= 1,
    `no listener left per wait (close ${out.stream.listenerCount('close')}, error ${out.stream.listenerCount('error')})`);

  const only = async (o: Parameters<typeof exportRecords>[1]) => { const s = sink(); await exportRecords(store, o, s.stream); return s.text().trimEnd().split('\n').filter(Boolean).map((l) => JSON.parse(l).id); };
  assert.deepEqual(await only({ format: 'jsonl', kind: 'WS_CTRL' }), records.filter((r) => r.kind === 'WS_CTRL').map((r) => r.id));
  assert.deepEqual(await only({ format: 'jsonl', host: 'example.com' }), records.filter((r) => r.host === 'example.com').map((r) => r.id));
  assert.deepEqual(await only({ format: 'jsonl', since: 2000 }), records.filter((r) => r.ts >= 2000).map((r) => r.id));
});

test('HAR export is valid HAR 1.2 and carries WebSocket messages on the 101 entry as Chrome does', async (t) => {
  const dir = tempDir(t);
  const { store, records, up } = await fill(dir);
  t.after(() => store.close());
  const out = sink();
  const n = await exportRecords(store, { format: 'har' }, out.stream);
  const har = JSON.parse(out.text());
  const ajv = new Ajv({ allErrors: true, strict: false });
  (addFormats as unknown as (a: Ajv) => void)(ajv);
  const validate = ajv.compile(HAR_SCHEMA);
  assert.ok(validate(har), JSON.stringify(validate.errors, null, 1));
  const httpRecs = records.filter((r) => r.kind === 'HTTP') as HttpTransaction[];
  assert.equal(n, httpRecs.length);
  assert.equal(har.log.entries.length, httpRecs.length);
  const [wsEntry, big, img, failed, sse] = har.log.entries;
  assert.equal(big.response.content.text, 'é'.repeat(10000));
  assert.equal(big.response.content.size, 20000);
  assert.equal(big.request.postData.text, '{"model":"gpt-5"}');
  assert.ok(big.request.headers.some((h: { name: string; value: string }) => h.name === 'Authorization' && h.value === 'Bearer [REDACTED]'));
  assert.deepEqual(big.request.queryString, [{ name: 'stream', value: 'true' }, { name: 'x', value: 'a b' }]);
  assert.equal(img.request.url, 'http://example.com:8080/img?q=a+b&x');
  assert.deepEqual(img.request.queryString, [{ name: 'q', value: 'a b' }, { name: 'x', value: '' }]);
  assert.equal(img.request.postData, undefined);
  assert.deepEqual(img.response.content, { size: 8, mimeType: 'image/png', text: 'iVBORw0KGgo=', encoding: 'base64' });
  assert.equal(failed.response.status, 0);
  assert.match(failed.comment, /upstream_unreachable/);
  assert.equal(sse.response.content.text, 'event: response.created\ndata: {"a":1}\n\ndata: line1\ndata: line2\n\n');
  assert.equal(wsEntry._greytapId, up.id);
  assert.equal(wsEntry.request.url, 'wss://api.openai.com/v1/responses');
  assert.deepEqual(wsEntry.request.cookies, [], 'the Cookie header was redacted whole');
  assert.ok(ajv.validate(WS_ENTRY_SCHEMA, wsEntry), JSON.stringify(ajv.errors));
  assert.deepEqual(wsEntry._webSocketMessages, [
    { type: 'send', time: 1, opcode: 1, data: '{"seq":0,"dir":"client"}' },
    { type: 'receive', time: 1.001, opcode: 2, data: 'AAEC' },
    { type: 'receive', time: 1.002, opcode: 9, data: '' },
    { type: 'send', time: 1.003, opcode: 8, data: '' },
  ]);
  for (const e of har.log.entries.slice(1)) assert.equal(e._webSocketMessages, undefined);

  const none = sink();
  assert.equal(await exportRecords(store, { format: 'har', kind: 'WS_REQ' }, none.stream), 0);
  assert.ok(validate(JSON.parse(none.text())));
});

test('HAR export writes a WebSocket entry\'s messages one at a time: each body is read from the store after the one before it was written', async (t) => {
  const dir = tempDir(t);
  const { store: real, up } = await fill(dir);
  t.after(() => real.close());
  const log: string[] = [];
  const wsIds = new Set(real.wsMessages(up.conn, { bodies: false }).map((m) => m.id));
  const store = new Proxy(real, {
    get: (target, p) => (p === 'getTransaction'
      ? (id: string) => { if (wsIds.has(id)) log.push('read'); return target.getTransaction(id); }
      : Reflect.get(target, p)),
  });
  const out = sink();
  const write = out.stream.write.bind(out.stream);
  out.stream.write = ((chunk: string, ...rest: never[]) => {
    if (/"type":"(send|receive)"/.test(chunk)) log.push('wrote');
    return write(chunk, ...rest);
  }) as typeof out.stream.write;
  await exportRecords(store, { format: 'har' }, out.stream);
  assert.deepEqual(log, ['read', 'wrote', 'read', 'wrote', 'read', 'wrote', 'read', 'wrote']);
  assert.equal(JSON.parse(out.text()).log.entries[0]._webSocketMessages.length, 4);
});

test('export runs in another process (read-only) while this one holds the store open for writing', async (t) => {
  const dir = tempDir(t);
  const { store, records } = await fill(dir);
  t.after(() => store.close());
  const lmdbJs = new URL('../../src/store/lmdb.js', import.meta.url).href;
  const exportJs = new URL('../../src/store/export.js', import.meta.url).href;
  const script = `const { openStore } = await import(${JSON.stringify(lmdbJs)}); const { exportRecords } = await import(${JSON.stringify(exportJs)});
    const s = openStore(process.argv[1], { readOnly: true }); const n = await exportRecords(s, { format: 'jsonl' }, process.stdout); await s.close(); process.stderr.write('n=' + n);`;
  const p = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  // keep writing while the other process reads
  const more = store.putTransactions([http(records[0].conn, { path: '/during-export' })]);
  const [code] = await new Promise<[number | null]>((resolve) => p.on('close', (c) => resolve([c])));
  await more;
  assert.equal(code, 0, stderr);
  const ids = stdout.trimEnd().split('\n').map((l) => JSON.parse(l).id);
  assert.ok(ids.length >= records.length, stderr);
  assert.deepEqual(ids.slice(0, records.length), records.map((r) => r.id));
  assert.match(stderr, new RegExp(`n=${ids.length}`));
});

test('HAR request.url is a valid URI when the stored path holds characters a URI may not (a redacted credential parameter, raw "{", "|", non-ASCII)', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  // the store redacts ?key= to "[REDACTED]"; lax clients send '{', '"', '|' and UTF-8 unescaped (the proxy forwards them)
  const gemini = http(c.id, { host: 'generativelanguage.googleapis.com', path: '/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=AIzaSECRET' });
  const lax = http(c.id, { host: 'example.com', method: 'GET', path: '/search?q={"a":1}|x&w=café&p=100%&e=%41' });
  await store.putTransactions([gemini, lax]);
  const out = sink();
  await exportRecords(store, { format: 'har' }, out.stream);
  const har = JSON.parse(out.text());
  const ajv = new Ajv({ allErrors: true, strict: false });
  (addFormats as unknown as (a: Ajv) => void)(ajv);
  const validate = ajv.compile(HAR_SCHEMA);
  assert.ok(validate(har), JSON.stringify(validate.errors, null, 1));
  const [g, l] = har.log.entries;
  assert.equal(g.request.url, 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=%5BREDACTED%5D');
  assert.deepEqual(g.request.queryString, [{ name: 'alt', value: 'sse' }, { name: 'key', value: '[REDACTED]' }]);
  assert.equal(l.request.url, 'https://example.com/search?q=%7B%22a%22:1%7D%7Cx&w=caf%C3%A9&p=100%25&e=%41', 'valid escapes kept, the rest encoded as UTF-8');
  for (const e of har.log.entries) assert.equal(new URL(e.request.url).href, e.request.url, 'WHATWG URL reads it back unchanged');
});

test('a credential query parameter in a URL-valued header (Location, Content-Location, Referer) is redacted as in the path', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  // a release download redirects to a presigned URL; the next request's path (which the store
  // redacts) carries the same signature, and so does the Referer of a page opened with ?key=
  const signed = 'https://objects.example.com/f.tar.gz?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=SIG-5e1f&sig=AZSIG-77&response-content-type=application%2Foctet-stream';
  const redirect = http(c.id, { method: 'GET', path: '/download?id=1', status: 302, statusText: 'Found',
    reqHeaders: [['Host', 'api.openai.com'], ['Referer', 'https://app.example/page?key=AIzaREF-0c3d&tab=2']],
    respHeaders: [['Location', signed], ['Content-Location', '/download?id=1&access_token=TOK-42aa']] });
  const next = http(c.id, { method: 'GET', host: 'objects.example.com', path: signed.slice(signed.indexOf('/', 8)) });
  await store.putTransactions([redirect, next]);
  const secrets = ['SIG-5e1f', 'AZSIG-77', 'AIzaREF-0c3d', 'TOK-42aa'];
  for (const format of ['jsonl', 'har'] as const) {
    const out = sink();
    await exportRecords(store, { format }, out.stream);
    for (const s of secrets) assert.ok(!out.text().includes(s), `${format} export leaks ${s}`);
  }
  const stored = store.getTransaction(redirect.id) as HttpTransaction;
  assert.deepEqual(stored.respHeaders, [
    ['Location', 'https://objects.example.com/f.tar.gz?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=[REDACTED]&sig=[REDACTED]&response-content-type=application%2Foctet-stream'],
    ['Content-Location', '/download?id=1&access_token=[REDACTED]'],
  ]);
  assert.deepEqual(stored.reqHeaders[1], ['Referer', 'https://app.example/page?key=[REDACTED]&tab=2']);
  assert.equal((store.getTransaction(next.id) as HttpTransaction).path, '/f.tar.gz?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=[REDACTED]&sig=[REDACTED]&response-content-type=application%2Foctet-stream');
});

test('an output that closes mid-export ends it: exportRecords rejects instead of hanging, and `greytap export | head` exits 0 without a stack trace', async (t) => {
  const dir = tempDir(t);
  const store = openStore(dir);
  const c = conn();
  await store.putConnection(c);
  await store.putTransactions(Array.from({ length: 1500 }, () => http(c.id, { respBody: 'x'.repeat(2000) }))); // ~3 MB of jsonl
  // in process: a sink destroyed after a few writes (a client that went away)
  let writes = 0;
  const gone = new Writable({ highWaterMark: 64, write(_c, _e, cb) { if (++writes === 5) { cb(); gone.destroy(); return; } setImmediate(cb); } });
  const settled = await Promise.race([
    exportRecords(store, { format: 'jsonl' }, gone).then(() => 'resolved', (e: Error) => `rejected: ${e.message}`),
    new Promise((r) => setTimeout(r, 5_000, 'hung')),
  ]);
  assert.match(String(settled), /^rejected: .*closed/);
  assert.ok(writes < 10, `stopped writing (${writes} writes)`);
  await store.close();
  // the CLI, its stdout closed by the reader after the first bytes
  for (const format of ['jsonl', 'har']) {
    const bin = fileURLToPath(new URL('../../../bin/greytap.js', import.meta.url));
    const p = spawn(process.execPath, [bin, 'export', '--data-dir', dir, '--format', format], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => { stderr += d; });
    p.stdout.once('data', () => p.stdout.destroy());
    const [code] = await once(p, 'close');
    assert.equal(stderr, '', format);
    assert.equal(code, 0, format);
  }
});

test('HAR: a request without a body (GET, HEAD as captured: reqBody "" and size 0) has no postData; one with a body keeps it', async (t) => {
  const { store } = tempStore(t);
  const c = conn();
  await store.putConnection(c);
  // the capture hands every request an (empty) body buffer, so a GET is stored with reqBody ''
  const get = http(c.id, { method: 'GET', path: '/v1/models', reqBody: '', reqBodySize: 0, reqHeaders: [['Host', 'api.openai.com']] });
  const head = http(c.id, { method: 'HEAD', path: '/v1/models', reqBody: '', reqBodySize: 0, respBody: '', respBodySize: 0 });
  const post = http(c.id, { method: 'POST', path: '/v1/responses', reqBody: '{"model":"gpt-5"}', reqBodySize: 17 });
  const emptyPost = http(c.id, { method: 'POST', path: '/v1/empty', reqBody: '', reqBodySize: 0, reqHeaders: [['Content-Type', 'application/json'], ['Content-Length', '0']] });
  await store.putTransactions([get, head, post, emptyPost]);
  const out = sink();
  await exportRecords(store, { format: 'har' }, out.stream);
  const [g, h, p, e] = JSON.parse(out.text()).log.entries;
  assert.equal(g.request.postData, undefined, 'GET');
  assert.equal(g.request.bodySize, 0);
  assert.equal(h.request.postData, undefined, 'HEAD');
  assert.deepEqual(p.request.postData, { mimeType: 'application/json', text: '{"model":"gpt-5"}' });
  assert.equal(e.request.postData, undefined, 'a POST with an empty body posts no data either');
});
