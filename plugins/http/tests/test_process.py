"""`qaqnuz serve --transport http` as users run it: no key in any log line, SIGTERM exits 0 and flushes
last-used; in-process, a call in flight when the server is asked to stop still gets its answer."""

from __future__ import annotations

import json
import signal

import anyio
import httpx2
import pytest
from httpkit import qaqnuz_cli
from mcp import Client
from mcp.client.sse import sse_client

from kit import kit_config

pytestmark = pytest.mark.anyio


async def test_no_key_in_any_log_line_and_sigterm_flushes_last_used(serve_subprocess):
    config_text = kit_config().replace("[server]\n", '[server]\nlog_level = "debug"\n', 1)
    server = serve_subprocess(config_text)
    minted = await anyio.to_thread.run_sync(
        qaqnuz_cli, server.config, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "canary"
    )
    key = minted.stdout.strip()
    assert minted.returncode == 0 and key.startswith("qx_live_"), minted.stderr
    secret = key.split("_", 3)[3]  # qx_live_<key id>_<secret><checksum>

    async with Client(f"{server.url}?token={key}") as client:
        assert (await client.call_tool("echo", {"message": "modern"})).is_error is False
    async with Client(f"{server.url}?token={key}", mode="legacy") as client:
        assert (await client.call_tool("echo", {"message": "legacy"})).is_error is False
    base = server.url.removesuffix("/mcp")
    async with Client(sse_client(f"{base}/sse?token={key}"), mode="legacy") as client:
        assert (await client.call_tool("echo", {"message": "sse"})).is_error is False
    async with httpx2.AsyncClient() as http:
        wrong = key[:-3] + ("AAA" if not key.endswith("AAA") else "BBB")
        assert (await http.post(f"{server.url}?token={wrong}", json={})).status_code == 401
        assert (
            await http.post(f"{server.url}?token={key}", json={}, headers={"Authorization": key})
        ).status_code == 400

    server.process.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=20)) == 0
    await anyio.sleep(0.2)  # let the reader thread drain stderr
    log = "".join(server.stderr_lines)
    assert "DEBUG qaqnuz.http: refused POST /mcp" in log and "qaqnuz.http.access" in log  # debug level
    assert key not in log and secret not in log and secret[:20] not in log
    assert "token=" not in log
    assert "kernel stopped; last-used times flushed" in log

    listed = await anyio.to_thread.run_sync(qaqnuz_cli, server.config, "keys", "list", "--json")
    (record,) = json.loads(listed.stdout)
    assert record["last_used_at"] is not None
    assert record["key_id"] in log  # the access log names the key id, never the key


async def test_a_call_in_flight_finishes_when_the_server_is_stopped(http_server):
    server = http_server(kit_config())
    key = server.mint()
    results = []

    async with Client(f"{server.url}?token={key}", mode="legacy") as client:

        async def call_slow() -> None:
            results.append(await client.call_tool("slow", {}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call_slow)
            await anyio.sleep(0.2)
            server.transport.stop()  # the slow tool times out after 0.5 s: its answer must still arrive
    assert results and results[0].structured_content["error_class"] == "dependency"
    await anyio.to_thread.run_sync(lambda: server.thread.join(10))
    assert not server.thread.is_alive()
