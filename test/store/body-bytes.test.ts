// Lazy body fields: utf8Head peeks at the start of a text body without decoding all of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bodyBytes, lazyBody, utf8Head } from '../../src/store/body-bytes.js';

test('utf8Head decodes only the head of a lazy text body; plain strings are sliced; absent fields are undefined', () => {
  let decodes = 0;
  const rec: Record<string, unknown> = {};
  const prefix = '{"type":"response.output_text.delta","delta":"';
  const text = prefix + 'é'.repeat(40_000) + '"}';
  lazyBody(rec, 'body', Buffer.from(text), (b) => { decodes++; return Buffer.from(b).toString('utf8'); });
  assert.equal(utf8Head(rec, 'body', 20), '{"type":"response.ou');
  // a two-byte character cut by the byte limit reads as U+FFFD, never as a wrong character
  assert.equal(utf8Head(rec, 'body', prefix.length + 1), prefix + '\ufffd');
  assert.equal(utf8Head(rec, 'body', prefix.length + 2), prefix + 'é');
  assert.equal(decodes, 0, 'the whole body was never decoded');
  assert.ok(bodyBytes(rec, 'body'));
  // once the string exists (someone read the field), the head comes from it
  assert.equal((rec.body as string).length, text.length);
  assert.equal(decodes, 1);
  assert.equal(utf8Head(rec, 'body', 9), '{"type":"');
  assert.equal(utf8Head({ body: 'plain text' }, 'body', 5), 'plain');
  assert.equal(utf8Head({}, 'body', 5), undefined);
  assert.equal(utf8Head({ bodyBase64: 'AAEC' }, 'body', 5), undefined);
});
