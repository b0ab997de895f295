// What every listener and tunnel needs; built once by `serve`.
import type tls from 'node:tls';
import type { Config, HostPort } from '../config.js';
import type { CertAuthority } from './tls-intercept.js';
import type { CapturePool } from '../workers/pool.js';

export interface ProxyContext {
  cfg: Config;
  ca: CertAuthority;
  /** system roots + --upstream-ca, for verifying origins (one context for every upstream connection) */
  upstreamTrust: tls.SecureContext;
  pool: CapturePool;
  /**
   * Where greytap's own proxy listeners accept (filled in by `serve` as each starts): a dial that
   * lands on one of them is a proxy loop and is refused (see dial()).
   */
  listening: HostPort[];
}
