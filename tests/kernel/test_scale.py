"""A catalogue of 10,000 tools loads, a sync with no change re-hashes and re-checks nothing, and calls are
answered; per-call work does not depend on the catalogue (times are for the bench, not asserted here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from qaqnuz import Provider, SideEffect, Tool, hookimpl
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
N = 10_000
SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 1000}},
    "required": ["text"],
    "additionalProperties": False,
}


class Many:
    """Either the same tool objects at every listing (a configured pack) or equal new ones (a code pack)."""

    def __init__(self, fresh_objects: bool) -> None:
        self.fresh_objects = fresh_objects
        self.tools = self.make()

    def make(self) -> list[Tool]:
        return [
            Tool(f"echo_{i}", f"Echo number {i}.", dict(SCHEMA), "echo.read", SideEffect.READ, self.echo)
            for i in range(N)
        ]

    async def list_tools(self) -> list[Tool]:
        return self.make() if self.fresh_objects else self.tools

    async def echo(self, args: Mapping[str, Any]) -> Any:
        return {"text": args["text"]}


class Plugin:
    def __init__(self, fresh_objects: bool) -> None:
        self.fresh_objects = fresh_objects

    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        return [Provider("many", lambda s, c: Many(self.fresh_objects), "Ten thousand echo tools.")]


@pytest.mark.parametrize("fresh_objects", [False, True], ids=["same objects", "equal new objects"])
async def test_ten_thousand_tools_load_sync_without_rehashing_and_answer(tmp_path, fresh_objects):
    exposed = "\n".join(f"tools.echo_{i} = {{ exposable = true }}" for i in range(N))
    text = f'[brands.acme]\nplan = "enterprise"\nroles = {{ viewer = ["echo.read"] }}\n{exposed}\n'
    text += '\n[packs.many]\ntype = "many"\nshared = true\n'
    kernel = await start_kernel(write_config(tmp_path, text), plugins=[Plugin(fresh_objects)])
    try:
        registry = kernel.registry
        assert len(registry.snapshot.tools) == N and registry.prepared == N
        version, full = registry.snapshot.version, registry.full_syncs
        await kernel.tick()
        await kernel.tick()
        assert registry.prepared == N  # nothing hashed, checked or compiled again
        assert registry.snapshot.version == version  # and the catalogue did not change
        # the same objects: nothing looked at past the listing; equal new ones: compared, not re-hashed
        assert registry.full_syncs == full + (2 if fresh_objects else 0)
        raw, _ = await kernel.keys.mint(brand="acme", scopes=["echo.read"], name="many")
        principal = await kernel.authenticate(raw)
        assert len(kernel.host.list_tools(principal).tools) == N
        for name in ("echo_0", "echo_5000", f"echo_{N - 1}"):
            outcome = await kernel.host.call_tool(principal, name, {"text": name}, transport="t")
            assert outcome.result.data == {"text": name}
        invalid = await kernel.host.call_tool(principal, "echo_7", {"text": 7}, transport="t")
        assert invalid.result.error_class == "validation"  # the one shared validator is used
    finally:
        await kernel.aclose()


async def test_a_sync_after_an_idle_one_still_sees_every_change():
    from qaqnuz.registry import Registry

    def tool(name: str, description: str = "") -> Tool:
        return Tool(name, description or f"The {name} tool.", dict(SCHEMA), "echo.read", SideEffect.READ, echo)

    async def echo(args: Mapping[str, Any]) -> Any:
        return args

    class Pack:
        def __init__(self) -> None:
            self.tools: list[Tool] | None = [tool("a"), tool("b")]

        async def list_tools(self) -> list[Tool]:
            if self.tools is None:
                raise ConnectionError("upstream down")
            return self.tools

    pack, registry = Pack(), Registry()
    assert await registry.sync({"p": pack}) is True
    assert await registry.sync({"p": pack}) is False and registry.full_syncs == 1  # idle: listings only
    assert pack.tools is not None
    pack.tools = [pack.tools[0], tool("b", "Changed.")]  # one definition replaced
    assert await registry.sync({"p": pack}) is True and registry.full_syncs == 2
    assert registry.snapshot.tools["b"].tool.description == "Changed."
    pack.tools = [*pack.tools, tool("c")]  # one added, in place
    assert await registry.sync({"p": pack}) is True and set(registry.snapshot.tools) == {"a", "b", "c"}
    kept, pack.tools = pack.tools, None  # listing fails: the last good tools stay, and the next sync looks again
    assert await registry.sync({"p": pack}) is False and set(registry.snapshot.tools) == {"a", "b", "c"}
    pack.tools = kept
    full = registry.full_syncs
    assert await registry.sync({"p": pack}) is False and registry.full_syncs == full + 1
    assert await registry.sync({"p": pack, "q": Pack()}) is False  # a new pack, clashing names: not applied
    assert registry.full_syncs == full + 2 and set(registry.snapshot.tools) == {"a", "b", "c"}


async def test_a_registry_that_never_applied_a_sync_looks_at_everything():
    """A successor registry (a config reload) with no packs, or one whose last sync kept the previous catalogue
    because of a clash, never takes an idle sync's shortcut."""
    from qaqnuz.registry import Registry

    first = Registry()
    assert await first.sync({}) is True and first.full_syncs == 1
    assert await first.sync({}) is False and first.full_syncs == 1  # applied before: the shortcut
    successor = first.successor()
    await successor.sync({})
    assert successor.full_syncs == 1  # never applied: looked at
