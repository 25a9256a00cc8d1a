"""The governed path over HTTP, as over stdio: approvals, rate limits, revocation, tool-list notifications."""

from __future__ import annotations

import anyio
import httpx2
import mcp.types as mt
import pytest
from httpkit import qaqnuz_cli
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kit import kit_config

pytestmark = pytest.mark.anyio


def with_header(url: str, key: str):
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_approval_flow_executes_exactly_once(http_server, mode):
    server = http_server()
    key = server.mint("manager", role="manager", scopes=("orders.read", "orders.write"))
    counter = server.folder / "testkit-executions.txt"
    args = {"sku": "A-1", "qty": 2}
    async with Client(with_header(server.url, key), mode=mode) as client:
        first = await client.call_tool("create_order", args)
        assert first.is_error and first.structured_content["error_class"] == "permission"
        approval_id = first.structured_content["approval_id"]
        assert approval_id.startswith("apr_") and "requires approval" in first.content[0].text
        pending = await client.call_tool("create_order", args)
        assert pending.structured_content["approval_id"] == approval_id  # no duplicate request
        assert not counter.exists()

        done = await anyio.to_thread.run_sync(
            qaqnuz_cli, server.folder / "qaqnuz.toml", "approvals", "approve", approval_id, "--reason", "ok"
        )
        assert done.returncode == 0, done.stderr

        executed = await client.call_tool("create_order", args)
        assert executed.is_error is False
        assert executed.structured_content["data"] == {"created": True, "sku": "A-1", "qty": 2}
        again = await client.call_tool("create_order", args)
        assert again.is_error and again.structured_content["approval_id"] != approval_id  # consumed
    assert counter.read_text().splitlines() == ["A-1:2"]


async def test_rate_limit_sixth_call_is_retryable(http_server):
    server = http_server(kit_config(per_key="5/60s"))
    key = server.mint()
    async with Client(f"{server.url}?token={key}") as client:
        for _ in range(5):
            assert (await client.call_tool("echo", {"message": "x"})).is_error is False
        sixth = await client.call_tool("echo", {"message": "x"})
    assert sixth.is_error
    assert sixth.structured_content["error_class"] == "retryable"
    assert sixth.structured_content["retry_hint"]["retry_after_ms"] > 0
    assert sixth.content[0].text == "Rate limit exceeded. Please wait before sending more requests."


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_revocation_takes_effect_on_the_next_call(http_server, mode):
    server = http_server()
    key = server.mint()
    key_id = (await server.kernel.store.list_keys())[0].key_id
    async with Client(with_header(server.url, key), mode=mode) as client:
        assert (await client.call_tool("echo", {"message": "before"})).is_error is False
        await server.kernel.store.revoke_key(key_id, server.kernel.clock())
        with pytest.raises(Exception):  # the next request is refused with 401 before it reaches a session
            with anyio.fail_after(10):
                await client.call_tool("echo", {"message": "after"})


async def test_tools_list_changed_reaches_a_legacy_http_client(http_server):
    server = http_server(kit_config(sync="1s"))
    key = server.mint()
    heard = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            heard.set()

    async with Client(with_header(server.url, key), mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools.list_changed is True
        await client.list_tools()
        await anyio.sleep(0.3)  # let the standalone GET stream open
        (server.folder / "echo-description.txt").write_text("Echo, described anew.")
        with anyio.fail_after(10):
            await heard.wait()
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["echo"].description == "[stable] Echo, described anew."
