// SOCKS5 server handshake as a pure state machine (RFC 1928, username/password: RFC 1929).
// Bytes in → steps out; the listener owns the socket, writes `write`, dials on 'request' and answers
// with socks5Reply(). Input may be split anywhere or arrive all at once (an eager client sends its
// method selection, credentials, request and first payload bytes in one segment), so each stage
// parses only complete messages and leaves the rest in the buffer for the next stage.
import crypto from 'node:crypto';
import net from 'node:net';

export const REP = {
  SUCCEEDED: 0,
  GENERAL_FAILURE: 1,
  NOT_ALLOWED: 2,
  NETWORK_UNREACHABLE: 3,
  HOST_UNREACHABLE: 4,
  CONNECTION_REFUSED: 5,
  TTL_EXPIRED: 6,
  COMMAND_NOT_SUPPORTED: 7,
  ADDRESS_TYPE_NOT_SUPPORTED: 8,
} as const;

export interface Socks5Request {
  cmd: number;
  host: string;
  port: number;
  atyp: 'ipv4' | 'ipv6' | 'domain';
  user?: string;
}

export type Socks5Step =
  | { type: 'need-more'; write?: Buffer } // write these bytes to the client (method selection / auth reply), wait for more
  | { type: 'request'; request: Socks5Request; rest: Buffer; write?: Buffer } // handshake complete; rest = bytes after the request
  | { type: 'error'; detail: string; write?: Buffer; close: true }; // write (REP reply or 0xFF method rejection), then close

const VER = 0x05;
const AUTH_VER = 0x01; // RFC 1929 §2: version of the username/password subnegotiation
const METHOD_NONE = 0x00;
const METHOD_USERPASS = 0x02;
const NO_ACCEPTABLE = 0xff;
const CMD_CONNECT = 0x01;
const ATYP_IPV4 = 0x01;
const ATYP_DOMAIN = 0x03;
const ATYP_IPV6 = 0x04;
/**
 * Memory bound: every length field is one byte, so no handshake message exceeds 513 bytes
 * (auth: VER ULEN UNAME PLEN PASSWD = 3 + 255 + 255) and each stage completes or fails as soon as its message is whole. The
 * buffer therefore never holds more than one incomplete message (< 513 B) — a bound by
 * construction, no counter needed. Bytes beyond the request are handed back as `rest` at once.
 */
export const MAX_HANDSHAKE_MESSAGE = 513;

type Stage = 'methods' | 'auth' | 'request' | 'done' | 'failed';

/** Internal result of one stage: null = incomplete, otherwise bytes consumed and what to do. */
type StageResult = null | { used: number; write?: Buffer; error?: string; request?: Socks5Request };

export class Socks5Handshake {
  private stage: Stage = 'methods';
  private buf: Buffer = Buffer.alloc(0);
  private user: string | undefined;
  private readonly users: { user: Buffer; pass: Buffer }[] | null;

  constructor(opts: { users: { user: string; pass: string }[] | null }) {
    this.users = opts.users ? opts.users.map((u) => ({ user: Buffer.from(u.user), pass: Buffer.from(u.pass) })) : null;
  }

  /** Bytes held awaiting the rest of a message (always < MAX_HANDSHAKE_MESSAGE). */
  get buffered(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): Socks5Step {
    if (this.stage === 'done') return this.fail('data pushed after the handshake completed (pass it through as payload)');
    if (this.stage === 'failed') return this.fail('handshake already failed');
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const writes: Buffer[] = [];
    for (;;) {
      const r = this.step();
      if (r === null) break;
      if (r.write) writes.push(r.write);
      this.buf = this.buf.subarray(r.used);
      if (r.error !== undefined) return this.fail(r.error, writes);
      if (r.request) {
        this.stage = 'done';
        const rest = this.buf;
        this.buf = Buffer.alloc(0);
        return { type: 'request', request: r.request, rest, ...joined(writes) };
      }
    }
    return { type: 'need-more', ...joined(writes) };
  }

  private fail(detail: string, writes: Buffer[] = []): Socks5Step {
    this.stage = 'failed';
    this.buf = Buffer.alloc(0);
    return { type: 'error', detail, close: true, ...joined(writes) };
  }

  private step(): StageResult {
    switch (this.stage) {
      case 'methods':
        return this.methods();
      case 'auth':
        return this.auth();
      case 'request':
        return this.request();
      default:
        return null;
    }
  }

  /** RFC 1928 §3: VER NMETHODS METHODS[NMETHODS] → VER METHOD. */
  private methods(): StageResult {
    const b = this.buf;
    if (b.length < 1) return null;
    if (b[0] !== VER) return { used: 0, error: notSocks5(b), write: refusalOf(b) };
    if (b.length < 2 || b.length < 2 + b[1]) return null;
    const offered = b.subarray(2, 2 + b[1]);
    const want = this.users ? METHOD_USERPASS : METHOD_NONE;
    const used = 2 + b[1];
    if (!offered.includes(want)) {
      const list = [...offered].map((m) => '0x' + m.toString(16).padStart(2, '0')).join(',') || 'none';
      return { used, write: Buffer.from([VER, NO_ACCEPTABLE]), error: `no acceptable auth method (offered ${list}, need 0x0${want})` };
    }
    this.stage = this.users ? 'auth' : 'request';
    return { used, write: Buffer.from([VER, want]) };
  }

  /** RFC 1929 §2: VER(1) ULEN UNAME PLEN PASSWD → VER STATUS; non-zero status closes. */
  private auth(): StageResult {
    const b = this.buf;
    if (b.length < 2) return null;
    if (b[0] !== AUTH_VER) return { used: 0, write: Buffer.from([AUTH_VER, 0x01]), error: `bad username/password subnegotiation version 0x${b[0].toString(16)}` };
    const ulen = b[1];
    if (b.length < 3 + ulen) return null;
    const plen = b[2 + ulen];
    if (b.length < 3 + ulen + plen) return null;
    const user = b.subarray(2, 2 + ulen);
    const pass = b.subarray(3 + ulen, 3 + ulen + plen);
    const used = 3 + ulen + plen;
    if (!this.checkCredentials(user, pass)) {
      return { used, write: Buffer.from([AUTH_VER, 0x01]), error: `authentication failed for user "${printable(user)}"` };
    }
    this.user = user.toString('utf8');
    this.stage = 'request';
    return { used, write: Buffer.from([AUTH_VER, 0x00]) };
  }

  private checkCredentials(user: Buffer, pass: Buffer): boolean {
    // Compare digests so neither the length nor the content of a configured secret leaks by timing.
    const h = (x: Buffer) => crypto.createHash('sha256').update(x).digest();
    const [hu, hp] = [h(user), h(pass)];
    let ok = false;
    for (const u of this.users ?? []) {
      if ((crypto.timingSafeEqual(hu, h(u.user)) ? 1 : 0) & (crypto.timingSafeEqual(hp, h(u.pass)) ? 1 : 0)) ok = true;
    }
    return ok;
  }

  /** RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. */
  private request(): StageResult {
    const b = this.buf;
    if (b.length < 4) return null;
    if (b[0] !== VER) return { used: 0, write: socks5Reply(REP.GENERAL_FAILURE), error: `bad request version 0x${b[0].toString(16)}` };
    // RSV (b[2]) is ignored: RFC 1928 only names it "reserved", and rejecting non-zero gains nothing.
    // The command and address type are checked before the address arrives: both replies close the
    // connection, and an unknown ATYP leaves the message length unknown anyway (§6: X'07', X'08').
    const cmd = b[1];
    if (cmd !== CMD_CONNECT) {
      const what = cmd === 2 ? 'BIND' : cmd === 3 ? 'UDP ASSOCIATE' : `0x${cmd.toString(16)}`;
      return { used: 0, write: socks5Reply(REP.COMMAND_NOT_SUPPORTED), error: `command ${what} not supported (CONNECT only)` };
    }
    const atyp = b[3];
    let host: string;
    let kind: Socks5Request['atyp'];
    let end: number;
    if (atyp === ATYP_IPV4) {
      end = 4 + 4;
      if (b.length < end + 2) return null;
      host = `${b[4]}.${b[5]}.${b[6]}.${b[7]}`;
      kind = 'ipv4';
    } else if (atyp === ATYP_IPV6) {
      end = 4 + 16;
      if (b.length < end + 2) return null;
      host = ipv6String(b.subarray(4, end));
      kind = 'ipv6';
    } else if (atyp === ATYP_DOMAIN) {
      if (b.length < 5) return null;
      end = 5 + b[4];
      if (b.length < end + 2) return null;
      const raw = b.subarray(5, end);
      // A domain reaches DNS, logs and records: refuse empty names, spaces and control bytes.
      if (raw.length === 0 || raw.some((c) => c <= 0x20 || c === 0x7f)) {
        return { used: 0, write: socks5Reply(REP.GENERAL_FAILURE), error: `invalid domain name "${printable(raw)}"` };
      }
      host = raw.toString('utf8');
      kind = 'domain';
    } else {
      return { used: 0, write: socks5Reply(REP.ADDRESS_TYPE_NOT_SUPPORTED), error: `address type 0x${atyp.toString(16)} not supported` };
    }
    const port = b.readUInt16BE(end);
    const request: Socks5Request = { cmd, host, port, atyp: kind };
    if (this.user !== undefined) request.user = this.user;
    return { used: end + 2, request };
  }
}

function joined(writes: Buffer[]): { write?: Buffer } {
  return writes.length === 0 ? {} : { write: writes.length === 1 ? writes[0] : Buffer.concat(writes) };
}

function printable(b: Buffer): string {
  return b.toString('latin1').replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
}

const looksLikeHttp = (b: Buffer) => /^[A-Z]{3,7} /.test(b.subarray(0, 8).toString('latin1')) || (b.length < 8 && /^[A-Z]+$/.test(b.toString('latin1')));

function notSocks5(b: Buffer): string {
  if (b[0] === 0x04) return 'SOCKS4 is not supported (SOCKS5 only)';
  if (looksLikeHttp(b)) return 'not SOCKS5: looks like HTTP (use the HTTP proxy port)';
  if (b[0] === 0x16) return 'not SOCKS5: looks like a TLS ClientHello';
  return `not SOCKS5: version byte 0x${b[0].toString(16).padStart(2, '0')}`;
}

/**
 * What a client of another protocol understands as a refusal, where it has one: a SOCKS4 reply
 * "request rejected" (CD 91), or an HTTP 400 saying which port this is. (Closed without a word, curl
 * said only "connection to proxy closed".)
 */
function refusalOf(b: Buffer): Buffer | undefined {
  if (b[0] === 0x04) return Buffer.from([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
  if (!looksLikeHttp(b)) return undefined;
  const text = 'greytap: this is a SOCKS5 port; HTTP clients use the HTTP proxy port\n';
  return Buffer.from(`HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: ${text.length}\r\nconnection: close\r\n\r\n${text}`);
}

/** Canonical text of a 16-byte IPv6 address, as `net` prints it (compressed, lower-case). */
function ipv6String(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/**
 * Network-order bytes of an IPv4 or IPv6 literal (zone id dropped, embedded IPv4 tail allowed), or
 * null when `ip` is not an IP literal. Also used for certificate iPAddress SANs (tls-intercept.ts).
 */
export function ipToBytes(ip: string): Buffer | null {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!net.isIPv6(ip)) return null;
  let s = ip.replace(/%.*$/, '');
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const n = v4.slice(1).map(Number);
    s = s.slice(0, v4.index) + ((n[0] << 8) | n[1]).toString(16) + ':' + ((n[2] << 8) | n[3]).toString(16);
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT (default 0.0.0.0:0). */
export function socks5Reply(rep: number, bind: { host: string; port: number } = { host: '0.0.0.0', port: 0 }): Buffer {
  const host = bind.host.replace(/^\[(.*)\]$/, '$1');
  const ip = ipToBytes(host);
  let addr: Buffer;
  if (ip) addr = Buffer.concat([Buffer.from([ip.length === 4 ? ATYP_IPV4 : ATYP_IPV6]), ip]);
  else {
    const name = Buffer.from(host).subarray(0, 255);
    addr = Buffer.concat([Buffer.from([ATYP_DOMAIN, name.length]), name]);
  }
  const port = Buffer.alloc(2);
  port.writeUInt16BE(bind.port & 0xffff);
  return Buffer.concat([Buffer.from([VER, rep & 0xff, 0x00]), addr, port]);
}

/**
 * Maps a dial error to a reply code (RFC 1928 §6). A connect timeout is X'04' host unreachable,
 * not X'06' TTL expired: X'06' reports an ICMP time-exceeded, which a TCP connect timeout is not.
 */
export function replyForDialError(err: NodeJS.ErrnoException): number {
  switch (err.code) {
    case 'ECONNREFUSED':
      return REP.CONNECTION_REFUSED;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
    case 'EAI_NODATA':
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
    case 'ETIMEDOUT':
      return REP.HOST_UNREACHABLE;
    case 'ENETUNREACH':
    case 'ENETDOWN':
      return REP.NETWORK_UNREACHABLE;
    case 'EACCES':
    case 'EPERM':
    case 'PROXY_LOOP': // the target is greytap's own listener (upstream.ts dial())
      return REP.NOT_ALLOWED; // e.g. a local firewall rule refused the connect
    default:
      return REP.GENERAL_FAILURE;
  }
}
