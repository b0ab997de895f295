// Classifies the first bytes a client sends inside a tunnel, without consuming them: a TLS
// ClientHello (and its SNI and ALPN offer), a plaintext HTTP/1.x request, or anything else
// (tunnelled raw).

export type FirstBytes =
  | { kind: 'need-more' }
  | { kind: 'tls'; sni?: string; alpn?: string[] } // alpn: the protocols offered, when the hello carries the extension
  | { kind: 'http' }
  | { kind: 'other' };

/**
 * How much of a ClientHello we wait for. The handshake message may be split over several records
 * (RFC 8446 §5.1: "handshake messages MAY be fragmented across several records"; OpenSSL does so
 * past max_send_fragment): its fragments are joined, up to one full record's worth plus headers.
 */
export const MAX_PEEK = 16 * 1024 + 5;

/** A request line's method, as clients send them (M-SEARCH included); digits are left out, so an IMAP tag ("A001 ") is not one. */
const METHOD = /^[A-Z][A-Z-]{2,19} /;

/** The first byte of a TLS handshake record: content type 22 (RFC 8446 §5.1). */
const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * Whether bytes that classifyFirstBytes still calls 'need-more' are the start of a ClientHello: a
 * handshake record header (TLS 1.x version, a length a record may have) and the ClientHello type.
 */
export function beginsClientHello(buf: Buffer): boolean {
  if (buf.length < 6 || buf[0] !== TLS_HANDSHAKE_RECORD || buf[1] !== 3 || buf[2] > 4) return false;
  const len = buf.readUInt16BE(3);
  return len > 0 && len <= 1 << 14 && buf[5] === 1;
}

export function classifyFirstBytes(buf: Buffer): FirstBytes {
  if (buf.length === 0) return { kind: 'need-more' };
  // TLS record: a handshake, legacy version 3.x.
  if (buf[0] === TLS_HANDSHAKE_RECORD) {
    if (buf.length < 5) return { kind: 'need-more' };
    if (buf[1] !== 3) return { kind: 'other' };
    const hello = handshakeMessage(buf);
    if (hello === null) return buf.length >= MAX_PEEK ? { kind: 'tls' } : { kind: 'need-more' };
    return { kind: 'tls', ...(hello === undefined ? { sni: undefined } : parseHello(hello)) };
  }
  const head = buf.subarray(0, 21).toString('latin1');
  if (METHOD.test(head)) return { kind: 'http' };
  if (buf.length < 21 && /^[A-Z][A-Z-]*$/.test(head)) return { kind: 'need-more' };
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

/**
 * server_name (RFC 6066 §3) and application_layer_protocol_negotiation (RFC 7301 §3.1) from a
 * ClientHello handshake message (RFC 8446 §4.1.2); sni undefined when absent or malformed, alpn
 * only when the extension is there and well-formed.
 */
function parseHello(hs: Buffer): { sni: string | undefined; alpn?: string[] } {
  let sni: string | undefined;
  let alpn: string[] | undefined;
  try {
    if (hs[0] !== 1) return { sni }; // not a ClientHello
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
      const end = p + len;
      if (end > hs.length) break;
      if (type === 0) {
        // server_name_list: u16 length, then entries (type u8, u16 length, name)
        for (let q = p + 2; q + 3 <= end; ) {
          const nameType = hs[q];
          const nameLen = hs.readUInt16BE(q + 1);
          if (nameType === 0) {
            // utf8, not ascii: 'ascii' drops each byte's high bit, turning a non-ASCII name into
            // another, valid one (UTF-8 'ðð' → 'c0c0') that would be issued a leaf and dialled.
            // As UTF-8 it stays what the client sent, which no leaf is issued for (normalizeCertName).
            if (q + 3 + nameLen <= end) sni = hs.toString('utf8', q + 3, q + 3 + nameLen).toLowerCase();
            break;
          }
          q += 3 + nameLen;
        }
      } else if (type === 16) {
        // protocol_name_list: u16 length, then entries (u8 length, name)
        const list: string[] = [];
        let q = p + 2;
        while (q < end && q + 1 + hs[q] <= end) {
          list.push(hs.toString('latin1', q + 1, q + 1 + hs[q]));
          q += 1 + hs[q];
        }
        if (q === end) alpn = list;
      }
      p = end;
    }
  } catch {
    // a truncated or malformed hello: what was read so far
  }
  return alpn ? { sni, alpn } : { sni };
}
