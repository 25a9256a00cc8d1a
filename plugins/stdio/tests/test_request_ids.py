"""`qaqnuz-mcp` with `log_format = "json"`: each JSON-RPC message is one request, with one id that its log
lines and its audit record share, on the fast path and through the SDK alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qaqnuz.testing import start_kernel, write_config

SUPPORT = Path(__file__).resolve().parents[3] / "tests" / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from kit import kit_config, server_env  # noqa: E402

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _call(n: int, tool: str) -> dict:
    arguments = {"message": "hi"} if tool == "echo" else {}
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


@pytest.mark.parametrize("fast_path", [True, False])
async def test_each_message_has_its_own_request_id_shared_by_its_log_line_and_audit_record(tmp_path, fast_path):
    config = kit_config().replace("[server]\n", '[server]\nlog_format = "json"\n', 1)
    config += f"\n[plugins.stdio]\nfast_path = {str(fast_path).lower()}\n"
    cfg = write_config(tmp_path, config)
    kernel = await start_kernel(cfg, plugins=["stdio", "testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="ids")
    await kernel.aclose()

    messages = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        _call(1, "echo"),
        _call(2, "boom"),
        _call(3, "echo"),
    ]
    proc = subprocess.Popen(
        [str(BIN / "qaqnuz-mcp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=server_env(cfg, key), text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    for message in messages:  # one at a time, each answered before the next (as a client does)
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        if "id" in message:
            reply = json.loads(proc.stdout.readline())
            assert reply["id"] == message["id"] and "result" in reply, reply
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr

    records = [json.loads(line) for line in stderr.splitlines()]  # every log line is one JSON record
    audit = [json.loads(line) for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines()]
    calls = [r for r in audit if r.get("step") == "execution"]
    assert [r["tool"] for r in calls] == ["echo", "boom", "echo"]
    ids = [r.get("request_id") for r in calls]
    assert all(ids) and len(set(ids)) == 3  # one id per message
    (failure,) = [r for r in records if "tool boom raised" in r["message"]]
    assert failure["request_id"] == ids[1]  # the kernel's line about the call, and its audit record
