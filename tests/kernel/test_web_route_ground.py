"""What the kernel hands a web route (the console): console users, a read-only view of the server, keys
derived from the server secret, and audit records naming who acted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit import kit_config
from qaqnuz import CallQuery, UsageError
from qaqnuz.runtime import route_key
from qaqnuz.serverview import KernelView
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio


async def test_console_users_are_checked_against_the_config(tmp_path: Path) -> None:
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    users = kernel.admin.users
    try:
        for args, wanted in [
            (("bad name!", "admin", None), "invalid user name"),
            (("ann", "root", None), "unknown console role"),
            (("ann", "brand-admin", None), "give --brand"),
            (("ann", "admin", "acme"), "leave out --brand"),
            (("ann", "auditor", "nowhere"), "unknown brand"),
        ]:
            with pytest.raises(UsageError, match=wanted):
                await users.add(args[0], role=args[1], brand=args[2], password_hash="h")
        made = await users.add("ann", role="brand-admin", brand="acme", password_hash="h1")
        with pytest.raises(UsageError, match="--replace"):
            await users.add("ann", role="auditor", password_hash="h2")
        changed = await users.add("ann", role="auditor", password_hash="h2", replace=True, actor="console:root")
        assert changed.created_at == made.created_at and changed.sessions_after >= made.created_at
        assert await users.remove("ann", actor="console:root") is True and await users.get("ann") is None
        assert await users.get("../etc") is None  # a name that could not exist is not even looked up
    finally:
        await kernel.aclose()
    lines = [json.loads(line) for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines()]
    steps = [(r["outcome"], r.get("actor")) for r in lines if r.get("step") == "console_user"]
    assert steps == [("added", None), ("replaced", "console:root"), ("removed", "console:root")]
    assert not any("h1" in json.dumps(r) or "password_hash" in r for r in lines)


def test_route_keys_differ_by_secret_route_and_purpose() -> None:
    secret, other = b"s" * 32, b"t" * 32
    keys = {route_key(secret, "console", "session"), route_key(secret, "console", "csrf"),
            route_key(secret, "slack", "session"), route_key(other, "console", "session")}  # fmt: skip
    assert len(keys) == 4 and all(len(k) == 32 for k in keys)
    assert route_key(secret, "console", "session") == route_key(secret, "console", "session")
    assert all(secret not in k for k in keys)


async def test_the_view_answers_what_the_cli_answers(tmp_path: Path) -> None:
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    view = KernelView(kernel)
    try:
        brands = view.brands()
        assert set(brands) == {"acme", "globex", "tiny"}
        assert brands["acme"]["roles"]["manager"] == ["orders.read", "orders.write"]
        tools = {t["tool"]: t for t in view.tools("acme")}
        assert tools["echo"]["visible"] is True and tools["echo"]["description"]
        assert tools["echo"]["input_schema"]["type"] == "object"
        assert tools["disabled_tool"]["visible"] is False and tools["disabled_tool"]["why"]
        assert view.tools("nowhere") == []
        status = await view.status()
        assert status["ready"] is True and status["store"] == {"scheme": "sqlite", "answering": True}
        assert status["selected"]["limiter"] == "sqlite" and status["tools"]["registered"] == len(view.tools("acme"))
        assert any(p["name"] == "testkit" or "testkit" in p["distribution"] or p["builtin"] for p in status["plugins"])
        key, record = await kernel.keys.mint(brand="acme", role="viewer", scopes=["orders.read"], name="v",
                                             actor="console:ann")  # fmt: skip
        async with connect(kernel, key) as client:
            await client.call_tool("echo", {"message": "hi"})
        kernel.audit.settle()
        calls = view.calls(CallQuery()).calls
        assert [(c["tool"], c["outcome"], c["key_id"]) for c in calls] == [("echo", "executed", record.key_id)]
        assert view.calls(CallQuery(brands=frozenset({"globex"}))).calls == []
        chain = view.chain()
        assert chain["intact"] is True and chain["lines"] >= 2
    finally:
        await kernel.aclose()
    minted = [json.loads(line) for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines()]
    assert any(r.get("outcome") == "minted" and r.get("actor") == "console:ann" for r in minted)
