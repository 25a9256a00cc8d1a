"""Least privilege: each provider kind's factory gets its own context. A tool pack's holds no server secret and
no store, however deep one looks; an auth provider's does (it must), which also proves the search works."""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from qaqnuz import AuthContext, Provider, SecretRef, SideEffect, Tool, ToolPackContext, hookimpl
from qaqnuz.kernel import Kernel
from qaqnuz.store import Store
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
SEEN: dict[str, Any] = {}


class CaptureSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: SecretRef


class CapturePack:
    async def list_tools(self) -> list[Tool]:
        return [Tool("noop", "Nothing.", {"type": "object"}, "orders.read", SideEffect.READ, self.run)]

    async def run(self, args: Any) -> None:
        return None


def capture_pack(settings: CaptureSettings, ctx: ToolPackContext) -> CapturePack:
    SEEN["pack"] = ctx
    SEEN["resolved"] = ctx.secret(settings.token, f"{ctx.where} token")
    return CapturePack()


class CaptureAuth:
    async def authenticate(self, credential: str | None) -> None:
        return None


def capture_auth(settings: object, ctx: AuthContext) -> CaptureAuth:
    SEEN["auth"] = ctx
    return CaptureAuth()


class Plugin:
    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        return [Provider("capture", capture_pack, "Captures.", CaptureSettings)]

    @hookimpl
    def qaqnuz_auth_providers(self) -> list[Provider]:
        return [Provider("capture_auth", capture_auth, "Captures.")]


plugin = Plugin()

CONFIG = """\
[plugins]
auth = "capture_auth"

[brands.acme]
plan = "growth"
roles = { viewer = ["orders.read"] }

[packs.p]
type = "capture"
token = { env = "CAPTURE_TOKEN" }
"""


def reachable(root: Any, depth: int = 6) -> Iterator[Any]:
    """Everything reachable from `root` through attributes, slots, containers, bound methods and closures."""
    seen: set[int] = set()
    todo = [(root, 0)]
    while todo:
        obj, level = todo.pop()
        if id(obj) in seen or level > depth or isinstance(obj, logging.Logger | type | types.ModuleType):
            continue
        seen.add(id(obj))
        yield obj
        children: list[Any] = []
        if isinstance(obj, dict):
            children += [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set | frozenset):
            children += list(obj)
        if isinstance(obj, types.MethodType):
            children.append(obj.__self__)
        if isinstance(obj, types.FunctionType) and obj.__closure__:
            children += [cell.cell_contents for cell in obj.__closure__]
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                children.append(getattr(obj, name))
        if hasattr(obj, "__dict__") and not isinstance(obj, type):
            children += list(vars(obj).values())
        todo += [(child, level + 1) for child in children]


def holds_secret_or_store(root: Any, secret: bytes) -> list[str]:
    found = []
    for obj in reachable(root):
        if isinstance(obj, bytes) and obj == secret:
            found.append("the server secret")
        if isinstance(obj, str) and obj.encode() == secret:
            found.append("the server secret (text)")
        if isinstance(obj, Store | Kernel):
            found.append(type(obj).__name__)
    return found


async def test_a_tool_pack_context_holds_neither_the_server_secret_nor_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTURE_TOKEN", "pack-token-0123456789")
    kernel = await start_kernel(write_config(tmp_path, CONFIG), plugins=[plugin])
    try:
        ctx = SEEN["pack"]
        assert isinstance(ctx, ToolPackContext)
        assert holds_secret_or_store(ctx, kernel.secret) == []
        assert not hasattr(ctx, "store") and not hasattr(ctx, "server_secret") and not hasattr(ctx, "config")
        assert SEEN["resolved"].reveal() == "pack-token-0123456789"  # what it may have: its own secrets
        # the control: an auth provider's context must reach both, and the search finds them
        found = holds_secret_or_store(SEEN["auth"], kernel.secret)
        assert "the server secret" in found and any(name != "the server secret" for name in found)
    finally:
        await kernel.aclose()


async def test_a_secret_a_pack_resolves_is_masked_in_the_kernels_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CAPTURE_TOKEN", "pack-token-0123456789")
    with caplog.at_level(logging.INFO):
        kernel = await start_kernel(write_config(tmp_path, CONFIG), plugins=[plugin])
        try:
            logging.getLogger("qaqnuz.test").warning("upstream said pack-token-0123456789 was wrong")
        finally:
            await kernel.aclose()
    assert "pack-token-0123456789" not in caplog.text and "[redacted]" in caplog.text
