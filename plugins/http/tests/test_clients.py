"""Real `mcp` clients against a real server: both protocol eras, header and ?token=, /mcp/v1, legacy SSE.
tools/list and tools/call take the fast path (the SDK's client sends them well formed)."""

from __future__ import annotations

import json

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

VISIBLE = {"echo", "beta_echo", "boom", "flaky_upstream", "big", "slow"}  # orders.read, exposable, enabled


def with_header(url: str, key: str):
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("form", ["header", "query"])
async def test_list_and_read_call(http_server, mode, form):
    server = http_server()
    key = server.mint()
    target = with_header(server.url, key) if form == "header" else f"{server.url}?token={key}"
    async with Client(target, mode=mode) as client:
        assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == VISIBLE
        result = await client.call_tool("echo", {"message": "hi"})
        assert result.is_error is False
        assert result.structured_content == {"ok": True, "data": {"message": "hi", "times": 1}, "truncated": False}
        assert json.loads(result.content[0].text) == {"message": "hi", "times": 1}
    assert server.transport.built.fast.answered == 2  # both took the fast path, in either era


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_versioned_alias(http_server, mode):
    server = http_server()
    key = server.mint()
    async with Client(with_header(server.url + "/v1", key), mode=mode) as client:
        assert (await client.call_tool("echo", {"message": "v1"})).is_error is False


@pytest.mark.parametrize("form", ["header", "query"])
async def test_legacy_sse_transport(http_server, form):
    server = http_server()
    key = server.mint()
    if form == "header":
        transport = sse_client(f"{server.base}/sse", headers={"Authorization": f"Bearer {key}"})
    else:
        transport = sse_client(f"{server.base}/sse?token={key}")
    async with Client(transport, mode="legacy") as client:
        assert {t.name for t in (await client.list_tools()).tools} == VISIBLE
        result = await client.call_tool("echo", {"message": "sse"})
        assert result.structured_content["data"] == {"message": "sse", "times": 1}
