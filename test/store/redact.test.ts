// Credential redaction: which headers, what marker, order/case kept, idempotent, extras honoured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactHeaders, redactPath, redactText, REDACTED } from '../../src/store/redact.js';
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
    ['x_api_key', 'k'],
    ['X_Auth_Token', 't'],
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
    ['x_api_key', REDACTED],
    ['X_Auth_Token', REDACTED],
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
  assert.deepEqual(redactHeaders([['X_Session', 'abc'], ['X-Session', 'def']], ['x_session']), [['X_Session', REDACTED], ['X-Session', REDACTED]], '_ and - are one');
});

test('an API key sent as a WebSocket subprotocol is redacted, the other subprotocols kept', () => {
  const h: Header[] = [['Sec-WebSocket-Protocol', 'realtime, openai-insecure-api-key.sk-proj-abc, openai-beta.realtime-v1']];
  const out = redactHeaders(h);
  assert.deepEqual(out, [['Sec-WebSocket-Protocol', `realtime, openai-insecure-api-key.${REDACTED}, openai-beta.realtime-v1`]]);
  assert.deepEqual(redactHeaders(out), out, 'idempotent');
  assert.deepEqual(redactHeaders([['Ocp-Apim-Subscription-Key', 'k']]), [['Ocp-Apim-Subscription-Key', REDACTED]]);
});

test('a token carried by a subprotocol in other shapes is redacted: a dotted one after its marking word, or the element after a bare marking word', () => {
  const h: Header[] = [
    ['Sec-WebSocket-Protocol', 'base64url.bearer.authorization.k8s.io.eyJhbGciOi, base64.binary.k8s.io'],
    ['sec-websocket-protocol', 'token, SECRET1, graphql-ws'],
    ['Sec-WebSocket-Protocol', 'graphql-ws,access_token,SECRET2'],
    ['Sec-WebSocket-Protocol', 'v1.chat, mqtt'],
  ];
  const out = redactHeaders(h);
  assert.deepEqual(out, [
    ['Sec-WebSocket-Protocol', `base64url.bearer.${REDACTED}, base64.binary.k8s.io`],
    ['sec-websocket-protocol', `token, ${REDACTED}, graphql-ws`],
    ['Sec-WebSocket-Protocol', `graphql-ws,access_token,${REDACTED}`],
    ['Sec-WebSocket-Protocol', 'v1.chat, mqtt'],
  ]);
  assert.deepEqual(redactHeaders(out), out, 'idempotent');
});

test('free text quoting a request target or URL (an error detail) has its userinfo and credential parameters redacted', () => {
  assert.equal(redactText('bad request line: "GET /v1beta/models/g:generateContent?key=AIzaSECRET HTTP/1.1 x"'),
    `bad request line: "GET /v1beta/models/g:generateContent?key=${REDACTED} HTTP/1.1 x"`);
  assert.equal(redactText('request for http://user:PW@other.example on a proxy connection bound to a:80'),
    `request for http://${REDACTED}@other.example on a proxy connection bound to a:80`);
  assert.equal(redactText('connection closed mid-message'), 'connection closed mid-message');
  const once = redactText('x https://u:p@h/p?token=t#access_token=a');
  assert.equal(once, `x https://${REDACTED}@h/p?token=${REDACTED}#access_token=${REDACTED}`);
  assert.equal(redactText(once), once, 'idempotent');
});

test('credential parameters of a path, in its query and its fragment, are redacted; other parameters and a path without either are kept', () => {
  assert.equal(redactPath('/v1beta/models/gemini:generateContent?key=AIza123&alt=sse'), `/v1beta/models/gemini:generateContent?key=${REDACTED}&alt=sse`);
  assert.equal(redactPath('/ws?api_key=a&access_token=b&X-Amz-Signature=c&sig=d&page=2#api_key=x&state=s'),
    `/ws?api_key=${REDACTED}&access_token=${REDACTED}&X-Amz-Signature=${REDACTED}&sig=${REDACTED}&page=2#api_key=${REDACTED}&state=s`);
  assert.equal(redactPath('/cb#access_token=t&token_type=bearer&expires_in=3600'), `/cb#access_token=${REDACTED}&token_type=${REDACTED}&expires_in=3600`, 'an OAuth implicit grant\'s fragment');
  assert.equal(redactPath('/a#frag?key=k'), '/a#frag?key=k', 'a ? inside the fragment starts no query (and frag?key is no credential name)');
  assert.equal(redactPath('/a?x=1#section'), '/a?x=1#section');
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
