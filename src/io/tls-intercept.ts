// The interception CA and its leaf certificates.
//
// Cost model (FIELD-NOTES "TLS"): a new host must cost a signature, never a key generation or a
// pure-JS RSA operation, because this runs on the main thread that forwards every byte. So:
// - ONE leaf key pair (EC P-256, node:crypto, ~0.04 ms) is generated at start-up and shared by all
//   leaves; it lives only in memory.
// - Certificates are assembled with node-forge's ASN.1 layer (forge.pki models only RSA keys, so the
//   SubjectPublicKeyInfo comes from node:crypto as DER) and the TBSCertificate bytes are signed with
//   crypto.sign.
// - The CA key is EC P-256 too: its generation is instant on first start, an ECDSA P-256 signature
//   (~0.03 ms here) is ~10x cheaper than an RSA-2048 one (~0.26 ms) — the per-leaf cost — and every client we target
//   (OpenSSL/curl, Node, Python ssl, Chromium/BoringSSL) accepts ecdsa-with-SHA256 chains.
//   A CA key of type RSA on disk is still accepted (sha256WithRSAEncryption) in case one is swapped in.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';
import { ConfigError } from '../config.js';
import { certCache } from '../metrics.js';
import { ipToBytes } from './socks5.js';

export interface CertAuthority {
  caCertPem: string; // PEM of the CA certificate
  caCertPath: string; // <dataDir>/ca/greytap-ca.pem
  /**
   * SecureContext for a leaf cert for `name` (SNI host name, or an IP literal when there is no SNI). Sync, cached (LRU).
   * Throws an Error for a name no certificate can carry (spaces, empty labels…): fail that handshake.
   */
  secureContextFor(name: string): tls.SecureContext;
  /** A fresh leaf (PEM key + cert, not cached) for several names at once — for test upstream servers. */
  issueLeaf(names: string[]): { key: string; cert: string };
}

export interface CaOptions {
  /** LRU bound on cached leaf SecureContexts (default 1000). */
  cacheSize?: number;
  /** CN of a newly created CA (default "greytap CA <hostname>"). */
  commonName?: string;
}

const CA_DIR = 'ca';
const CA_CERT_FILE = 'greytap-ca.pem';
const CA_KEY_FILE = 'greytap-ca-key.pem';
const DAY_MS = 86_400_000;
const CA_DAYS = 3650;
// Chromium rejects leaves valid for more than 398 days (CA/B Forum BR 6.3.2); we stay under it.
const LEAF_DAYS = 397;
const DEFAULT_CACHE = 1000;

const asn1 = forge.asn1;
const { Class, Type } = asn1;
type Asn1 = forge.asn1.Asn1;

const OID = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  sha256WithRsa: '1.2.840.113549.1.1.11',
};

// ---------------------------------------------------------------- DER building blocks (forge.asn1)

const bin = (b: Buffer): string => b.toString('binary');
// @types/node-forge only knows the old boolean `strict` argument; forge ≥0.10 takes options.
// decodeBitStrings:false keeps BIT STRINGs (public keys, signatures) as opaque bytes.
const fromDer = (b: Buffer): Asn1 =>
  (asn1.fromDer as unknown as (bytes: string, o: { decodeBitStrings: boolean }) => Asn1)(bin(b), { decodeBitStrings: false });
const toBuf = (a: Asn1): Buffer => Buffer.from(asn1.toDer(a).getBytes(), 'binary');
const seq = (...items: Asn1[]): Asn1 => asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, items);
const oid = (o: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.OID, false, asn1.oidToDer(o).getBytes());
const octets = (b: Buffer): Asn1 => asn1.create(Class.UNIVERSAL, Type.OCTETSTRING, false, bin(b));
const bool = (v: boolean): Asn1 => asn1.create(Class.UNIVERSAL, Type.BOOLEAN, false, v ? '\xff' : '\x00');
const int = (b: Buffer): Asn1 => asn1.create(Class.UNIVERSAL, Type.INTEGER, false, bin(b));
/** A BIT STRING whose first content byte is the count of unused bits. */
const bits = (contents: Buffer): Asn1 => asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, bin(contents));

function time(d: Date): Asn1 {
  // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return d.getUTCFullYear() < 2050
    ? asn1.create(Class.UNIVERSAL, Type.UTCTIME, false, asn1.dateToUtcTime(d))
    : asn1.create(Class.UNIVERSAL, Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
}

function name(attrs: [string, string][]): Asn1 {
  return seq(
    ...attrs.map(([o, v]) =>
      asn1.create(Class.UNIVERSAL, Type.SET, true, [seq(oid(o), asn1.create(Class.UNIVERSAL, Type.UTF8, false, forge.util.encodeUtf8(v)))]),
    ),
  );
}

function ext(o: string, critical: boolean, value: Asn1): Asn1 {
  return critical ? seq(oid(o), bool(true), octets(toBuf(value))) : seq(oid(o), octets(toBuf(value)));
}

/** Positive serial whose first byte is 0x01–0x7f: forge strips only one leading zero (FIELD-NOTES). */
function serial(): Buffer {
  const b = crypto.randomBytes(16);
  b[0] = b[0] & 0x7f || 0x01;
  return b;
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING (without the unused-bits byte). */
function keyIdentifier(spkiDer: Buffer): Buffer {
  const spki = fromDer(spkiDer);
  const bitString = (spki.value as Asn1[])[1].value as string;
  return crypto.createHash('sha1').update(Buffer.from(bitString, 'binary').subarray(1)).digest();
}

function spkiAsn1(spkiDer: Buffer): Asn1 {
  return fromDer(spkiDer);
}

function signatureAlgorithm(key: crypto.KeyObject): Asn1 {
  if (key.asymmetricKeyType === 'ec') return seq(oid(OID.ecdsaWithSha256));
  if (key.asymmetricKeyType === 'rsa') return seq(oid(OID.sha256WithRsa), asn1.create(Class.UNIVERSAL, Type.NULL, false, ''));
  throw new Error(`CA key type ${key.asymmetricKeyType} is not supported (use EC P-256 or RSA)`);
}

interface TbsFields {
  issuer: Asn1;
  subject: Asn1;
  notBefore: Date;
  notAfter: Date;
  spki: Asn1;
  extensions: Asn1[];
}

/** Builds the TBSCertificate (RFC 5280 §4.1), signs its DER with `signer`, returns the certificate DER. */
function signCertificate(f: TbsFields, signer: crypto.KeyObject): Buffer {
  const sigAlg = signatureAlgorithm(signer);
  const tbs = seq(
    asn1.create(Class.CONTEXT_SPECIFIC, 0, true, [int(Buffer.from([2]))]), // v3
    int(serial()),
    sigAlg,
    f.issuer,
    seq(time(f.notBefore), time(f.notAfter)),
    f.subject,
    f.spki,
    asn1.create(Class.CONTEXT_SPECIFIC, 3, true, [seq(...f.extensions)]),
  );
  const tbsDer = toBuf(tbs);
  // ECDSA signatures come DER-encoded (Ecdsa-Sig-Value), which is what X.509 carries.
  const sig = crypto.sign('sha256', tbsDer, signer);
  return derSequence([tbsDer, toBuf(sigAlg), toBuf(bits(Buffer.concat([Buffer.from([0]), sig])))]);
}

/** SEQUENCE of already-encoded parts (avoids re-parsing the signed TBS bytes into forge objects). */
function derSequence(parts: Buffer[]): Buffer {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const head = len < 0x80 ? Buffer.from([0x30, len]) : len < 0x10000 ? Buffer.from([0x30, 0x82, len >> 8, len & 0xff]) : Buffer.from([0x30, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
  return Buffer.concat([head, ...parts]);
}

function pem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

// ---------------------------------------------------------------- names

/**
 * Lower-cases host names and strips a trailing dot (names are case-insensitive, RFC 4343); IPv6
 * literals lose brackets/zone and take the canonical compressed form. Throws on anything that
 * cannot be a dNSName or iPAddress.
 */
export function normalizeCertName(raw: string): { name: string; ip: boolean } {
  let n = String(raw).trim().toLowerCase();
  if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1);
  n = n.replace(/%.*$/, '');
  if (net.isIPv4(n)) return { name: n, ip: true };
  if (net.isIPv6(n)) {
    const v6 = new net.SocketAddress({ address: n, family: 'ipv6' }).address;
    // An IPv4-mapped address (a dual-stack socket's view of an IPv4 peer) is that IPv4 address to
    // the client, and verifiers compare iPAddress bytes by length: use the 4-byte form.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6);
    return { name: mapped ? mapped[1] : v6, ip: true };
  }
  if (n.endsWith('.')) n = n.slice(0, -1);
  // dNSName is an IA5String of LDH labels (RFC 5280 §4.2.1.6); '_' is tolerated because real hosts use it.
  if (n.length === 0 || n.length > 253 || !/^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$/.test(n)) {
    throw new Error(`cannot issue a certificate for server name "${String(raw).slice(0, 80)}"`);
  }
  return { name: n, ip: false };
}

// ---------------------------------------------------------------- the CA on disk

interface CaMaterial {
  certPem: string;
  key: crypto.KeyObject;
  subject: Asn1;
  keyId: Buffer;
  notAfter: Date;
}

function createCaFiles(dir: string, certPath: string, keyPath: string, cn: string): void {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
  const subject = name([[OID.commonName, cn], [OID.organizationName, 'greytap']]);
  const now = Date.now();
  const der = signCertificate(
    {
      issuer: subject,
      subject,
      notBefore: new Date(now - DAY_MS),
      notAfter: new Date(now + CA_DAYS * DAY_MS),
      spki: spkiAsn1(spkiDer),
      extensions: [
        // pathLen 0: this CA only ever signs leaves.
        ext(OID.basicConstraints, true, seq(bool(true), int(Buffer.from([0])))),
        ext(OID.keyUsage, true, bits(Buffer.from([0x01, 0x06]))), // keyCertSign(5) + cRLSign(6)
        ext(OID.subjectKeyIdentifier, false, octets(keyIdentifier(spkiDer))),
      ],
    },
    privateKey,
  );
  // Key first, then the certificate: the certificate's presence is what marks the CA as complete.
  // Each file is written under a temporary name and renamed so a crash never leaves half a file.
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  writeAtomic(dir, keyPath, keyPem, 0o600);
  writeAtomic(dir, certPath, pem(der), 0o644);
}

function writeAtomic(dir: string, file: string, data: string, mode: number): void {
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, data, { mode, flag: 'w' });
  fs.chmodSync(tmp, mode); // the umask may have narrowed it; make it exact
  fs.renameSync(tmp, file);
}

function ensureCaFiles(dataDir: string, cn: string | undefined): { certPath: string; keyPath: string } {
  const dir = path.join(dataDir, CA_DIR);
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  if (!fs.existsSync(certPath)) {
    // A key without its certificate is a CA half lost, not a first start: a new one would leave
    // every client that trusts the old certificate failing without a word.
    if (fs.existsSync(keyPath)) throw new Error(`CA key ${keyPath} is there but its certificate ${certPath} is not; restore it, or delete ${dir} to create a new CA (clients must then trust the new one)`);
    createCaFiles(dir, certPath, keyPath, cn ?? `greytap CA ${os.hostname()}`);
  } else if ((fs.statSync(keyPath, { throwIfNoEntry: false })?.mode ?? 0) & 0o077) {
    fs.chmodSync(keyPath, 0o600); // someone widened it; the CA key must stay private
  }
  return { certPath, keyPath };
}

function loadCaMaterial(certPath: string, keyPath: string): CaMaterial {
  let certPem: string;
  let key: crypto.KeyObject;
  let x509: crypto.X509Certificate;
  try {
    certPem = fs.readFileSync(certPath, 'utf8');
    x509 = new crypto.X509Certificate(certPem);
  } catch (e) {
    throw new Error(`CA certificate ${certPath} is unreadable or invalid (${(e as Error).message}); delete ${path.dirname(certPath)} to create a new CA`);
  }
  try {
    key = crypto.createPrivateKey(fs.readFileSync(keyPath, 'utf8'));
  } catch (e) {
    throw new Error(`CA key ${keyPath} is unreadable or invalid (${(e as Error).message}); delete ${path.dirname(certPath)} to create a new CA`);
  }
  if (!x509.checkPrivateKey(key)) throw new Error(`CA key ${keyPath} does not match ${certPath}; delete ${path.dirname(certPath)} to create a new CA`);
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= Date.now()) throw new Error(`CA certificate ${certPath} expired on ${x509.validTo}; delete ${path.dirname(certPath)} to create a new CA`);
  signatureAlgorithm(key); // throws early on an unsupported key type
  // The leaves' issuer must be the CA's subject; take it from the certificate itself.
  const tbs = (fromDer(x509.raw).value as Asn1[])[0];
  const subject = (tbs.value as Asn1[])[5];
  const keyId = keyIdentifier(x509.publicKey.export({ type: 'spki', format: 'der' }));
  return { certPem, key, subject, keyId, notAfter };
}

// ---------------------------------------------------------------- leaves

class LeafIssuer {
  private readonly leafKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  private readonly leafKeyPem = this.leafKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  private readonly leafSpkiDer = this.leafKey.publicKey.export({ type: 'spki', format: 'der' });
  private readonly leafKeyId = keyIdentifier(this.leafSpkiDer);
  private readonly leafSpki = spkiAsn1(this.leafSpkiDer);

  constructor(private readonly ca: CaMaterial) {}

  /** Validity of a leaf issued at `now`: backdated a day (clients whose clock is behind), never past the CA. */
  validity(now: number): { notBefore: Date; notAfter: Date } {
    const notBefore = new Date(now - DAY_MS);
    return { notBefore, notAfter: new Date(Math.min(notBefore.getTime() + LEAF_DAYS * DAY_MS, this.ca.notAfter.getTime())) };
  }

  issue(names: { name: string; ip: boolean }[], now = Date.now()): { key: string; cert: string } {
    const { notBefore, notAfter } = this.validity(now);
    const san = seq(
      ...names.map((n) =>
        n.ip
          ? asn1.create(Class.CONTEXT_SPECIFIC, 7, false, bin(ipToBytes(n.name) as Buffer)) // iPAddress
          : asn1.create(Class.CONTEXT_SPECIFIC, 2, false, n.name), // dNSName
      ),
    );
    // ub-common-name is 64 (RFC 5280 Appendix A); longer names go in the SAN only, and an empty
    // subject makes the SAN extension critical (§4.2.1.6).
    const cn = names[0].name;
    const subjectless = cn.length > 64;
    const der = signCertificate(
      {
        issuer: this.ca.subject,
        subject: subjectless ? seq() : name([[OID.commonName, cn]]),
        notBefore,
        notAfter,
        spki: this.leafSpki,
        extensions: [
          ext(OID.basicConstraints, true, seq()),
          // EC leaf: digitalSignature only (keyEncipherment is meaningless without RSA key transport).
          ext(OID.keyUsage, true, bits(Buffer.from([0x07, 0x80]))),
          ext(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
          ext(OID.subjectAltName, subjectless, san),
          ext(OID.subjectKeyIdentifier, false, octets(this.leafKeyId)),
          ext(OID.authorityKeyIdentifier, false, seq(asn1.create(Class.CONTEXT_SPECIFIC, 0, false, bin(this.ca.keyId)))),
        ],
      },
      this.ca.key,
    );
    return { key: this.leafKeyPem, cert: pem(der) };
  }
}

/** Map-backed LRU: a hit is moved to the end, the oldest entry is evicted past `max`. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
  get size(): number {
    return this.map.size;
  }
}

// ---------------------------------------------------------------- public API

/** Creates <dataDir>/ca/ (dir 0700, key 0600) on first start, reuses it afterwards. */
export function loadOrCreateCA(dataDir: string, opts: CaOptions = {}): CertAuthority {
  const { certPath, keyPath } = ensureCaFiles(dataDir, opts.commonName);
  const ca = loadCaMaterial(certPath, keyPath);
  const issuer = new LeafIssuer(ca);
  // renewAt: a long-running proxy must not keep serving a leaf past its notAfter.
  const cache = new Lru<{ ctx: tls.SecureContext; renewAt: number }>(opts.cacheSize ?? DEFAULT_CACHE);
  return {
    caCertPem: ca.certPem,
    caCertPath: certPath,
    // Synchronous on purpose: two concurrent first handshakes for one host run one after the other
    // on the event loop, so the second always finds the first's context (one certificate per host).
    secureContextFor(raw: string): tls.SecureContext {
      const n = normalizeCertName(raw);
      const now = Date.now();
      const hit = cache.get(n.name);
      if (hit && hit.renewAt > now) {
        certCache.inc({ result: 'hit' });
        return hit.ctx;
      }
      certCache.inc({ result: 'miss' });
      const ctx = tls.createSecureContext(issuer.issue([n], now));
      cache.set(n.name, { ctx, renewAt: issuer.validity(now).notAfter.getTime() - DAY_MS });
      return ctx;
    },
    issueLeaf(names: string[]) {
      if (names.length === 0) throw new Error('issueLeaf: at least one name is required');
      return issuer.issue(names.map(normalizeCertName));
    },
  };
}

/** For `greytap ca`: the CA certificate PEM, creating the CA when missing. */
export function readCaPem(dataDir: string): string {
  const { certPath, keyPath } = ensureCaFiles(dataDir, undefined);
  return loadCaMaterial(certPath, keyPath).certPem;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Where distributions keep the system CA bundle (Debian's update-ca-certificates, Fedora's update-ca-trust, Alpine / BSD). */
const SYSTEM_CA_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

/**
 * Trust list for upstream TLS, what the agent's own clients would trust: Node's bundled roots, the
 * system bundle (SSL_CERT_FILE if set, as OpenSSL reads it, else the first of SYSTEM_CA_BUNDLES
 * present) where a corporate CA is installed, NODE_EXTRA_CA_CERTS, and the --upstream-ca files.
 * Node 20 has no API for the system store, and a `ca` list replaces Node's default store (which is
 * where NODE_EXTRA_CA_CERTS goes), so every source is read here. A file that cannot be read or holds
 * no valid PEM certificate is a ConfigError naming where it was given. A file named twice is read
 * once (SSL_CERT_FILE and NODE_EXTRA_CA_CERTS are often both the system bundle); a certificate in
 * two files is left twice, which OpenSSL's store takes as a no-op.
 */
export function upstreamCaList(extraCaFiles: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  const systemBundle = SYSTEM_CA_BUNDLES.find((f) => fs.existsSync(f));
  const sources = [
    env.SSL_CERT_FILE ? { what: 'SSL_CERT_FILE', file: env.SSL_CERT_FILE } : systemBundle && { what: 'system CA bundle', file: systemBundle },
    env.NODE_EXTRA_CA_CERTS && { what: 'NODE_EXTRA_CA_CERTS', file: env.NODE_EXTRA_CA_CERTS },
    ...extraCaFiles.map((file) => ({ what: '--upstream-ca', file })),
  ];
  const out = [...tls.rootCertificates];
  const read = new Set<string>();
  for (const s of sources) {
    if (!s || read.has(s.file)) continue;
    read.add(s.file);
    out.push(...pemCertificates(s.what, s.file));
  }
  return out;
}

/** The PEM certificates of a trust file, each checked; `what` names where the file was given. */
function pemCertificates(what: string, file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${what} ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const certs = text.match(PEM_CERT) ?? [];
  if (certs.length === 0) throw new ConfigError(`${what} ${file}: no PEM certificate (-----BEGIN CERTIFICATE-----) found`);
  return certs.map((c, i) => {
    try {
      new crypto.X509Certificate(c);
    } catch (e) {
      throw new ConfigError(`${what} ${file}: certificate #${i + 1} is invalid (${(e as Error).message})`);
    }
    return c + '\n';
  });
}
