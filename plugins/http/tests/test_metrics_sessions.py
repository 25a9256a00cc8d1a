"""`qaqnuz_sessions_open{transport}` follows real MCP sessions over HTTP (session-era Streamable HTTP and
legacy SSE), and `/metrics` carries the process and Python collectors of the kernel's own registry."""

from __future__ import annotations

import time

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio


def _open(server, transport: str) -> float:
    return server.kernel.metrics.registry.get_sample_value("qaqnuz_sessions_open", {"transport": transport}) or 0.0


async def _until(condition, timeout: float = 10.0) -> None:
    import anyio

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await anyio.sleep(0.05)


async def test_session_era_sessions_are_counted_while_open(http_server):
    server = http_server()
    key = server.mint()
    headers = {"Authorization": f"Bearer {key}"}
    async with Client(streamable_http_client(server.url, http_client=httpx2.AsyncClient(headers=headers)),
                      mode="legacy") as first:  # fmt: skip
        assert (await first.call_tool("echo", {"message": "a"})).is_error is False
        assert _open(server, "http") == 1.0
        async with Client(
            streamable_http_client(server.url, http_client=httpx2.AsyncClient(headers=headers)), mode="legacy"
        ) as second:
            await second.list_tools()
            assert _open(server, "http") == 2.0
        await _until(lambda: _open(server, "http") == 1.0)  # the client's DELETE ends its session
    await _until(lambda: _open(server, "http") == 0.0)


async def test_the_sessionless_era_opens_no_session(http_server):
    server = http_server()
    key = server.mint()
    client = streamable_http_client(
        server.url, http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
    )
    async with Client(client, mode="auto") as modern:
        assert client is not None and modern.protocol_version == "2026-07-28"
        assert (await modern.call_tool("echo", {"message": "a"})).is_error is False
        assert _open(server, "http") == 0.0


async def test_legacy_sse_connections_are_counted(http_server):
    server = http_server()
    key = server.mint()
    async with Client(sse_client(f"{server.base}/sse", headers={"Authorization": f"Bearer {key}"}), mode="legacy") as c:
        assert (await c.call_tool("echo", {"message": "sse"})).is_error is False
        assert _open(server, "sse") == 1.0
    await _until(lambda: _open(server, "sse") == 0.0)


async def test_metrics_carry_process_and_python_collectors(http_server):
    server = http_server()
    async with httpx2.AsyncClient() as http:
        text = (await http.get(f"{server.base}/metrics")).text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "python_gc_collections_total", "python_info", "qaqnuz_sessions_open"):  # fmt: skip
        assert name in text, name
