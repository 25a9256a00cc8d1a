"""`qaqnuz serve --transport http --workers 4` as users run it: one port, four processes, and limits,
approvals and /metrics that hold across them (the default sqlite limiter and store are shared files)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from httpkit import PLUGINS, qaqnuz_cli, server_env

from kit import kit_config
from qaqnuz.testing import write_config
from serving import ServeProcess

pytestmark = pytest.mark.anyio
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
WORKERS = 4
BRAND_LIMIT = 12
PID_PACK = """
[packs.pid]
type = "pid"
shared = true
"""


class Workers(ServeProcess):
    def __init__(self, folder: Path, config_text: str) -> None:
        self.config = write_config(folder, config_text)
        env = server_env(self.config)
        env["QAQNUZ_PLUGINS"] = ",".join([*PLUGINS, "testkit_pack.pid"])
        args = ["--transport", "http", "--host", "127.0.0.1", "--port", "0", "--workers", str(WORKERS)]
        super().__init__(args, env)
        self.port = int(self.wait_for(r"listening on 127\.0\.0\.1:(\d+) for 4 http workers").group(1))
        self.wait_for("serving MCP over HTTP at", count=WORKERS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = qaqnuz_cli(self.config, *args)
        assert done.returncode == 0, done.stderr
        return done

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return {int(pid) for pid in children}


@pytest.fixture
def workers(tmp_path: Path):
    started: list[Workers] = []

    def start(config_text: str) -> Workers:
        server = Workers(tmp_path, config_text)
        started.append(server)
        return server

    yield start
    for server in started:
        pids = server.worker_pids() if server.process.poll() is None else set()
        server.stop()
        for pid in pids:  # workers stop by themselves once their parent is gone
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)


async def call(url: str, key: str, tool: str, arguments: dict, request_id: int) -> dict:
    """One tools/call on a connection of its own (so the operating system picks a worker for each)."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": META}}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": tool, "Accept": "application/json, text/event-stream"}  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]["structuredContent"]


async def test_four_workers_share_limits_approvals_and_metrics(workers):
    config = kit_config(per_key="1000/60s", per_brand=f"{BRAND_LIMIT}/60s") + PID_PACK
    config = config.replace(
        "tools.slow = { exposable = true }", "tools.slow = { exposable = true }\ntools.whoami = { exposable = true }"
    )
    server = await anyio.to_thread.run_sync(workers, config)
    serving_since = time.monotonic()
    assert len(server.worker_pids()) == WORKERS
    key = server.cli("keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "w").stdout.strip()

    # Calls arrive 40 ms apart and each holds its worker for 200 ms, so they spread over the workers.
    results: list[dict] = []

    async def one(i: int) -> None:
        results.append(await call(server.url, key, "whoami", {}, i))

    async with anyio.create_task_group() as tg:
        for i in range(3 * BRAND_LIMIT):
            tg.start_soon(one, i)
            await anyio.sleep(0.04)
    admitted = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(admitted) == BRAND_LIMIT, results
    assert {r["error_class"] for r in refused} == {"retryable"}
    assert all(r["retry_hint"]["retry_after_ms"] > 0 for r in refused)
    pids = {r["data"]["pid"] for r in admitted}
    assert len(pids) >= 2 and pids <= server.worker_pids(), (pids, server.worker_pids())

    # An approval granted once runs once, whichever workers the re-issued calls reach at the same moment.
    manager = server.cli(
        "keys", "create", "--brand", "globex", "--role", "manager", "--scope", "orders.read", "--scope",
        "orders.write", "--name", "m",
    ).stdout.strip()  # fmt: skip
    order = {"sku": "W-1", "qty": 1}
    first = await call(server.url, manager, "create_order", order, 1)
    assert first["error_class"] == "permission" and first["approval_id"].startswith("apr_")
    server.cli("approvals", "approve", first["approval_id"], "--reason", "ok")
    again: list[dict] = []

    async def reissue(i: int) -> None:
        again.append(await call(server.url, manager, "create_order", order, i))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(reissue, i)
    assert sum(1 for r in again if r["ok"]) == 1, again
    assert (server.config.parent / "testkit-executions.txt").read_text().splitlines() == ["W-1:1"]

    # Any worker's /metrics counts every worker's calls.
    expected = {"executed": BRAND_LIMIT + 1, "denied": 2 * BRAND_LIMIT, "approval_requested": 1 + 7}
    for _ in range(6):
        async with httpx.AsyncClient() as http:
            text = (await http.get(server.url.removesuffix("/mcp") + "/metrics")).text
        totals: dict[str, float] = {}
        for outcome, value in re.findall(r'^qaqnuz_tool_calls_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', text, re.M):
            totals[outcome] = totals.get(outcome, 0.0) + float(value)
        assert totals == expected, text
        assert 'qaqnuz_build_info{version="0.1.0"} 1.0' in text

    # A worker killed outright is replaced; the others serve meanwhile, and limits still hold. (A worker that
    # dies within its first 5 s counts as one that could not start, and stops the server: kill it later.)
    await anyio.sleep(max(0.0, serving_since + 5.5 - time.monotonic()))
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker \d \(pid {victim}\) exited with signal SIGKILL; starting another")
    server.wait_for("serving MCP over HTTP at", count=WORKERS + 1)
    assert len(server.worker_pids()) == WORKERS and victim not in server.worker_pids()
    assert (await call(server.url, key, "whoami", {}, 99))["error_class"] == "retryable"  # the window is full

    # SIGTERM to the parent: every worker finishes and the parent exits 0.
    pids = server.worker_pids()
    server.process.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=60)) == 0, server.log
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert server.log.count("kernel stopped; last-used times flushed") == WORKERS, server.log  # not the killed one
    listed = json.loads(server.cli("keys", "list", "--json").stdout)
    assert all(record["last_used_at"] for record in listed)


def test_workers_need_a_shared_limiter_and_a_network_transport(tmp_path: Path):
    config = write_config(
        tmp_path, kit_config().replace("[server]\n", '[plugins]\nlimiter = "memory"\n\n[server]\n', 1)
    )
    env = server_env(config)
    done = subprocess.run(
        [sys.executable, "-m", "qaqnuz", "serve", "--transport", "http", "--port", "0", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "limiter = 'memory' counts in one process" in done.stderr, done.stderr
    env["QAQNUZ_PLUGINS"] += ",stdio"
    done = subprocess.run(
        [sys.executable, "-m", "qaqnuz", "serve", "--transport", "stdio", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "cannot share a socket" in done.stderr, done.stderr
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None
