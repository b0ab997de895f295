// Classifies the first bytes a client sends inside a tunnel, without consuming them: a TLS
// ClientHello (and its SNI), a plaintext HTTP/1.x request, or anything else (tunnelled raw).

export type FirstBytes =
  | { kind: 'need-more' }
  | { kind: 'tls'; sni?: string }
  | { kind: 'http' }
  | { kind: 'other' };

/**
 * How much of a ClientHello we wait for. The handshake message may be split over several records
 * (RFC 8446 §5.1: "handshake messages MAY be fragmented across several records"; OpenSSL does so
 * past max_send_fragment): its fragments are joined, up to one full record's worth plus headers.
 */
export const MAX_PEEK = 16 * 1024 + 5;

const METHOD = /^[A-Z]{3,12} /;

export function classifyFirstBytes(buf: Buffer): FirstBytes {
  if (buf.length === 0) return { kind: 'need-more' };
  // TLS record: content type 22 (handshake), legacy version 3.x (RFC 8446 §5.1).
  if (buf[0] === 0x16) {
    if (buf.length < 5) return { kind: 'need-more' };
    if (buf[1] !== 3) return { kind: 'other' };
    const hello = handshakeMessage(buf);
    if (hello === null) return buf.length >= MAX_PEEK ? { kind: 'tls' } : { kind: 'need-more' };
    return { kind: 'tls', sni: hello === undefined ? undefined : parseSni(hello) };
  }
  const head = buf.subarray(0, 14).toString('latin1');
  if (METHOD.test(head)) return { kind: 'http' };
  if (buf.length < 14 && /^[A-Z]+$/.test(head)) return { kind: 'need-more' };
  return { kind: 'other' };
}

/**
 * The first handshake message, joined from the fragments of the leading handshake records: null
 * while incomplete, undefined when the records cannot hold one (another content type first, an
 * empty record, a message too large to wait for).
 */
function handshakeMessage(buf: Buffer): Buffer | null | undefined {
  const parts: Buffer[] = [];
  let have = 0;
  let need = -1; // message length with its 4-byte header, once known
  for (let p = 0; ; ) {
    if (p + 5 > buf.length) return null;
    if (buf[p] !== 0x16 || buf[p + 1] !== 3) return undefined;
    const len = buf.readUInt16BE(p + 3);
    if (len === 0) return undefined; // RFC 8446 §5.1: no zero-length handshake fragments
    if (p + 5 + len > buf.length) return null;
    parts.push(buf.subarray(p + 5, p + 5 + len));
    have += len;
    p += 5 + len;
    if (need < 0 && have >= 4) {
      const head = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      need = 4 + head.readUIntBE(1, 3);
      if (need > MAX_PEEK) return undefined;
    }
    if (need >= 0 && have >= need) return (parts.length === 1 ? parts[0] : Buffer.concat(parts)).subarray(0, need);
  }
}

/** server_name from a ClientHello handshake message (RFC 8446 §4.1.2, RFC 6066 §3); undefined when absent or malformed. */
function parseSni(hs: Buffer): string | undefined {
  try {
    if (hs[0] !== 1) return undefined; // not a ClientHello
    let p = 4 + 2 + 32; // handshake header, legacy_version, random
    p += 1 + hs[p]; // session id
    p += 2 + hs.readUInt16BE(p); // cipher suites
    p += 1 + hs[p]; // compression methods
    const extEnd = p + 2 + hs.readUInt16BE(p);
    p += 2;
    while (p + 4 <= extEnd) {
      const type = hs.readUInt16BE(p);
      const len = hs.readUInt16BE(p + 2);
      p += 4;
      if (p + len > hs.length) return undefined;
      if (type === 0) {
        // server_name_list: u16 length, then entries (type u8, u16 length, name)
        let q = p + 2;
        while (q + 3 <= p + len) {
          const nameType = hs[q];
          const nameLen = hs.readUInt16BE(q + 1);
          if (nameType === 0) return q + 3 + nameLen <= p + len ? hs.toString('ascii', q + 3, q + 3 + nameLen).toLowerCase() : undefined;
          q += 3 + nameLen;
        }
        return undefined;
      }
      p += len;
    }
  } catch {
    // a truncated or malformed hello: no SNI
  }
  return undefined;
}
