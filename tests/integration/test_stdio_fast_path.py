"""The stdio fast path against the SDK's own path: the same lines, in both eras, to `qaqnuz-mcp` with the fast
path on and with it off, give equal replies (ids minted per server aside). The fast server must have
answered the plain requests itself (its debug log says so, the other's never does), so the comparison is
between two different paths. A cancelled fast-path call gets no reply and the connection carries on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
CONFIG = (
    kit_config(per_key="1000/60s", per_brand="1000/60s")
    .replace("[server]\n", '[server]\nlog_level = "debug"\n', 1)
    .replace(
        "tools.create_order = { exposable = true, approval = true }\n",
        "tools.create_order = { exposable = true, approval = true }\n"
        "tools.test_multiple_content_types = { exposable = true }\n"
        "tools.test_tool_with_logging = { exposable = true }\n",
        1,
    )
    + '\n[packs.conformance]\ntype = "conformance"\nscope = "orders.read"\n'
)
_MINTED = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f-]{36}\b|\b(apr|inc)[_-][A-Za-z0-9_-]+")
FAST_LINE = "answered on the fast path"


class Peer:
    def __init__(self, folder: Path, fast_path: bool) -> None:
        self.folder = folder
        self.config = write_config(folder, CONFIG + f"\n[plugins.stdio]\nfast_path = {str(fast_path).lower()}\n")
        self.proc: subprocess.Popen[str] | None = None

    async def start(self, role: str = "manager") -> None:
        kernel = await start_kernel(self.config, plugins=["stdio", "testkit_pack.plugin", "conformance"])
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read", "orders.write"], name="s", role=role)
        await kernel.aclose()
        env = server_env(self.config, key)
        env["QAQNUZ_PLUGINS"] += ",conformance"
        self.proc = subprocess.Popen(
            [str(BIN / "qaqnuz-mcp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, text=True,
        )  # fmt: skip

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def reply(self, request_id: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "server closed stdout before replying"
            message = json.loads(line)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return json.loads(_MINTED.sub("<id>", json.dumps(message, sort_keys=True)))

    def stop(self) -> str:
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def cases(meta: dict[str, Any] | None) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, request, whether the fast path answers it) with `meta` as every request's `_meta`."""

    def params(extra: dict[str, Any]) -> dict[str, Any]:
        return {**extra, "_meta": meta} if meta is not None else extra

    def call(name: Any, arguments: Any = None) -> dict[str, Any]:
        return params({"name": name} if arguments is None else {"name": name, "arguments": arguments})

    progress = {**(meta or {}), "progressToken": "p"}
    return [
        ("list", request(10, "tools/list", params({})), True),
        ("call", request(11, "tools/call", call("echo", {"message": "hi", "times": 2})), True),
        ("no arguments", request(12, "tools/call", call("beta_echo")), True),
        ("invalid arguments", request(13, "tools/call", call("echo", {"message": 5})), True),
        ("unknown tool", request(14, "tools/call", call("nope", {})), True),
        ("hidden tool", request(15, "tools/call", call("hidden_tool", {})), True),
        ("raises", request(16, "tools/call", call("boom", {})), True),
        ("truncated", request(17, "tools/call", call("big", {})), True),
        ("needs approval", request(18, "tools/call", call("create_order", {"sku": "a", "qty": 1})), True),
        ("content blocks", request(19, "tools/call", call("test_multiple_content_types", {})), True),
        ("string id", {**request(0, "tools/call", call("echo", {"message": "s"})), "id": "abc"}, True),
        ("interactive tool", request(20, "tools/call", call("test_tool_with_logging", {})), False),
        (
            "progress token",
            request(21, "tools/call", {"name": "echo", "arguments": {"message": "p"}, "_meta": progress}),
            False,
        ),
        ("name not a string", request(22, "tools/call", call(5, {})), False),
        ("cursor", request(23, "tools/list", params({"cursor": "x"})), False),
        ("other method", request(24, "ping", params({})), False),
    ]


async def run_both(tmp_path: Path, opening: list[dict[str, Any]], meta: dict[str, Any] | None) -> None:
    fast, sdk = Peer(tmp_path / "fast", True), Peer(tmp_path / "sdk", False)
    for peer in (fast, sdk):
        await peer.start()
    try:
        for message in opening:
            for peer in (fast, sdk):
                peer.send(message)
            if "id" in message:
                assert fast.reply(message["id"]) == sdk.reply(message["id"]), message
        expected = 0
        for label, message, fast_one in cases(meta):
            for peer in (fast, sdk):
                peer.send(message)
            assert fast.reply(message["id"]) == sdk.reply(message["id"]), label
            expected += fast_one
    finally:
        logs = {peer: peer.stop() for peer in (fast, sdk)}
    assert logs[fast].count(FAST_LINE) == expected, logs[fast][-3000:]
    assert FAST_LINE not in logs[sdk]


async def test_both_paths_give_equal_answers_in_the_handshake_era(tmp_path):
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "diff", "version": "1"}}
    opening = [request(1, "initialize", hello), {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    await run_both(tmp_path, opening, None)


async def test_both_paths_give_equal_answers_in_the_2026_07_28_era(tmp_path):
    await run_both(tmp_path, [request(1, "server/discover", {"_meta": META})], META)


async def test_a_cancelled_fast_call_gets_no_reply_and_the_connection_carries_on(tmp_path):
    peer = Peer(tmp_path / "fast", True)
    await peer.start()
    try:
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}
        peer.send(request(1, "initialize", hello))
        peer.reply(1)
        peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        peer.send(request(2, "tools/call", {"name": "slow", "arguments": {}}))
        time.sleep(0.1)
        peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}})
        peer.send(request(3, "tools/call", {"name": "echo", "arguments": {"message": "after"}}))
        answer = peer.reply(3)
        assert answer["result"]["structuredContent"]["data"] == {"message": "after", "times": 1}
        time.sleep(0.8)  # past slow's 0.5 s timeout: a reply to 2 would have been written by now
    finally:
        assert peer.proc is not None
        out, err = peer.proc.communicate(timeout=30)
    assert not [line for line in out.splitlines() if json.loads(line).get("id") == 2]
    assert err.count(FAST_LINE) == 1  # the echo; the cancelled call was never answered
