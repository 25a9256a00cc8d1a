#!/usr/bin/env bash
# Serve the example config over stdio: creates a server secret and a key once (in examples/.state/),
# prints how to connect an MCP client, then runs `qaqnuz-mcp`. Logs go to stderr; stdout is MCP.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/qaqnuz.toml"
state="$here/.state"
mkdir -p "$state"
chmod 700 "$state"

if [ ! -s "$state/qaqnuz.secret" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$state/qaqnuz.secret")
  echo "created $state/qaqnuz.secret" >&2
fi
if [ ! -s "$state/demo.key" ]; then
  (umask 077 && uv run --quiet qaqnuz keys create --config "$config" --brand acme --role viewer \
      --scope demo.read --name "example stdio client" > "$state/demo.key")
fi

cat >&2 <<MSG
qaqnuz example server over stdio (brand acme, tools greet and utc_time; utc_time needs approval).
To use it from Claude Desktop or Cursor, add to the client's MCP servers JSON:
  "qaqnuz": {"command": "uv", "args": ["run", "--project", "$(cd "$here/.." && pwd)", "qaqnuz-mcp",
             "--config", "$config"], "env": {"QAQNUZ_API_KEY": "<the key in $state/demo.key>"}}
Approve pending calls with: uv run qaqnuz approvals list --config $config
Waiting for an MCP client on stdin (Ctrl-D or Ctrl-C stops)...
MSG
QAQNUZ_API_KEY="$(cat "$state/demo.key")" exec uv run --quiet qaqnuz-mcp --config "$config"
