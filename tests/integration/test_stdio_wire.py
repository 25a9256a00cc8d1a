"""The stdio wire itself: only JSON-RPC on stdout, generic protocol errors, clean SIGTERM shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.builtin.sqlite_store import SqliteStore
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "wire", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def _setup(tmp_path: Path) -> tuple[Path, str, str]:
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    key, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="wire")
    await kernel.aclose()
    return cfg, key, record.key_id


def _start(cfg: Path, key: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "qaqnuz-mcp")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(cfg, key),
        text=True,
    )


def _send(proc: subprocess.Popen, message: dict | str) -> None:
    proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    proc.stdin.flush()


def _reply(proc: subprocess.Popen, request_id: object) -> dict:
    while True:
        line = proc.stdout.readline()
        assert line, "server closed stdout before replying"
        message = json.loads(line)  # every stdout line must be JSON-RPC
        assert message.get("jsonrpc") == "2.0"
        if message.get("id") == request_id:
            return message


async def test_protocol_errors_are_generic_and_stdout_is_only_json_rpc(tmp_path):
    cfg, key, _ = await _setup(tmp_path)
    proc = _start(cfg, key)
    try:
        _send(proc, INIT)
        assert "result" in _reply(proc, 1)
        _send(proc, INITIALIZED)
        _send(proc, {"jsonrpc": "2.0", "id": 2, "method": "no/such/method", "params": {}})
        unknown = _reply(proc, 2)["error"]
        assert unknown["code"] == -32601 and unknown["message"] == "Method not found"
        _send(proc, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {"x": "/etc/passwd"}}})
        invalid = _reply(proc, 3)["error"]
        assert invalid["code"] == -32602
        assert "/etc/passwd" not in json.dumps(invalid) and "Traceback" not in json.dumps(invalid)
        _send(proc, "{not json at all")
        _send(proc, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "boom", "arguments": {}}})
        boom = _reply(proc, 4)["result"]
        assert boom["isError"] is True and boom["structuredContent"]["error_class"] == "terminal"
        assert "hunter2" not in json.dumps(boom)
        incident = boom["structuredContent"]["incident_id"]
        _send(proc, {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}})
        assert [t["name"] for t in _reply(proc, 5)["result"]["tools"]]
    finally:
        rest, err = proc.communicate(timeout=20)  # closes stdin: EOF stops the server
    for line in rest.splitlines():  # anything left on stdout is JSON-RPC too
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert proc.returncode == 0
    # The operator's log has what the caller never sees: the traceback, under the same incident id. Never the key.
    assert f"tool boom raised RuntimeError (incident {incident})" in err and "Traceback" in err
    assert key not in err


async def test_sigterm_stops_cleanly_and_flushes_last_used(tmp_path):
    cfg, key, key_id = await _setup(tmp_path)
    proc = _start(cfg, key)
    try:
        _send(proc, INIT)
        _reply(proc, 1)
        _send(proc, INITIALIZED)
        _send(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "x"}},
            },
        )
        assert _reply(proc, 2)["result"]["isError"] is False
        before = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)  # stdin stays open: the signal alone must stop the server
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM; stopping" in err and "last-used times flushed" in err
    store = SqliteStore(tmp_path / "qaqnuz.db")
    record = await store.get_key(key_id)
    await store.aclose()
    assert record.last_used_at is not None and record.last_used_at <= before


async def test_sigterm_after_stdin_closed_ends_a_running_call(tmp_path):
    """The usual way a client stops a stdio server: close stdin, then SIGTERM. A call still running (here one
    waiting up to 30 s for an approval) is cancelled, audited as such, and the server stops at once."""
    cfg = write_config(tmp_path, kit_config().replace("[approvals]\n", "[approvals]\nwait_seconds = 30\n"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read", "orders.write"], name="w", role="manager")
    await kernel.aclose()
    proc = _start(cfg, key)
    try:
        _send(proc, INIT)
        _reply(proc, 1)
        _send(proc, INITIALIZED)
        call = {"name": "create_order", "arguments": {"sku": "a", "qty": 1}}
        _send(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        time.sleep(0.5)
        proc.stdin.close()
        time.sleep(0.5)
        assert proc.poll() is None  # EOF: the running call may finish...
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # ...until the signal ends it
        proc.wait(timeout=20)
        stopped_after = time.monotonic() - started
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert stopped_after < 5, (stopped_after, err)  # not after the 30 s wait
    assert "last-used times flushed" in err
    records = [json.loads(line) for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines()]
    assert any(r.get("tool") == "create_order" and r.get("outcome") == "cancelled" for r in records), records
