// Credential redaction: which headers, what marker, order/case kept, idempotent, extras honoured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactHeaders, REDACTED } from '../../src/store/redact.js';
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
