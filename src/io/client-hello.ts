// Classifies the first bytes a client sends inside a tunnel, without consuming them: a TLS
// ClientHello (and its SNI), a plaintext HTTP/1.x request, or anything else (tunnelled raw).

export type FirstBytes =
  | { kind: 'need-more' }
  | { kind: 'tls'; sni?: string }
  | { kind: 'http' }
  | { kind: 'other' };

/** A ClientHello spans one TLS record (≤ 16 KiB + header); more than that is not a hello we can read. */
export const MAX_PEEK = 16 * 1024 + 5;

const METHOD = /^[A-Z]{3,12} /;

export function classifyFirstBytes(buf: Buffer): FirstBytes {
  if (buf.length === 0) return { kind: 'need-more' };
  // TLS record: content type 22 (handshake), legacy version 3.x (RFC 8446 §5.1).
  if (buf[0] === 0x16) {
    if (buf.length < 5) return { kind: 'need-more' };
    if (buf[1] !== 3) return { kind: 'other' };
    const recLen = buf.readUInt16BE(3);
    if (buf.length < 5 + recLen) return buf.length >= MAX_PEEK ? { kind: 'tls' } : { kind: 'need-more' };
    return { kind: 'tls', sni: parseSni(buf.subarray(5, 5 + recLen)) };
  }
  const head = buf.subarray(0, 14).toString('latin1');
  if (METHOD.test(head)) return { kind: 'http' };
  if (buf.length < 14 && /^[A-Z]+$/.test(head)) return { kind: 'need-more' };
  return { kind: 'other' };
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
      if (type === 0) {
        // server_name_list: u16 length, then entries (type u8, u16 length, name)
        let q = p + 2;
        while (q + 3 <= p + len) {
          const nameType = hs[q];
          const nameLen = hs.readUInt16BE(q + 1);
          if (nameType === 0) return hs.toString('ascii', q + 3, q + 3 + nameLen).toLowerCase();
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
