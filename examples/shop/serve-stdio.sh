#!/usr/bin/env bash
# Serve the demo shop over stdio: creates the shop database, a server secret and a manager key once (in
# examples/shop/.state/), prints how to connect an MCP client, then runs `qaqnuz-mcp`. Logs go to stderr;
# stdout is MCP.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/qaqnuz.toml"
state="$here/.state"
mkdir -p "$state"
chmod 700 "$state"

if [ ! -s "$state/shop.db" ]; then
  uv run --quiet python -m qaqnuz_demo.shop "$state/shop.db"
fi
if [ ! -s "$state/qaqnuz.secret" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$state/qaqnuz.secret")
  echo "created $state/qaqnuz.secret" >&2
fi
if [ ! -s "$state/shop.key" ]; then
  (umask 077 && uv run --quiet qaqnuz keys create --config "$config" --brand acme --role manager \
      --scope orders.read --scope contacts.read --scope orders.write --name "shop stdio client" > "$state/shop.key")
fi

cat >&2 <<MSG
qaqnuz demo shop over stdio (brand acme: get_order_status, search_contacts, create_order; create_order
needs approval).
To use it from Claude Desktop or Cursor, add to the client's MCP servers JSON:
  "qaqnuz-shop": {"command": "uv", "args": ["run", "--project", "$(cd "$here/../.." && pwd)", "qaqnuz-mcp",
                  "--config", "$config"], "env": {"QAQNUZ_API_KEY": "<the key in $state/shop.key>"}}
Approve pending calls with: uv run qaqnuz approvals list --config $config
                      then: uv run qaqnuz approvals approve APR_ID --config $config
Waiting for an MCP client on stdin (Ctrl-D or Ctrl-C stops)...
MSG
QAQNUZ_API_KEY="$(cat "$state/shop.key")" exec uv run --quiet qaqnuz-mcp --config "$config"
