"""The default limiter holds across processes: two stdio servers (each client starts its own) with keys of one
brand, bursting at the same moment, admit exactly the brand's limit between them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent
BRAND_LIMIT = 10
BURST = 15  # per process: 30 calls at once against a brand limit of 10


def _requests() -> str:
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "burst", "version": "1"}}
    lines = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for i in range(1, BURST + 1):
        params = {"name": "echo", "arguments": {"message": f"m{i}"}}
        lines.append({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params})
    return "".join(json.dumps(line) + "\n" for line in lines)


def _burst(proc: subprocess.Popen, start: threading.Barrier, answers: list[dict]) -> None:
    """Everything at once once both servers are up; every answer; then EOF, which ends the server."""
    start.wait(timeout=30)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(_requests())
    proc.stdin.flush()
    while len(answers) < BURST:
        message = json.loads(proc.stdout.readline())
        if isinstance(message.get("id"), int) and message["id"] > 0:
            answers.append(message)
    proc.stdin.close()


@pytest.mark.parametrize("limiter", ["sqlite", "memory"])
async def test_two_stdio_processes_of_one_brand_admit_exactly_its_limit(tmp_path, limiter):
    config = kit_config(per_key="1000/60s", per_brand=f"{BRAND_LIMIT}/60s")
    if limiter == "memory":
        config += '\n[plugins]\nlimiter = "memory"\n'
    cfg = write_config(tmp_path, config)
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    keys = [(await kernel.keys.mint(brand="acme", scopes=["orders.read"], name=f"p{i}"))[0] for i in range(2)]
    await kernel.aclose()
    procs = [
        subprocess.Popen(
            [str(BIN / "qaqnuz-mcp")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(cfg, key),
            text=True,
        )
        for key in keys
    ]
    answers: list[list[dict]] = [[], []]
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_burst, args=(p, start, a)) for p, a in zip(procs, answers, strict=True)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for proc in procs:
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = [m["result"]["structuredContent"] for each in answers for m in each]
    assert len(results) == 2 * BURST
    admitted = [r for r in results if r.get("ok") is True]
    limited = [r for r in results if r.get("ok") is False]
    assert all(r["error_class"] == "retryable" for r in limited), limited
    if limiter == "sqlite":
        assert len(admitted) == BRAND_LIMIT  # exactly the brand's limit, across both processes
    else:
        assert len(admitted) == 2 * BRAND_LIMIT  # each process counts alone: why sqlite is the default
