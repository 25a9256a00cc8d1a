"""Two HTTP replicas on two ports sharing a real PostgreSQL store and a real Redis limiter, as behind a load
balancer: limits hold globally, a revocation by the CLI reaches both within a second, an approval runs once in
total, and with PostgreSQL stopped both refuse (retryable) until it is back, with no restart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from kit import SUPPORT, kit_config
from qaqnuz.testing import postgres_cluster, write_config
from qaqnuz.testservers import PostgresServer
from serving import SERVING, ServeProcess
from wheels import run

pytestmark = pytest.mark.anyio
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
BRAND_LIMIT = 10
PLUGINS = "http,redis,postgres,testkit_pack.plugin"


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A cluster of this test alone: the test stops and starts it."""
    with postgres_cluster() as server:
        yield server


class Replicas:
    def __init__(self, folder: Path, postgres: PostgresServer, redis_url: str) -> None:
        dsn = postgres.create_database("qaqnuz")
        text = kit_config(per_key="1000/60s", per_brand="1000/60s", tiny_plan="growth")
        text = text.replace(
            '[brands.tiny]\nplan = "growth"\n',
            f'[brands.tiny]\nplan = "growth"\nlimits = {{ per_brand = "{BRAND_LIMIT}/60s" }}\n',
        )
        text = text.replace('store = "sqlite:///qaqnuz.db"', f'store = "{dsn}"', 1)
        text += f'\n[plugins]\nlimiter = "redis"\n\n[plugins.redis]\nurl = "{redis_url}"\ntimeout = "500ms"\n'
        self.folder = folder
        self.config = write_config(folder, text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
        env.update(
            QAQNUZ_CONFIG=str(self.config),
            QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
            QAQNUZ_PLUGINS=PLUGINS,
            PYTHONPATH=os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        self.env = env
        self.servers: list[ServeProcess] = []
        self.urls: list[str] = []

    def cli(self, *args: str) -> str:
        import sys

        return run(sys.executable, "-m", "qaqnuz", *args, cwd=self.folder, env=self.env).stdout.strip()

    def start(self, count: int) -> None:
        for _ in range(count):
            server = ServeProcess(["--transport", "http", "--host", "127.0.0.1", "--port", "0"], self.env)
            self.servers.append(server)
        for server in self.servers:
            self.urls.append(f"http://127.0.0.1:{server.wait_for(SERVING).group(1)}/mcp")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def replicas(tmp_path: Path, postgres: PostgresServer, qaqnuz_redis) -> Iterator[Replicas]:
    deployment = Replicas(tmp_path, postgres, qaqnuz_redis.url)
    yield deployment
    deployment.stop()


async def post(url: str, key: str, tool: str, arguments: dict, request_id: int = 1) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": META}}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": tool, "Accept": "application/json, text/event-stream"}  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, json=body, headers=headers)


async def call(url: str, key: str, tool: str, arguments: dict, request_id: int = 1) -> dict:
    answer = await post(url, key, tool, arguments, request_id)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]["structuredContent"]


async def test_two_replicas_on_postgresql_and_redis_agree(replicas: Replicas, postgres: PostgresServer) -> None:
    applied = await anyio.to_thread.run_sync(replicas.cli, "store", "migrate")
    assert applied.startswith("applied "), applied
    assert await anyio.to_thread.run_sync(replicas.cli, "store", "migrate") == ""  # up to date: nothing applied
    await anyio.to_thread.run_sync(replicas.start, 2)
    a, b = replicas.urls
    mint = ("keys", "create", "--brand", "acme", "--scope", "orders.read", "--name")
    key = await anyio.to_thread.run_sync(
        replicas.cli, "keys", "create", "--brand", "tiny", "--scope", "orders.read", "--name", "limits"
    )

    # Limits hold across both replicas: 3x the brand's limit (tiny's), alternating, all at once.
    results: list[dict] = []

    async def one(i: int) -> None:
        results.append(await call((a, b)[i % 2], key, "echo", {"message": f"m{i}"}, i))

    async with anyio.create_task_group() as tg:
        for i in range(3 * BRAND_LIMIT):
            tg.start_soon(one, i)
    assert sum(r["ok"] for r in results) == BRAND_LIMIT, results
    assert {r["error_class"] for r in results if not r["ok"]} == {"retryable"}

    # A revocation by the CLI reaches both replicas (whose caches hold the key) within a second.
    victim = await anyio.to_thread.run_sync(replicas.cli, *mint, "victim")
    other = await anyio.to_thread.run_sync(
        replicas.cli, "keys", "create", "--brand", "globex", "--scope", "orders.read", "--name", "other"
    )
    for url in (a, b):
        assert (await post(url, victim, "echo", {"message": "warm"})).status_code == 200
    key_id = victim.split("_")[2]
    await anyio.to_thread.run_sync(replicas.cli, "keys", "revoke", key_id)
    revoked_at = time.monotonic()
    refused_after: dict[str, float] = {}
    while len(refused_after) < 2 and time.monotonic() - revoked_at < 5:
        for url in (a, b):
            if url not in refused_after and (await post(url, victim, "echo", {"message": "x"})).status_code == 401:
                refused_after[url] = time.monotonic() - revoked_at
        await anyio.sleep(0.02)
    assert set(refused_after) == {a, b} and max(refused_after.values()) < 1.0, refused_after
    for url in (a, b):
        assert (await call(url, other, "echo", {"message": "still fine"}))["ok"]

    # An approval granted once runs once in total, re-issued to both replicas at the same moment.
    manager = await anyio.to_thread.run_sync(
        replicas.cli, "keys", "create", "--brand", "globex", "--role", "manager", "--scope", "orders.read",
        "--scope", "orders.write", "--name", "m",
    )  # fmt: skip
    order = {"sku": "R-1", "qty": 3}
    first = await call(a, manager, "create_order", order)
    assert first["error_class"] == "permission" and first["approval_id"].startswith("apr_")
    await anyio.to_thread.run_sync(replicas.cli, "approvals", "approve", first["approval_id"], "--reason", "ok")
    again: list[dict] = []

    async def reissue(i: int) -> None:
        again.append(await call((a, b)[i % 2], manager, "create_order", order, i))

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(reissue, i)
    assert sum(r["ok"] for r in again) == 1, again
    assert (replicas.folder / "testkit-executions.txt").read_text().splitlines() == ["R-1:3"]

    # PostgreSQL stopped: both refuse, as retryable (503 + Retry-After, never 401), and are not ready.
    await anyio.to_thread.run_sync(postgres.stop)
    for url in (a, b):
        answer = await post(url, other, "echo", {"message": "down"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        async with httpx.AsyncClient() as http:
            assert (await http.get(url.removesuffix("/mcp") + "/readyz")).status_code == 503
    assert (replicas.folder / "testkit-executions.txt").read_text().splitlines() == ["R-1:3"]

    # Started again: both serve, neither restarted.
    await anyio.to_thread.run_sync(postgres.start)
    deadline = time.monotonic() + 30
    served: set[str] = set()
    while served != {a, b}:
        assert time.monotonic() < deadline, "the replicas did not recover after PostgreSQL came back"
        for url in (a, b):
            answer = await post(url, other, "echo", {"message": "back"})
            if answer.status_code == 200 and answer.json()["result"]["structuredContent"]["ok"]:
                served.add(url)
        await anyio.sleep(0.2)
    assert all(server.process.poll() is None for server in replicas.servers)
