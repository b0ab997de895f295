#!/usr/bin/env bash
# Real coding agents through greytap, end to end (not part of npm test: it downloads the clients,
# ~400 MB, from the npm registry). Installs @openai/codex, @anthropic-ai/claude-code,
# @google/gemini-cli, opencode-ai and @qwen-code/qwen-code into a scratch dir, builds greytap, and
# runs bench/agents.ts: each client against a local fake model server (bench/agent-origin.ts), once
# directly and once through `greytap serve`, then prints what greytap captured.
#
#   bash bench/agents.sh [SCRATCH_DIR] [-- --fixtures DIR]
#
# The model APIs never leave the machine: greytap maps api.openai.com, api.anthropic.com,
# chatgpt.com and generativelanguage.googleapis.com to the fake origin. Telemetry and update checks
# are switched off by env; anything else a client still tries goes where it asks (and fails
# harmlessly on a machine with no route).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-/tmp/greytap-agents}"
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$scratch"
# --prefix keeps the clients out of greytap's package.json. codex, claude and opencode ship native
# binaries that need no install script. @latest: on Node 20 npm would otherwise pick the last
# claude-code whose `engines` allow Node 20 (2.1.197), though its binary runs whatever Node there
# is. Qwen Code is JavaScript and means its engines: npm picks its last release for this Node.
npm install --silent --no-audit --no-fund --prefix "$scratch" @openai/codex@latest @anthropic-ai/claude-code@latest @google/gemini-cli@latest opencode-ai@latest @qwen-code/qwen-code >/dev/null
echo "codex $("$scratch/node_modules/.bin/codex" --version | awk '{print $NF}'), claude-code $("$scratch/node_modules/.bin/claude" --version | awk '{print $1}'), gemini-cli $("$scratch/node_modules/.bin/gemini" --version), opencode $("$scratch/node_modules/.bin/opencode" --version), qwen-code $("$scratch/node_modules/.bin/qwen" --version)"
cd "$here"
npx tsc -p .
node dist/bench/agents.js --bin "$scratch/node_modules/.bin" --dir "$scratch/run" "$@"
