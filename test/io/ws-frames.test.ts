// Playbook tests for the frame-header parser: bytes in → exact events out, for every way a stream
// can be cut into reads, and for each RFC 6455 §5.2/§5.5 violation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as wsLib from 'ws';
import { FrameParser, type FrameHeader, type FrameSink, type FrameParserOptions } from '../../src/io/ws-frames.js';
import { negotiatedExtensions, parseExtensionList } from '../../src/io/ws-extensions.js';

type Ev = ['start', Omit<FrameHeader, 'rsv2' | 'rsv3'>] | ['payload', string] | ['end'] | ['error', string, boolean];

/** Records events; consecutive payload slices of one frame are merged (reads may cut anywhere). */
function recorder(): { sink: FrameSink; events: Ev[]; slices: Buffer[] } {
  const events: Ev[] = [];
  const slices: Buffer[] = [];
  const sink: FrameSink = {
    frameStart: (h) => events.push(['start', { fin: h.fin, rsv1: h.rsv1, opcode: h.opcode, masked: h.masked, maskKey: h.maskKey, payloadLength: h.payloadLength, headerBytes: h.headerBytes }]),
    payload: (d) => {
      slices.push(d);
      const last = events[events.length - 1];
      if (last[0] === 'payload') last[1] += d.toString('hex');
      else events.push(['payload', d.toString('hex')]);
    },
    frameEnd: () => events.push(['end']),
    error: (_c, detail, fatal) => events.push(['error', detail, fatal]),
  };
  return { sink, events, slices };
}

interface F { fin?: boolean; rsv1?: boolean; rsv2?: boolean; opcode: number; mask?: Buffer | null; payload?: Buffer; len64?: boolean }

/** A frame built by hand (so invalid ones can be built too); payload is masked when a key is given. */
function frame(f: F): Buffer {
  const p = f.payload ?? Buffer.alloc(0);
  const b0 = (f.fin === false ? 0 : 0x80) | (f.rsv1 ? 0x40 : 0) | (f.rsv2 ? 0x20 : 0) | f.opcode;
  const m = f.mask ? 0x80 : 0;
  let head: Buffer;
  if (f.len64 || p.length > 0xffff) {
    head = Buffer.alloc(10);
    head[1] = m | 127;
    head.writeUInt32BE(Math.floor(p.length / 2 ** 32), 2);
    head.writeUInt32BE(p.length >>> 0, 6);
  } else if (p.length > 125) {
    head = Buffer.alloc(4);
    head[1] = m | 126;
    head.writeUInt16BE(p.length, 2);
  } else {
    head = Buffer.alloc(2);
    head[1] = m | p.length;
  }
  head[0] = b0;
  if (!f.mask) return Buffer.concat([head, p]);
  const masked = Buffer.from(p.map((x, i) => x ^ f.mask![i & 3]));
  return Buffer.concat([head, f.mask, masked]);
}

function parseAll(opts: FrameParserOptions, chunks: Buffer[]): { events: Ev[]; slices: Buffer[]; parser: FrameParser } {
  const r = recorder();
  const parser = new FrameParser(opts, r.sink);
  for (const c of chunks) parser.push(c);
  return { events: r.events, slices: r.slices, parser };
}

const server: FrameParserOptions = { sender: 'server', deflate: true };
const client: FrameParserOptions = { sender: 'client', deflate: true };

test('one read with many frames: text, 16-bit binary, empty frame, ping between fragments', () => {
  const big = randomBytes(300);
  const wire = Buffer.concat([
    frame({ opcode: 1, payload: Buffer.from('hello') }),
    frame({ opcode: 2, payload: big }),
    frame({ opcode: 1, fin: false, rsv1: true, payload: Buffer.from('ab') }),
    frame({ opcode: 9, payload: Buffer.from('p') }),
    frame({ opcode: 0, fin: false, payload: Buffer.alloc(0) }),
    frame({ opcode: 0, payload: Buffer.from('cd') }),
  ]);
  const { events } = parseAll(server, [wire]);
  assert.deepEqual(events, [
    ['start', { fin: true, rsv1: false, opcode: 1, masked: false, maskKey: 0, payloadLength: 5, headerBytes: 2 }],
    ['payload', Buffer.from('hello').toString('hex')],
    ['end'],
    ['start', { fin: true, rsv1: false, opcode: 2, masked: false, maskKey: 0, payloadLength: 300, headerBytes: 4 }],
    ['payload', big.toString('hex')],
    ['end'],
    ['start', { fin: false, rsv1: true, opcode: 1, masked: false, maskKey: 0, payloadLength: 2, headerBytes: 2 }],
    ['payload', '6162'],
    ['end'],
    ['start', { fin: true, rsv1: false, opcode: 9, masked: false, maskKey: 0, payloadLength: 1, headerBytes: 2 }],
    ['payload', '70'],
    ['end'],
    ['start', { fin: false, rsv1: false, opcode: 0, masked: false, maskKey: 0, payloadLength: 0, headerBytes: 2 }],
    ['end'],
    ['start', { fin: true, rsv1: false, opcode: 0, masked: false, maskKey: 0, payloadLength: 2, headerBytes: 2 }],
    ['payload', '6364'],
    ['end'],
  ]);
});

test('every split point into two reads, and one byte per read, give the same events', () => {
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const wire = Buffer.concat([
    frame({ opcode: 1, mask: key, payload: Buffer.from('first') }),
    frame({ opcode: 2, fin: false, mask: randomBytes(4), payload: randomBytes(200) }),
    frame({ opcode: 10, mask: randomBytes(4), payload: Buffer.from('pong!') }),
    frame({ opcode: 0, mask: randomBytes(4), payload: randomBytes(3) }),
    frame({ opcode: 8, mask: randomBytes(4), payload: Buffer.from([0x03, 0xe8, 0x62, 0x79, 0x65]) }),
    frame({ opcode: 2, mask: randomBytes(4), payload: randomBytes(20), len64: true }),
  ]);
  const whole = parseAll(client, [wire]).events;
  assert.equal(whole.filter((e) => e[0] === 'end').length, 6);
  assert.deepEqual(whole[0], ['start', { fin: true, rsv1: false, opcode: 1, masked: true, maskKey: 0x12345678, payloadLength: 5, headerBytes: 6 }]);
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(parseAll(client, [wire.subarray(0, i), wire.subarray(i)]).events, whole, `split at ${i}`);
  }
  const bytes = Array.from({ length: wire.length }, (_, i) => wire.subarray(i, i + 1));
  assert.deepEqual(parseAll(client, bytes).events, whole);
});

test('payload slices are views of the pushed buffer, not copies', () => {
  const wire = frame({ opcode: 2, payload: Buffer.from('zero-copy') });
  const { slices } = parseAll(server, [wire]);
  assert.equal(slices.length, 1);
  assert.equal(slices[0].buffer, wire.buffer);
  assert.equal(slices[0].byteOffset, wire.byteOffset + 2);
});

test('16-bit and 64-bit lengths, including a 70,000-byte frame cut at header and payload points', () => {
  const p16 = randomBytes(0xffff);
  const p64 = randomBytes(70_000);
  const wire = Buffer.concat([frame({ opcode: 2, payload: p16 }), frame({ opcode: 2, payload: p64 })]);
  const whole = parseAll(server, [wire]).events;
  assert.deepEqual(whole[0], ['start', { fin: true, rsv1: false, opcode: 2, masked: false, maskKey: 0, payloadLength: 0xffff, headerBytes: 4 }]);
  assert.deepEqual(whole[3], ['start', { fin: true, rsv1: false, opcode: 2, masked: false, maskKey: 0, payloadLength: 70_000, headerBytes: 10 }]);
  assert.equal(whole[4][1], p64.toString('hex'));
  const second = 4 + 0xffff;
  for (const i of [1, 2, 3, 4, 5, 1000, second, second + 1, second + 5, second + 9, second + 10, second + 11, wire.length - 1]) {
    assert.deepEqual(parseAll(server, [wire.subarray(0, i), wire.subarray(i)]).events, whole, `split at ${i}`);
  }
});

test('frames produced by the ws library parse with the lengths and keys it wrote', () => {
  const data = randomBytes(1000);
  const Sender = (wsLib as unknown as { Sender: { frame(d: Buffer, o: object): Buffer[] } }).Sender;
  const wire = Buffer.concat(Sender.frame(Buffer.from(data), { fin: true, rsv1: false, opcode: 2, mask: true, readOnly: false }));
  const { events } = parseAll(client, [wire]);
  const key = wire.readUInt32BE(4); // ws picks a random key
  assert.deepEqual(events[0], ['start', { fin: true, rsv1: false, opcode: 2, masked: true, maskKey: key, payloadLength: 1000, headerBytes: 8 }]);
  const k = wire.subarray(4, 8);
  const masked = Buffer.from(events[1][1] as string, 'hex');
  assert.deepEqual(Buffer.from(masked.map((x, i) => x ^ k[i & 3])), data);
});

function violation(opts: FrameParserOptions, wire: Buffer, detail: string, fatal = true): Ev[] {
  const { events, parser } = parseAll(opts, [wire, frame({ opcode: 1, payload: Buffer.from('after') })]);
  const err = events.find((e) => e[0] === 'error');
  assert.deepEqual(err, ['error', detail, fatal]);
  assert.equal(parser.failed, fatal);
  if (fatal) assert.deepEqual(events[events.length - 1], err, 'nothing is parsed after a fatal error');
  return events;
}

test('violations: reserved opcodes, RSV bits, lengths, control-frame rules, fragmentation order', () => {
  violation(server, frame({ opcode: 3 }), 'reserved opcode 3');
  violation(server, frame({ opcode: 11 }), 'reserved opcode 11');
  violation(server, frame({ opcode: 1, rsv2: true }), 'RSV2 set without a negotiated extension');
  violation({ sender: 'server', deflate: false }, frame({ opcode: 1, rsv1: true }), 'RSV1 set without permessage-deflate');
  violation(server, Buffer.concat([frame({ opcode: 1, fin: false, rsv1: true }), frame({ opcode: 0, rsv1: true })]), 'RSV1 set on a continuation frame');
  violation(server, frame({ opcode: 9, rsv1: true }), 'RSV1 set on a control frame');
  const top = Buffer.from([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]);
  violation(server, top, '64-bit payload length with the top bit set');
  violation(server, Buffer.from([0x82, 127, 0x00, 0x40, 0, 0, 0, 0, 0, 1]), '64-bit payload length over 2^53');
  violation(server, frame({ opcode: 9, payload: Buffer.alloc(126) }), 'control frame payload over 125 bytes');
  violation(server, frame({ opcode: 8, fin: false }), 'fragmented control frame');
  violation(server, frame({ opcode: 0, payload: Buffer.from('x') }), 'continuation frame without a started message');
  violation(server, Buffer.concat([frame({ opcode: 1, fin: false }), frame({ opcode: 2 })]), 'new data frame while a fragmented message is open');
});

test('an unknown negotiated extension makes RSV bits legal', () => {
  const { events, parser } = parseAll({ sender: 'server', deflate: false, unknownExtension: true }, [frame({ opcode: 1, rsv1: true, rsv2: true, payload: Buffer.from('x') })]);
  assert.equal(parser.failed, false);
  assert.equal(events.length, 3);
});

test('mask violations are flagged but parsing continues (framing stays unambiguous)', () => {
  const ev1 = violation(client, frame({ opcode: 1, payload: Buffer.from('hi') }), 'unmasked client frame', false);
  assert.equal(ev1.filter((e) => e[0] === 'end').length, 2);
  const ev2 = violation(server, frame({ opcode: 1, mask: Buffer.from([9, 9, 9, 9]), payload: Buffer.from('hi') }), 'masked server frame', false);
  assert.deepEqual(ev2[0], ['start', { fin: true, rsv1: false, opcode: 1, masked: true, maskKey: 0x09090909, payloadLength: 2, headerBytes: 6 }]);
  assert.equal(ev2.filter((e) => e[0] === 'end').length, 2);
});

test('partial header and open message are visible for truncated-stream reports', () => {
  const { parser } = parseAll(server, [frame({ opcode: 1, fin: false, payload: Buffer.from('a') }), Buffer.from([0x80])]);
  assert.equal(parser.messageOpen, true);
  assert.deepEqual(parser.partialHeader(), { opcode: 0, bytes: 1 });
  const p2 = parseAll(server, [frame({ opcode: 2, payload: Buffer.alloc(10) }).subarray(0, 5)]).parser;
  assert.equal(p2.inPayload, true);
  assert.equal(p2.partialHeader(), null);
});

// ── Sec-WebSocket-Extensions of the 101 response (src/io/ws-extensions.ts) ──────────────────────

test('negotiated permessage-deflate parameters map to the two directions', () => {
  assert.deepEqual(negotiatedExtensions([['Sec-WebSocket-Extensions', 'permessage-deflate']]), {
    client: { contextTakeover: true, windowBits: 15 }, server: { contextTakeover: true, windowBits: 15 }, others: [], problems: [],
  });
  const r = negotiatedExtensions([
    ['Content-Type', 'x'],
    ['sec-websocket-extensions', 'permessage-deflate; client_no_context_takeover; server_max_window_bits="10"; client_max_window_bits=9'],
  ]);
  assert.deepEqual([r.client, r.server], [{ contextTakeover: false, windowBits: 9 }, { contextTakeover: true, windowBits: 10 }]);
  const s = negotiatedExtensions([['Sec-WebSocket-Extensions', 'permessage-deflate;server_no_context_takeover']]);
  assert.deepEqual([s.client, s.server], [{ contextTakeover: true, windowBits: 15 }, { contextTakeover: false, windowBits: 15 }]);
  assert.deepEqual(negotiatedExtensions([]), { client: null, server: null, others: [], problems: [] });
});

test('several extensions, several headers, and lenient handling of invalid parameters', () => {
  const r = negotiatedExtensions([
    ['Sec-WebSocket-Extensions', 'x-webkit-foo; a="q\\"x, y"'],
    ['Sec-WebSocket-Extensions', 'permessage-deflate; client_max_window_bits; server_max_window_bits=16; bogus, permessage-deflate; server_no_context_takeover'],
  ]);
  assert.deepEqual(r.others, ['x-webkit-foo']);
  assert.deepEqual([r.client, r.server], [{ contextTakeover: true, windowBits: 15 }, { contextTakeover: true, windowBits: 15 }], 'the first permessage-deflate counts');
  assert.deepEqual(r.problems, ['client_max_window_bits without a value', 'server_max_window_bits=16 is not 8..15', 'unknown parameter bogus', 'permessage-deflate accepted twice; the first one counts']);
  assert.deepEqual(parseExtensionList('a; b = "c;d" ; e,  f'), [{ name: 'a', params: [['b', 'c;d'], ['e', true]] }, { name: 'f', params: [] }]);
});
