#!/usr/bin/env bash
# Installs the bench's non-npm contender when missing: Debian's mitmproxy (mitmdump).
# http-mitm-proxy comes from node_modules. Quiet and idempotent; needs root for apt-get.
# Exits 0 even when the install fails: the bench then reports mitmproxy as unavailable.
set -uo pipefail
command -v mitmdump >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "bench/install-peers.sh: mitmdump missing and not root; mitmproxy will be reported unavailable" >&2
  exit 0
fi
echo "bench/install-peers.sh: installing mitmproxy (Debian)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || true
if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends mitmproxy >/dev/null 2>&1; then
  echo "bench/install-peers.sh: apt-get could not install mitmproxy; it will be reported unavailable" >&2
fi
exit 0
