"""Tool sync and config reload over stdio (SPEC §9, issue 2 item 7): a changed definition or config is
noticed within a sync period or two and every connected client hears notifications/tools/list_changed,
in both protocol eras. Waits are bounded with anyio.fail_after; nothing asserts on timing."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import mcp.types as mt
import pytest

from kit import kit_config, server_env
from qaqnuz.testing import start_kernel, write_config
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio

WAIT_S = 15
ECHO_EXPOSED = "tools.echo = { exposable = true }"


def replace_file(path: Path, text: str) -> None:
    """Atomic replace, so the server never reads a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def prepared(tmp_path: Path) -> tuple[Path, str]:
    cfg = write_config(tmp_path, kit_config(sync="1s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="sync")
    finally:
        await kernel.aclose()
    return cfg, key


@asynccontextmanager
async def watched_session(env: dict[str, str], mode: str, **kw):
    """A stdio client plus an anyio.Event-like counter of tools/list_changed it has heard.

    legacy: the notification arrives through message_handler; auto (2026-07-28): on a
    subscriptions/listen stream, opened (and acknowledged) before this yields.
    """
    heard = Counter()

    async def on_message(message) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            heard.bump()

    if mode == "legacy":
        async with stdio_session(env, mode="legacy", message_handler=on_message, **kw) as client:
            assert client.server_capabilities.tools.list_changed is True
            yield client, heard
        return

    async with stdio_session(env, mode="auto", **kw) as client:
        assert client.protocol_version == "2026-07-28"
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()

            async def listen() -> None:
                async with client.listen(tools_list_changed=True) as sub:
                    assert sub.honored.tools_list_changed
                    ready.set()
                    async for _event in sub:
                        heard.bump()

            tg.start_soon(listen)
            with anyio.fail_after(WAIT_S):
                await ready.wait()
            yield client, heard
            tg.cancel_scope.cancel()


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self._changed = anyio.Event()

    def bump(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def beyond(self, seen: int) -> None:
        """Wait until more notifications than `seen` have arrived."""
        with anyio.fail_after(WAIT_S):
            while self.count <= seen:
                await self._changed.wait()


async def descriptions(client) -> dict[str, str]:
    return {t.name: t.description for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_changed_description_is_announced_and_listed(tmp_path, mode) -> None:
    cfg, key = await prepared(tmp_path)
    async with watched_session(server_env(cfg, key), mode) as (client, heard):
        before = await descriptions(client)
        assert before["echo"] == "[stable] Echo a message back."
        seen = heard.count
        replace_file(tmp_path / "echo-description.txt", "Echo, now with a new description.")
        await heard.beyond(seen)
        after = await descriptions(client)
    assert after["echo"] == "[stable] Echo, now with a new description."
    assert set(after) == set(before)  # the name and every other tool unchanged


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_config_edit_hides_a_tool_and_is_announced(tmp_path, mode) -> None:
    cfg, key = await prepared(tmp_path)
    async with watched_session(server_env(cfg, key), mode) as (client, heard):
        assert "echo" in await descriptions(client)
        seen = heard.count
        text = cfg.read_text()
        assert ECHO_EXPOSED in text
        replace_file(cfg, text.replace(ECHO_EXPOSED, "tools.echo = { exposable = false }", 1))  # brand acme
        await heard.beyond(seen)
        after = await descriptions(client)
        hidden = await client.call_tool("echo", {"message": "hi"})
    assert "echo" not in after
    assert "beta_echo" in after
    assert hidden.is_error
    assert hidden.structured_content["error_class"] == "permission"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_invalid_config_edit_is_rejected_and_old_config_keeps_serving(tmp_path, mode) -> None:
    cfg, key = await prepared(tmp_path)
    stderr_path = tmp_path / "server-stderr.log"
    original = cfg.read_text()
    bad = original.replace('viewer = ["orders.read"], manager', 'viewer = ["orders.*"], manager', 1)
    assert bad != original
    with stderr_path.open("w") as errlog:
        async with watched_session(server_env(cfg, key), mode, errlog=errlog) as (client, heard):
            before = await descriptions(client)
            seen = heard.count
            replace_file(cfg, bad)
            with anyio.fail_after(WAIT_S):
                while "config reload rejected" not in stderr_path.read_text():
                    await anyio.sleep(0.1)
            still = await client.call_tool("echo", {"message": "still here"})
            during = await descriptions(client)
            assert heard.count == seen  # a rejected edit announces nothing
            # the reload loop keeps working: a valid edit after the rejected one is applied
            replace_file(cfg, original.replace(ECHO_EXPOSED, "tools.echo = { exposable = false }", 1))
            await heard.beyond(seen)
            after = await descriptions(client)
    log = stderr_path.read_text()
    assert not still.is_error
    assert still.structured_content["data"] == {"message": "still here", "times": 1}
    assert during == before
    assert "orders.*" in log  # the reason is logged, with its location
    assert "[brands.acme] roles.viewer" in log
    assert "echo" not in after
