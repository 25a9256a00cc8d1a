"""Fail closed (DESIGN §4): an exception in the limiter, a policy, the approver or auth is a denial with a
sanitised message, counted and audited, and the tool never runs. The failing providers are real plugins,
registered through the plugin manager and selected by `[plugins]` in config."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from qaqnuz import Provider, SideEffect, Tool, hookimpl
from qaqnuz import envelope as env
from qaqnuz.server import UNAVAILABLE, UNAVAILABLE_MESSAGE
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio

SECRET_TEXT = "secret-internal-detail /var/lib/x password=hunter2"


class Boom(RuntimeError):
    pass


class ProbePack:
    """A tool pack whose tools count their executions, so a test can prove a tool never ran."""

    def __init__(self) -> None:
        self.executions: list[str] = []

    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        return [Provider("probe", lambda settings, ctx: ProbeTools(self.executions), "Counting tools.")]


class ProbeTools:
    def __init__(self, executions: list[str]) -> None:
        self.executions = executions

    async def list_tools(self) -> list[Tool]:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
        return [
            Tool("touch", "Records that it ran.", schema, "orders.read", SideEffect.READ, self.touch),
            Tool("guarded", "Needs approval.", schema, "orders.read", SideEffect.WRITE, self.guarded),
        ]

    async def touch(self, args: Mapping[str, Any]) -> Any:
        self.executions.append("touch")
        return {"ran": True}

    async def guarded(self, args: Mapping[str, Any]) -> Any:
        self.executions.append("guarded")
        return {"ran": True}


class BrokenLimiter:
    async def admit(self, *args: Any) -> Any:
        raise Boom(SECRET_TEXT)


class BrokenPolicy:
    async def decide(self, request: Any) -> Any:
        raise Boom(SECRET_TEXT)


class BrokenApprover:
    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise Boom(SECRET_TEXT)

    async def consume(self, approval_id: str) -> bool:
        raise Boom(SECRET_TEXT)

    async def close(self, approval_id: str) -> None:
        raise Boom(SECRET_TEXT)

    async def wait(self, approval_id: str, seconds: float) -> Any:
        raise Boom(SECRET_TEXT)


class BrokenAuth:
    async def authenticate(self, credential: str | None) -> Any:
        raise Boom(SECRET_TEXT)


class BrokenProviders:
    """One plugin registering a failing provider of each kind, all named "broken"."""

    @hookimpl
    def qaqnuz_rate_limiters(self) -> list[Provider]:
        return [Provider("broken", lambda settings, ctx: BrokenLimiter(), "Always raises.")]

    @hookimpl
    def qaqnuz_policies(self) -> list[Provider]:
        return [Provider("broken", lambda settings, ctx: BrokenPolicy(), "Always raises.")]

    @hookimpl
    def qaqnuz_approvers(self) -> list[Provider]:
        return [Provider("broken", lambda settings, ctx: BrokenApprover(), "Always raises.")]

    @hookimpl
    def qaqnuz_auth_providers(self) -> list[Provider]:
        return [Provider("broken", lambda settings, ctx: BrokenAuth(), "Always raises.")]


def config(plugins_table: str) -> str:
    return f"""
    [server]
    store = "sqlite:///qaqnuz.db"
    secret_file = "qaqnuz.secret"

    [brands.acme]
    plan = "growth"
    roles = {{ viewer = ["orders.read"] }}
    tools.touch = {{ exposable = true }}
    tools.guarded = {{ exposable = true, approval = true }}

    [plugins]
    {plugins_table}

    [packs.probe]
    type = "probe"
    """


@pytest.fixture
async def governed(tmp_path):
    """Factory: a started kernel with the probe pack and the broken providers, plus a minted key."""
    made = []

    async def make(plugins_table: str):
        pack = ProbePack()
        cfg = write_config(tmp_path, config(plugins_table))
        kernel = await start_kernel(cfg, plugins=[pack, BrokenProviders()])
        made.append(kernel)
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
        return kernel, key, pack

    yield make
    for kernel in made:
        await kernel.aclose()


def assert_failure(result: Any, error_class: str, text: str) -> None:
    assert result.is_error is True
    assert result.content[0].text == text
    assert result.structured_content["ok"] is False
    assert result.structured_content["error_class"] == error_class
    assert result.structured_content["sanitized_error"] == text
    assert "hunter2" not in json.dumps(result.structured_content)


def audit_lines(tmp_path) -> list[dict[str, Any]]:
    path = tmp_path / "qaqnuz-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample(kernel: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return kernel.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_limiter_exception_denies_as_retryable(governed, tmp_path, mode) -> None:
    kernel, key, pack = await governed('limiter = "broken"')
    async with connect(kernel, key, mode=mode) as client:
        listed = [t.name for t in (await client.list_tools()).tools]  # listing is never rate limited
        result = await client.call_tool("touch", {})
    assert listed == ["guarded", "touch"]
    assert_failure(result, "retryable", env.LIMITER_UNAVAILABLE)
    assert result.structured_content["retry_hint"]["retry_after_ms"] > 0
    assert pack.executions == []
    assert sample(kernel, "qaqnuz_limiter_errors_total") == 1
    [line] = [r for r in audit_lines(tmp_path) if r.get("tool") == "touch"]
    assert (line["step"], line["outcome"], line["error_class"]) == ("rate_limit", "denied", "retryable")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_policy_exception_denies_as_permission(governed, tmp_path, mode) -> None:
    kernel, key, pack = await governed('policies = ["scope", "broken"]')
    async with connect(kernel, key, mode=mode) as client:
        result = await client.call_tool("touch", {})
    assert_failure(result, "permission", env.POLICY_DENIED)
    assert pack.executions == []
    assert sample(kernel, "qaqnuz_policy_errors_total") == 1
    [line] = [r for r in audit_lines(tmp_path) if r.get("tool") == "touch"]
    assert (line["step"], line["outcome"], line["error_class"]) == ("policy", "denied", "permission")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_approver_exception_denies_and_never_executes(governed, tmp_path, mode) -> None:
    kernel, key, pack = await governed('approver = "broken"')
    async with connect(kernel, key, mode=mode) as client:
        first = await client.call_tool("guarded", {"n": 1})
        again = await client.call_tool("guarded", {"n": 1})
        unguarded = await client.call_tool("touch", {})  # a tool without approval is unaffected
    assert_failure(first, "permission", env.APPROVAL_UNAVAILABLE)
    assert_failure(again, "permission", env.APPROVAL_UNAVAILABLE)
    assert "approval_id" not in first.structured_content
    assert sample(kernel, "qaqnuz_approver_errors_total") == 2.0
    assert not unguarded.is_error
    assert pack.executions == ["touch"]
    lines = [r for r in audit_lines(tmp_path) if r.get("tool") == "guarded"]
    assert [(r["step"], r["outcome"]) for r in lines] == [("approval", "approval_unavailable")] * 2


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_auth_exception_is_a_retryable_refusal(governed, tmp_path, mode, caplog) -> None:
    """A credential that cannot be checked is refused, but not as a bad key: a client keeps it and retries.
    The outage is logged once, not per request."""
    caplog.set_level(logging.DEBUG, logger="qaqnuz")
    kernel, key, pack = await governed('auth = "broken"')
    async with connect(kernel, key, mode=mode) as client:
        with pytest.raises(MCPError) as listing:
            await client.list_tools()
        with pytest.raises(MCPError) as calling:
            await client.call_tool("touch", {})
    for caught in (listing, calling):
        assert caught.value.error.code == UNAVAILABLE
        assert caught.value.error.message == UNAVAILABLE_MESSAGE
        assert "hunter2" not in str(caught.value)
    assert pack.executions == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "auth provider failed" in r.getMessage()]
    assert len(errors) == 1
    assert sample(kernel, "qaqnuz_auth_failures_total", {"transport": "memory"}) >= 2
    assert sample(kernel, "qaqnuz_store_errors_total", {"operation": "auth"}) >= 2  # counted every time
    assert any(r.get("step") == "auth" and r.get("outcome") == "denied" for r in audit_lines(tmp_path))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_no_policies_denies_every_call(governed, tmp_path, mode) -> None:
    kernel, key, pack = await governed("policies = []")
    async with connect(kernel, key, mode=mode) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
        touch = await client.call_tool("touch", {})
        guarded = await client.call_tool("guarded", {"n": 2})
    # With no policy every call is denied, so (SPEC §2) nothing may be shown either.
    assert listed == []
    assert_failure(touch, "permission", env.NOT_PERMITTED)
    assert_failure(guarded, "permission", env.NOT_PERMITTED)
    assert pack.executions == []


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_control_the_same_setup_with_working_providers_executes(governed, mode) -> None:
    # Guards the tests above: with the built-in providers the very same call does run.
    kernel, key, pack = await governed('limiter = "memory"')
    async with connect(kernel, key, mode=mode) as client:
        result = await client.call_tool("touch", {})
    assert not result.is_error
    assert result.structured_content == {"ok": True, "data": {"ran": True}, "truncated": False}
    assert pack.executions == ["touch"]
