#!/usr/bin/env bash
# Real coding agents through greytap, end to end (not part of npm test: it downloads the clients,
# ~250 MB, from the npm registry). Installs @openai/codex and @anthropic-ai/claude-code into a
# scratch dir, builds greytap, and runs bench/agents.ts: each client against a local fake model
# server (bench/agent-origin.ts), once directly and once through `greytap serve`, then prints what
# greytap captured.
#
#   bash bench/agents.sh [SCRATCH_DIR] [-- --fixtures DIR]
#
# The model APIs never leave the machine: greytap maps api.openai.com, api.anthropic.com and
# chatgpt.com to the fake origin. Telemetry and update checks are switched off by env; anything
# else a client still tries goes where it asks (and fails harmlessly on a machine with no route).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-/tmp/greytap-agents}"
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$scratch"
# --prefix keeps the clients out of greytap's package.json; the packages ship native binaries
# (codex: Rust, claude: a single executable) that need no install script.
npm install --silent --no-audit --no-fund --prefix "$scratch" @openai/codex @anthropic-ai/claude-code >/dev/null
echo "codex $("$scratch/node_modules/.bin/codex" --version | awk '{print $NF}'), claude-code $("$scratch/node_modules/.bin/claude" --version | awk '{print $1}')"
cd "$here"
npx tsc -p .
node dist/bench/agents.js --bin "$scratch/node_modules/.bin" --dir "$scratch/run" "$@"
