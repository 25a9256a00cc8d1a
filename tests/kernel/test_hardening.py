"""Behaviours found by review: reloads take effect, cancelled calls are audited, bookkeeping failures
never fail a call that ran, broken plugins cannot fail open, names and files are strict."""

from __future__ import annotations

import json
import os
import stat

import anyio
import pytest

import qaqnuz
from kit import kit_config
from qaqnuz.config import parse_config
from qaqnuz.errors import ConfigError
from qaqnuz.keys import new_key, parse_key
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio


def _audit(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "qaqnuz-audit.jsonl").read_text().splitlines()]


async def test_reload_that_changes_only_pack_settings_takes_effect(tmp_path):
    path = write_config(tmp_path, kit_config())
    kernel = await start_kernel(path, plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="r")
        async with connect(kernel, key) as client:
            before = (await client.call_tool("big", {})).structured_content
            assert before["truncated"] is True
            path.write_text(path.read_text().replace('type = "testkit"\n', 'type = "testkit"\nbig_bytes = 600\n'))
            await kernel.tick()
            after = (await client.call_tool("big", {})).structured_content
        assert after["truncated"] is False and len(after["data"]) == 10  # 600 // 60 rows from the new instance
    finally:
        await kernel.aclose()


async def test_a_transient_reload_failure_is_retried(tmp_path):
    path = write_config(tmp_path, kit_config())
    kernel = await start_kernel(path, plugins=["testkit_pack.plugin"])
    try:
        (tmp_path / "echo-description.txt").mkdir()  # the testkit cannot read its description: list fails
        path.write_text(
            path.read_text().replace("tools.boom = { exposable = true }", "tools.boom = { exposable = false }")
        )
        assert await kernel.maybe_reload() is False
        (tmp_path / "echo-description.txt").rmdir()  # the pack recovers; the same edit now applies
        assert await kernel.maybe_reload() is True
        assert kernel.runtime.tool_settings("acme", "boom").exposable is False
    finally:
        await kernel.aclose()


async def test_a_cancelled_call_still_leaves_an_audit_line(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="c")
        principal = await kernel.authenticate(key)
        with anyio.move_on_after(0.2):
            await kernel.pipeline.call_tool(principal, "slow", {})
        [line] = [r for r in _audit(tmp_path) if r.get("tool") == "slow"]
        assert (line["step"], line["outcome"]) == ("execution", "cancelled")
    finally:
        await kernel.aclose()


async def test_bookkeeping_failure_after_execution_does_not_fail_the_call(tmp_path, monkeypatch):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="b")

        def broken(*args, **kwargs):
            raise qaqnuz.errors.StoreError("usage table is gone")

        monkeypatch.setattr(kernel.store, "usage", broken)
        async with connect(kernel, key) as client:
            result = await client.call_tool("echo", {"message": "ran"})
        assert result.is_error is False
        assert _audit(tmp_path)[-1]["outcome"] == "executed"
    finally:
        await kernel.aclose()


class NullPolicyPlugin:
    @qaqnuz.hookimpl
    def qaqnuz_policies(self):
        return [qaqnuz.Provider("null", lambda settings, ctx: None, "Builds nothing.")]


class TruthyPolicyPlugin:
    class Policy:
        async def decide(self, request):
            return qaqnuz.Decision(allow="no")  # truthy, but not an explicit True

    @qaqnuz.hookimpl
    def qaqnuz_policies(self):
        return [qaqnuz.Provider("truthy", lambda settings, ctx: self.Policy(), "Returns a truthy non-True.")]


async def test_a_provider_that_builds_nothing_is_an_error_not_a_skipped_policy(tmp_path):
    text = kit_config().replace("[packs.kit]", '[plugins]\npolicies = ["scope", "null"]\n\n[packs.kit]')
    with pytest.raises(ConfigError, match="provider 'null' built nothing"):
        await start_kernel(write_config(tmp_path, text), plugins=["testkit_pack.plugin", NullPolicyPlugin()])


async def test_only_an_explicit_true_allows(tmp_path):
    text = kit_config().replace("[packs.kit]", '[plugins]\npolicies = ["scope", "truthy"]\n\n[packs.kit]')
    kernel = await start_kernel(write_config(tmp_path, text), plugins=["testkit_pack.plugin", TruthyPolicyPlugin()])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
        async with connect(kernel, key) as client:
            result = await client.call_tool("echo", {"message": "x"})
        assert result.structured_content["error_class"] == "permission"
    finally:
        await kernel.aclose()


async def test_unknown_tool_names_never_reach_the_audit_line(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="u")
        async with connect(kernel, key) as client:
            await client.call_tool("x" * 5000 + "\ninjected", {})
        line = _audit(tmp_path)[-1]
        assert line["tool"] == "(unknown)" and line["step"] == "visibility"
    finally:
        await kernel.aclose()


def test_a_brand_limit_override_keeps_the_plans_other_dimension():
    config = parse_config('[brands.big]\nplan = "enterprise"\nlimits = { per_key = "10/60s" }\n', env={})
    limits = config.limits_for("big")
    assert (limits.per_key, limits.per_brand) == ("10/60s", "6000/60s")


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ('[brands.acme]\nplan = "growth"\nroles = { viewer = ["orders.read\\n"] }\n', "[brands.acme] roles.viewer"),
        ('[server]\nsync_interval = "0s"\n', "[server] sync_interval"),
        ('[approvals]\nvalid_for = "0s"\n', "[approvals] valid_for"),
        ('[server]\nmax_key_lifetime = "0d"\n', "[server] max_key_lifetime"),
    ],
)
def test_trailing_newlines_and_zero_durations_are_rejected(text, location):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    assert any(problem.startswith(location) for problem in caught.value.problems), caught.value.problems


def test_a_key_with_a_trailing_newline_does_not_parse():
    key = new_key("qx_live_")
    assert parse_key(key.raw, "qx_live_") is not None
    assert parse_key(key.raw + "\n", "qx_live_") is None


async def test_store_files_are_owner_only(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="p")
        for name in ("qaqnuz.db", "qaqnuz.db-wal", "qaqnuz.db-shm"):
            mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
    finally:
        await kernel.aclose()


async def test_a_reload_that_moves_the_store_or_the_audit_file_is_refused(tmp_path):
    path = write_config(tmp_path, kit_config())
    kernel = await start_kernel(path, plugins=["testkit_pack.plugin"])
    try:
        raw, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="stays")
        for old, new in (
            ('store = "sqlite:///qaqnuz.db"', 'store = "sqlite:///elsewhere.db"'),
            ('secret_file = "qaqnuz.secret"', 'secret_file = "qaqnuz.secret"\naudit_file = "moved.jsonl"'),
        ):
            original = path.read_text()
            path.write_text(original.replace(old, new, 1))
            assert await kernel.maybe_reload() is False
            path.write_text(original)
            await kernel.maybe_reload()
        assert await kernel.authenticate(raw) is not None
        assert not (tmp_path / "elsewhere.db").exists()
    finally:
        await kernel.aclose()
