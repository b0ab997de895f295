// A test PKI for upstream servers: its own CA (created with greytap's CA code in a temp dir, so it is
// a different trust anchor from the proxy's interception CA) and server certificates for any names.
// The proxy trusts it through --upstream-ca <caPath>; clients of the proxy trust the proxy's CA.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type tls from 'node:tls';
import { loadOrCreateCA } from '../../src/io/tls-intercept.js';

export interface TestPki {
  caPem: string;
  caPath: string;
  /** key + cert for a TLS server answering for `hosts` (DNS names and/or IP literals); spread into tls.createServer(). */
  serverContext(hosts: string[]): tls.SecureContextOptions;
  dir: string;
  /** Removes the temp dir (only when makeTestPki created it). */
  cleanup(): void;
}

export function makeTestPki(dir?: string): TestPki {
  const own = dir === undefined;
  const root = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'greytap-test-pki-'));
  const ca = loadOrCreateCA(root, { commonName: 'greytap test upstream CA', cacheSize: 16 });
  const cleanup = () => {
    if (own) fs.rmSync(root, { recursive: true, force: true });
  };
  if (own) process.once('exit', cleanup);
  return {
    caPem: ca.caCertPem,
    caPath: ca.caCertPath,
    serverContext: (hosts) => ca.issueLeaf(hosts),
    dir: root,
    cleanup,
  };
}
