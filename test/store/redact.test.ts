// Credential redaction: which headers, what marker, order/case kept, idempotent, extras honoured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactHeaders, redactPath, REDACTED } from '../../src/store/redact.js';
import type { Header } from '../../src/records.js';

test('credential headers are redacted, keeping the Authorization scheme, header order and case', () => {
  const h: Header[] = [
    ['Host', 'api.openai.com'],
    ['Authorization', 'Bearer sk-proj-abc'],
    ['proxy-authorization', 'Basic dXNlcjpwYXNz'],
    ['Cookie', 'a=1; b=2'],
    ['Set-Cookie', 'sid=x; HttpOnly'],
    ['x-api-key', 'sk-ant-123'],
    ['X-Goog-Api-Key', 'AIza'],
    ['OpenAI-Apikey', 'k'],
    ['X-Auth-Token', 't'],
    ['x-client-secret', 's'],
    ['Authorization', 'sk-no-scheme'],
    ['Content-Type', 'application/json'],
    ['X-Request-Id', 'req_1'],
  ];
  const out = redactHeaders(h);
  assert.deepEqual(out, [
    ['Host', 'api.openai.com'],
    ['Authorization', `Bearer ${REDACTED}`],
    ['proxy-authorization', `Basic ${REDACTED}`],
    ['Cookie', REDACTED],
    ['Set-Cookie', REDACTED],
    ['x-api-key', REDACTED],
    ['X-Goog-Api-Key', REDACTED],
    ['OpenAI-Apikey', REDACTED],
    ['X-Auth-Token', REDACTED],
    ['x-client-secret', REDACTED],
    ['Authorization', REDACTED],
    ['Content-Type', 'application/json'],
    ['X-Request-Id', 'req_1'],
  ]);
  assert.equal(h[1][1], 'Bearer sk-proj-abc', 'input not mutated');
  assert.deepEqual(redactHeaders(out), out, 'idempotent');
  assert.equal(redactHeaders([['Accept', '*/*']]).length, 1);
});

test('extra name substrings are redacted case-insensitively', () => {
  assert.deepEqual(redactHeaders([['X-Session', 'abc'], ['X-Other', 'v']], ['x-SESSION']), [['X-Session', REDACTED], ['X-Other', 'v']]);
  assert.deepEqual(redactHeaders([['X-Session', 'abc']], ['']), [['X-Session', 'abc']], 'an empty extra matches nothing');
});

test('an API key sent as a WebSocket subprotocol is redacted, the other subprotocols kept', () => {
  const h: Header[] = [['Sec-WebSocket-Protocol', 'realtime, openai-insecure-api-key.sk-proj-abc, openai-beta.realtime-v1']];
  const out = redactHeaders(h);
  assert.deepEqual(out, [['Sec-WebSocket-Protocol', `realtime, openai-insecure-api-key.${REDACTED}, openai-beta.realtime-v1`]]);
  assert.deepEqual(redactHeaders(out), out, 'idempotent');
  assert.deepEqual(redactHeaders([['Ocp-Apim-Subscription-Key', 'k']]), [['Ocp-Apim-Subscription-Key', REDACTED]]);
});

test('credential query parameters of a path are redacted; other parameters, the fragment and a path without a query are kept', () => {
  assert.equal(redactPath('/v1beta/models/gemini:generateContent?key=AIza123&alt=sse'), `/v1beta/models/gemini:generateContent?key=${REDACTED}&alt=sse`);
  assert.equal(redactPath('/ws?api_key=a&access_token=b&X-Amz-Signature=c&sig=d&page=2#api_key=x'),
    `/ws?api_key=${REDACTED}&access_token=${REDACTED}&X-Amz-Signature=${REDACTED}&sig=${REDACTED}&page=2#api_key=x`);
  assert.equal(redactPath('/q?api%5Fkey=a&keyword=k'), `/q?api%5Fkey=${REDACTED}&keyword=k`, 'names are judged decoded; only whole names match');
  assert.equal(redactPath('/v1/responses'), '/v1/responses');
  assert.equal(redactPath('/s?session=1', ['session']), `/s?session=${REDACTED}`, 'the --redact-header extras apply');
  const once = redactPath('/a?token=t&b=1');
  assert.equal(redactPath(once), once, 'idempotent');
});

test('URL-valued headers (Location, Content-Location, Referer) have their credential query parameters redacted', () => {
  const h: Header[] = [
    ['location', 'https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&x=1'],
    ['Content-Location', '/r?access_token=t'],
    ['Referer', 'https://app/?key=AIza&q=ok#frag'],
    ['Link', '<https://x/?key=k>; rel=next'], // not URL-valued as a whole: left alone
  ];
  const out = redactHeaders(h);
  assert.deepEqual(out, [
    ['location', `https://b.s3.amazonaws.com/k?X-Amz-Signature=${REDACTED}&x=1`],
    ['Content-Location', `/r?access_token=${REDACTED}`],
    ['Referer', `https://app/?key=${REDACTED}&q=ok#frag`],
    ['Link', '<https://x/?key=k>; rel=next'],
  ]);
  assert.deepEqual(redactHeaders(out), out, 'idempotent');
  assert.deepEqual(redactHeaders([['Location', '/plain']]), [['Location', '/plain']]);
  assert.deepEqual(redactHeaders([['Referer', 'https://a/?session=1']], ['session']), [['Referer', `https://a/?session=${REDACTED}`]], 'extras apply');
});
