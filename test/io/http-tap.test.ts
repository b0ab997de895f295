// The HTTP tap driven directly (no sockets): bytes in, records out through the worker's decode —
// minimal reproducers of what bench/fuzz-http.ts found.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runTap, type Piece } from '../../bench/http-fuzz.js';

const client = (s: string): Piece => ['client', Buffer.from(s, 'latin1')];
const server = (s: string): Piece => ['server', Buffer.from(s, 'latin1')];

test('CL.TE: a request with both Content-Length and chunked closes a bound connection (an origin reading the length sees the hidden request)', () => {
  const hidden = 'GET http://evil.test/steal HTTP/1.1\r\nHost: evil.test\r\n\r\n';
  const size = `${hidden.length.toString(16)}\r\n`;
  // by the length: a POST with body `size`, then `hidden`; by the chunks: a POST whose body is `hidden`
  const smuggler = `POST http://origin.test:80/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: ${size.length}\r\nTransfer-Encoding: chunked\r\n\r\n${size}${hidden}\r\n0\r\n\r\n`;
  const run = runTap([client(smuggler)], true);
  assert.equal(run.closed, 'unchecked_request');
  assert.equal(run.records.length, 1);
  assert.equal(run.records[0].error, 'bad_http');
  assert.equal(run.records[0].errorDetail, 'both Transfer-Encoding and Content-Length');
  // not bound: capture stops there, and says why
  const free = runTap([client(smuggler), server('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')], false);
  assert.deepEqual(free.records.map((r) => [r.method, r.error]), [['', 'bad_http']]);
});

test('a malformed pipelined request: the responses to the requests before it are still captured, its error recorded after them', () => {
  const run = runTap([
    client('GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP\r\n\r\n'),
    server('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope'),
    server('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'), // the origin's answer to the broken request: not an exchange of its own
  ], false);
  assert.deepEqual(run.records.map((r) => [r.path, r.status, r.respBody, r.error, r.errorDetail]), [
    ['/a', 200, 'ok', undefined, undefined],
    ['/b', 404, 'nope', undefined, undefined],
    ['', undefined, undefined, 'bad_http', 'bad request line: "NOT HTTP"'],
  ]);
  // broken inside its body (a bad chunk size): that exchange carries the error, and its response if one comes
  const body = runTap([
    client('GET /a HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'),
    server('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad'),
  ], false);
  assert.deepEqual(body.records.map((r) => [r.path, r.status, r.respBody, r.error, r.errorDetail]), [
    ['/a', 200, 'ok', undefined, undefined],
    ['/c', 400, 'bad', 'bad_http', 'bad chunk size: "zz"'],
  ]);
});

test('an absolute-form target with a query and no path is recorded with the path "/" before the query', () => {
  const run = runTap([
    client('GET http://origin.test:80?x=1 HTTP/1.1\r\nHost: origin.test\r\n\r\n'),
    server('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  ], false);
  assert.deepEqual(run.records.map((r) => r.path), ['/?x=1']);
});
