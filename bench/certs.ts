// Certificates the bench needs, made fresh per run: the bench CA that signs the upstream server's
// certificate (every proxy is told to trust it), and the TLS pipe's own CA and leaf. Keys come from
// node:crypto (forge's pure-JS RSA keygen takes ~1.3 s); forge only builds and signs the X.509.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

export interface KeyCert { key: string; cert: string }

/** Names the upstream certificate covers: bench.test and h1..hN.bench.test (wildcard), plus 127.0.0.1. */
export const BENCH_DOMAIN = 'bench.test';

function rsaKey(): { priv: forge.pki.rsa.PrivateKey; pub: forge.pki.rsa.PublicKey; pem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const priv = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  return { priv, pub: forge.pki.setRsaPublicKey(priv.n, priv.e), pem };
}

// forge strips only one leading zero byte of a serial; a first byte of 0x01–0x7f keeps it positive
// and canonical (FIELD-NOTES "TLS").
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] % 0x7f) + 1;
  return b.toString('hex');
}

function build(subjectCN: string, pub: forge.pki.rsa.PublicKey, issuer: { cn: string; key: forge.pki.rsa.PrivateKey } | null, ext: object[]): forge.pki.Certificate {
  const c = forge.pki.createCertificate();
  c.publicKey = pub;
  c.serialNumber = serial();
  c.validity.notBefore = new Date(Date.now() - 86_400_000);
  c.validity.notAfter = new Date(Date.now() + 30 * 86_400_000);
  c.setSubject([{ name: 'commonName', value: subjectCN }]);
  c.setIssuer([{ name: 'commonName', value: issuer ? issuer.cn : subjectCN }]);
  c.setExtensions(ext);
  return c;
}

function makeCa(cn: string): KeyCert & { priv: forge.pki.rsa.PrivateKey } {
  const k = rsaKey();
  const c = build(cn, k.pub, null, [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  c.sign(k.priv, forge.md.sha256.create());
  return { key: k.pem, cert: forge.pki.certificateToPem(c), priv: k.priv };
}

function makeLeaf(ca: { cert: string; priv: forge.pki.rsa.PrivateKey }, cn: string, dns: string[], ips: string[]): KeyCert {
  const k = rsaKey();
  const caCn = String(forge.pki.certificateFromPem(ca.cert).subject.getField('CN').value);
  const c = build(cn, k.pub, { cn: caCn, key: ca.priv }, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...dns.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))] },
  ]);
  c.sign(ca.priv, forge.md.sha256.create());
  return { key: k.pem, cert: forge.pki.certificateToPem(c) };
}

export interface BenchPki {
  /** PEM file of the CA that signed the upstream server's certificate */
  upstreamCaFile: string;
  upstreamCaPem: string;
  server: KeyCert;
  /** PEM file of the TLS pipe's CA (the client trusts it when going through the pipe) */
  pipeCaFile: string;
  /** the pipe's one pre-generated leaf: bench.test, *.bench.test, 127.0.0.1 */
  pipeLeaf: KeyCert;
}

/** Generates all bench certificates and writes the two CA files into dir. ~0.5 s. */
export function makeBenchPki(dir: string): BenchPki {
  const dns = [BENCH_DOMAIN, '*.' + BENCH_DOMAIN, 'localhost'];
  const upCa = makeCa('greytap bench upstream CA');
  const server = makeLeaf(upCa, BENCH_DOMAIN, dns, ['127.0.0.1']);
  const pipeCa = makeCa('greytap bench TLS pipe CA');
  const pipeLeaf = makeLeaf(pipeCa, BENCH_DOMAIN, dns, ['127.0.0.1']);
  const upstreamCaFile = join(dir, 'upstream-ca.pem');
  const pipeCaFile = join(dir, 'pipe-ca.pem');
  writeFileSync(upstreamCaFile, upCa.cert);
  writeFileSync(pipeCaFile, pipeCa.cert);
  return { upstreamCaFile, upstreamCaPem: upCa.cert, server, pipeCaFile, pipeLeaf };
}
