"""Anonymous mode (issue 4): every request is one configured brand and role, loopback only.

Real kernels with the testkit pack; calls go through `qaqnuz.testing.connect` (the governed path over the
SDK's in-memory transport) with no key at all.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.builtin.anonymous import AnonymousAuth
from qaqnuz.errors import ConfigError
from qaqnuz.records import Principal
from qaqnuz.testing import connect, start_kernel, write_config
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")
READ_TOOLS = ["beta_echo", "big", "boom", "echo", "flaky_upstream", "slow"]


def anonymous(brand: str = "acme", role: str = "viewer", *, extra: str = "") -> str:
    return (
        kit_config()
        + f'\n[plugins]\nauth = "anonymous"\n\n[plugins.anonymous]\nbrand = "{brand}"\nrole = "{role}"\n{extra}'
    )


def audit(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "qaqnuz-audit.jsonl").read_text().splitlines()]


async def test_calls_without_a_key_act_as_the_configured_brand_and_role(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, anonymous()), plugins=["testkit_pack.plugin"])
    try:
        async with connect(kernel, None) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            echoed = await client.call_tool("echo", {"message": "hi"})
            write = await client.call_tool("write_tool", {})
        async with connect(kernel, "qx_live_not-a-key", mode="legacy") as client:  # a credential changes nothing
            again = await client.call_tool("echo", {"message": "again"})
        principal = await kernel.authenticate(None)
    finally:
        await kernel.aclose()
    assert names == READ_TOOLS  # the viewer's ceiling: orders.read, so no write_tool or create_order
    assert echoed.is_error is False and again.is_error is False
    assert echoed.structured_content["ok"] is True
    assert write.is_error is True and write.structured_content["error_class"] == "permission"
    assert principal == Principal(
        key_id="anonymous", brand="acme", role="viewer", scopes=frozenset({"orders.read"}), name="anonymous"
    )
    executed = [r for r in audit(tmp_path) if r.get("tool") == "echo" and r.get("outcome") == "executed"]
    assert len(executed) == 2
    assert all((r["brand"], r["key_id"], r["role"]) == ("acme", "anonymous", "viewer") for r in executed), executed


async def test_the_principal_holds_the_roles_whole_ceiling(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, anonymous("globex", "manager")), plugins=["testkit_pack.plugin"])
    try:
        principal = await kernel.authenticate(None)
        async with connect(kernel, None) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            created = await client.call_tool("create_order", {"sku": "beans", "qty": 1})
    finally:
        await kernel.aclose()
    assert (principal.brand, principal.role) == ("globex", "manager")
    assert principal.scopes == frozenset({"orders.read", "orders.write"})
    assert names == ["create_order", "echo"]  # globex exposes only these two
    assert created.structured_content["error_class"] == "permission"  # approvals still apply
    assert created.structured_content["approval_id"].startswith("apr_")


@pytest.mark.parametrize(
    ("brand", "role", "expected"),
    [
        ("nope", "viewer", "[plugins.anonymous] brand: unknown brand 'nope'; configured brands: acme, globex, tiny"),
        ("acme", "admin", "[plugins.anonymous] role: brand 'acme' has no role 'admin'; its roles: manager, viewer"),
    ],
)
async def test_an_unknown_brand_or_role_is_a_located_config_error(tmp_path, brand, role, expected):
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, anonymous(brand, role)), plugins=["testkit_pack.plugin"])
    assert caught.value.problems == [expected]


async def test_missing_settings_are_a_located_config_error(tmp_path):
    text = kit_config() + '\n[plugins]\nauth = "anonymous"\n'
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, text), plugins=["testkit_pack.plugin"])
    assert caught.value.problems == [
        "[plugins.anonymous] brand: missing required key",
        "[plugins.anonymous] role: missing required key",
    ]


def test_config_check_reports_the_location_and_exits_2(tmp_path):
    cfg = write_config(tmp_path, anonymous(role="admin"))
    proc = subprocess.run(
        [QAQNUZ, "config", "check", "--config", str(cfg)],
        env=server_env(cfg, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "config error: [plugins.anonymous] role: brand 'acme' has no role 'admin'" in proc.stderr
    assert proc.stdout == ""


async def test_the_loopback_marker_is_set_and_a_loud_warning_is_logged(tmp_path):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("qaqnuz.provider.anonymous")
    logger.addHandler(handler)
    try:
        kernel = await start_kernel(write_config(tmp_path, anonymous()), plugins=["testkit_pack.plugin"])
    finally:
        logger.removeHandler(handler)
    try:
        assert isinstance(kernel.runtime.auth, AnonymousAuth)
        assert kernel.runtime.auth.loopback_only is True
        assert kernel.loopback_only is True
    finally:
        await kernel.aclose()
    [warning] = [r for r in records if r.levelno == logging.WARNING]
    assert "ANONYMOUS AUTH IS ON" in warning.getMessage() and "acme" in warning.getMessage()


async def test_api_key_auth_is_not_loopback_only(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        assert kernel.loopback_only is False
        assert await kernel.authenticate(None) is None
    finally:
        await kernel.aclose()


async def test_a_reload_cannot_switch_a_running_server_to_anonymous(tmp_path):
    path = write_config(tmp_path, kit_config())
    kernel = await start_kernel(path, plugins=["testkit_pack.plugin"])
    try:
        path.write_text(anonymous())
        assert await kernel.maybe_reload() is False
        assert kernel.loopback_only is False
        assert await kernel.authenticate(None) is None  # still API keys
    finally:
        await kernel.aclose()


async def test_stdio_serves_without_a_key(tmp_path):
    cfg = write_config(tmp_path, anonymous())
    async with stdio_session(server_env(cfg, None), mode="legacy") as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        echoed = await client.call_tool("echo", {"message": "over stdio"})
    assert names == READ_TOOLS
    assert echoed.is_error is False
