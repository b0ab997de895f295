#!/usr/bin/env bash
# Installs the real peers the tests drive, when missing: Python websockets + socks (a second,
# independent WebSocket implementation), Chromium (a real browser's handshake and compression),
# curl, the openssl CLI (an independent TLS client for the certificate tests), and the zstd CLI
# (the reference encoder for Content-Encoding: zstd), and Prometheus with promtool (the alert rules
# and the dashboard's queries run on a real one).
# Debian packages only; needs root (CI runs as root). Idempotent and quiet when all is there.
set -euo pipefail
need=()
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
/usr/bin/python3 -c 'import socks' 2>/dev/null || need+=(python3-socks)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "test/setup.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
