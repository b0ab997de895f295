// Request-target authorities as proxies see them: `host:port` of CONNECT, and the origin of an
// absolute-form `http://` request. One parser for the proxy front and the HTTP tap.

export interface Authority { host: string; port: number }

/** host:port of an authority, accepting [v6]:port; the host is lower-cased. */
export function parseAuthority(a: string, defaultPort: number): Authority | null {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:/?#\s]+))(?::(\d{1,5}))?$/i.exec(a);
  if (!m) return null;
  const port = m[3] ? Number(m[3]) : defaultPort;
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2]).toLowerCase(), port };
}

/** The origin of an absolute-form http:// request-target; undefined for other forms, null when malformed. */
export function absoluteHttpOrigin(target: string): Authority | null | undefined {
  const m = /^http:\/\/([^/?#]+)/i.exec(target);
  return m ? parseAuthority(m[1], 80) : undefined;
}

/** `host:port` as an authority writes it: an IPv6 address in brackets (`[::1]:443`, not `::1:443`). */
export function hostPort(host: string | undefined, port: number | undefined): string {
  return `${host?.includes(':') ? `[${host}]` : host}:${port}`;
}
