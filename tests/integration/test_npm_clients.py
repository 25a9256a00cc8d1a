"""Real npm MCP clients against a real `qaqnuz serve --transport http` (issue 4, acceptance points 2 and 3).

One server per module: a subprocess on 127.0.0.1 with a free port, the testkit pack and `log_level = "debug"`,
its stderr captured. The clients are the ones .ci/npm-tools.sh installs into .npm-tools/ (pinned versions):

- `mcp-remote` (the stdio ↔ HTTP bridge Claude Desktop, Claude Code and Cursor use), driven over its stdio with
  raw JSON-RPC: initialize, notifications/initialized, tools/list, tools/call; with `--header "Authorization:
  Bearer KEY"` and with the key in the URL (`?token=KEY`), after which no key and no "token=" is in the log.
- the Inspector CLI (`inspector --cli URL --header … --stored-auth-only --format json`): tools/list shows
  exactly the tools each key may see; tools/call returns the envelope.

Every client runs with its own HOME (they write ~/.mcp-auth and ~/.mcp-inspector) and Node 22 first on PATH,
each subprocess is bounded by a timeout and ended afterwards. Without the npm tools these tests fail under CI
and are skipped elsewhere, both saying to run .ci/npm-tools.sh.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kit import SUPPORT, kit_config
from npm_tools import StdioPeer, client_env, close_streams, node22, npm_tool, run_client, stop_process
from qaqnuz.testing import write_config

PLUGINS = "http,testkit_pack.plugin"
PROTOCOL = "2025-06-18"  # what Claude Desktop and the notes' stdio_drive.py send through mcp-remote
ENVELOPE = {"ok": True, "data": {"message": "hi", "times": 1}, "truncated": False}

# What each key may see with kit_config(): exposable, enabled, not sensitive, scope held by the key's role.
ACME_VIEWER = {"echo", "beta_echo", "boom", "flaky_upstream", "big", "slow"}
ACME_MANAGER = ACME_VIEWER | {"write_tool", "create_order"}
GLOBEX_VIEWER = {"echo"}
GLOBEX_MANAGER = {"echo", "create_order"}
SCOPES = {"viewer": ("orders.read",), "manager": ("orders.read", "orders.write")}


def server_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(
        QAQNUZ_CONFIG=str(config),
        QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
        QAQNUZ_PLUGINS=PLUGINS,
        PYTHONPATH=os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


@dataclass
class Server:
    process: subprocess.Popen[str]
    config: Path
    port: int
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def log(self) -> str:
        return "".join(self.stderr_lines)

    def mint(self, name: str, *, brand: str = "acme", role: str = "viewer") -> dict[str, Any]:
        """A fresh key through the real CLI: {"key": ..., "key_id": ..., ...}."""
        scopes = [arg for scope in SCOPES[role] for arg in ("--scope", scope)]
        argv = ["keys", "create", "--brand", brand, "--role", role, *scopes, "--name", name, "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "qaqnuz.cli", *argv], env=server_env(self.config), capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> None:
        """Wait (bounded) until a line of the server's stderr matches the regex `pattern`."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log, re.MULTILINE):
            assert time.monotonic() < deadline, f"{pattern!r} never matched the server log:\n{self.log[-4000:]}"
            time.sleep(0.05)

    def fast_answers(self, method: str) -> int:
        """How many `method` requests the HTTP transport's fast path has answered (its debug log lines)."""
        return self.log.count(f"{method} answered on the fast path")

    def wait_for_fast(self, method: str, at_least: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.fast_answers(method) < at_least:
            assert time.monotonic() < deadline, f"no {method} on the fast path:\n{self.log[-4000:]}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    npm_tool("mcp-remote")  # fail (CI) or skip before paying for a server
    npm_tool("inspector")
    folder = tmp_path_factory.mktemp("npm-clients-server")
    config = write_config(folder, kit_config().replace("[server]\n", '[server]\nlog_level = "debug"\n', 1))
    process = subprocess.Popen(
        [sys.executable, "-m", "qaqnuz.cli", "serve", "--transport", "http", "--host", "127.0.0.1", "--port", "0"],
        env=server_env(config), cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    ports: list[int] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            found = re.search(r"serving MCP over HTTP at http://127\.0\.0\.1:(\d+)/mcp", line)
            if found:
                ports.append(int(found.group(1)))

    pumps = [threading.Thread(target=pump, daemon=True)]
    pumps.append(threading.Thread(target=lambda: process.stdout and process.stdout.read(), daemon=True))
    for thread in pumps:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while not ports:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qaqnuz serve --transport http did not start:\n" + "".join(lines))
            time.sleep(0.05)
        yield Server(process, config, ports[0], lines)
    finally:
        stop_process(process, timeout=20)
        for thread in pumps:
            thread.join(timeout=5)
        close_streams(process)


def mcp_remote(server_url: str, *extra: str, home: Path) -> StdioPeer:
    return StdioPeer([str(npm_tool("mcp-remote")), server_url, *extra], client_env(home), cwd=home)


def drive(peer: StdioPeer) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    """initialize → initialized → tools/list → tools/call echo; each must be a JSON-RPC result."""
    client_info = {"name": "qaqnuz-npm-test", "version": "0"}
    init = peer.request("initialize", {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": client_info})
    assert "result" in init, f"{init}\n{peer.diagnostics()}"
    peer.notify("notifications/initialized")
    listed = peer.request("tools/list")
    assert "result" in listed, f"{listed}\n{peer.diagnostics()}"
    called = peer.request("tools/call", {"name": "echo", "arguments": {"message": "hi"}})
    assert "result" in called, f"{called}\n{peer.diagnostics()}"
    return init["result"], {tool["name"] for tool in listed["result"]["tools"]}, called["result"]


def assert_echo_envelope(result: dict[str, Any]) -> None:
    assert result["isError"] is False
    assert result["structuredContent"] == ENVELOPE
    assert [part["type"] for part in result["content"]] == ["text"]
    assert json.loads(result["content"][0]["text"]) == ENVELOPE["data"]


def test_clients_run_on_node_22(tmp_path: Path) -> None:
    """The inspector declares node >=22.19; client_env puts the project-local Node 22 first on PATH."""
    node22()  # fails under CI, skips elsewhere, with the install hint
    done = run_client(["node", "--version"], client_env(tmp_path), cwd=tmp_path, timeout=20)
    assert done.returncode == 0 and done.stdout.startswith("v22."), done


# -- mcp-remote -----------------------------------------------------------------------------------------------


def test_mcp_remote_with_bearer_header(server: Server, tmp_path: Path) -> None:
    key = server.mint("mcp-remote-header")
    lists, calls = server.fast_answers("tools/list"), server.fast_answers("tools/call")
    with mcp_remote(server.url, "--header", f"Authorization: Bearer {key['key']}", home=tmp_path) as peer:
        init, names, called = drive(peer)
        assert init["protocolVersion"] == PROTOCOL
        assert init["serverInfo"]["name"] and "tools" in init["capabilities"]
        assert names == ACME_VIEWER
        assert_echo_envelope(called)
        assert not peer.non_json, f"mcp-remote wrote non-JSON to stdout: {peer.non_json}"
    assert "StreamableHTTPClientTransport" in "".join(peer.stderr_lines)  # not the SSE fallback
    server.wait_for_fast("tools/list", lists + 1)  # mcp-remote's plain requests took the fast path
    server.wait_for_fast("tools/call", calls + 1)
    # the access log names the key id (never the key)
    server.wait_for_log(rf"qaqnuz\.http\.access: POST /mcp 200 .* key={key['key_id']}$")


def test_mcp_remote_with_query_token_and_no_key_in_the_log(server: Server, tmp_path: Path) -> None:
    key = server.mint("mcp-remote-query")
    with mcp_remote(f"{server.url}?token={key['key']}", home=tmp_path) as peer:
        init, names, called = drive(peer)
        assert init["protocolVersion"] == PROTOCOL
        assert names == ACME_VIEWER
        assert_echo_envelope(called)
    assert "StreamableHTTPClientTransport" in "".join(peer.stderr_lines)

    # A refused ?token= request proves the capture runs at debug level (refusals are logged at debug).
    wrong = key["key"][:-3] + ("AAA" if not key["key"].endswith("AAA") else "BBB")
    request = urllib.request.Request(f"{server.url}?token={wrong}", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    server.wait_for_log(r"DEBUG qaqnuz\.http: refused POST /mcp")
    server.wait_for_log(rf"qaqnuz\.http\.access: POST /mcp 200 .* key={key['key_id']}$")

    log = server.log
    secret = key["key"].split("_", 3)[3]  # qx_live_<key id>_<secret><checksum>
    for leaked in (key["key"], secret, secret[:20], wrong, wrong.split("_", 3)[3]):
        assert leaked not in log
    assert "token=" not in log


# -- Inspector CLI ----------------------------------------------------------------------------------------------


def inspector(server: Server, key: str, *method_args: str, home: Path) -> Any:
    argv = [
        str(npm_tool("inspector")), "--cli", server.url, "--header", f"Authorization: Bearer {key}",
        "--stored-auth-only", "--format", "json", *method_args,
    ]  # fmt: skip
    done = run_client(argv, client_env(home), cwd=home, timeout=45)
    assert done.returncode == 0, f"rc={done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"inspector --format json printed non-JSON:\n{done.stdout}\nstderr: {done.stderr}")


@pytest.mark.parametrize(
    ("brand", "role", "visible"),
    [("acme", "viewer", ACME_VIEWER), ("acme", "manager", ACME_MANAGER), ("globex", "viewer", GLOBEX_VIEWER),
     ("globex", "manager", GLOBEX_MANAGER)],
)  # fmt: skip
def test_inspector_cli_lists_exactly_the_visible_tools(server: Server, tmp_path: Path, brand, role, visible) -> None:
    key = server.mint(f"inspector-{brand}-{role}", brand=brand, role=role)
    out = inspector(server, key["key"], "--method", "tools/list", home=tmp_path)
    tools = out["result"]["tools"]
    names = [tool["name"] for tool in tools]
    assert len(names) == len(set(names))
    assert set(names) == visible
    assert all(tool["description"] and tool["inputSchema"]["type"] == "object" for tool in tools)


def test_inspector_cli_calls_echo(server: Server, tmp_path: Path) -> None:
    key = server.mint("inspector-call")
    calls = server.fast_answers("tools/call")
    out = inspector(
        server, key["key"], "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi", home=tmp_path
    )
    assert "error" not in out, out
    assert_echo_envelope(out["result"])
    server.wait_for_fast("tools/call", calls + 1)
