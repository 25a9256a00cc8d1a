"""Operators can debug a failing tool: its log line has the traceback (secrets masked) and an incident id; the
caller's envelope carries the same id in `incident_id`, never in `sanitized_error`, and never the exception."""

from __future__ import annotations

import json
import logging
import re

import msgspec
import pytest

from kit import kit_config
from qaqnuz import DependencyError, Provider, SecretRef, SideEffect, Tool, ToolPackContext, hookimpl
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
INCIDENT = re.compile(r"inc_[0-9A-Za-z]{16}")


def audit(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "qaqnuz-audit.jsonl").read_text().splitlines()]


async def test_a_raising_tool_logs_its_traceback_under_the_id_the_caller_gets(tmp_path, caplog):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        raw, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="i")
        principal = await kernel.authenticate(raw)
        with caplog.at_level(logging.INFO, logger="qaqnuz"):
            boom = await kernel.host.call_tool(principal, "boom", {}, transport="t")
            flaky = await kernel.host.call_tool(principal, "flaky_upstream", {}, transport="t")
            fine = await kernel.host.call_tool(principal, "echo", {"message": "ok"}, transport="t")
    finally:
        await kernel.aclose()
    for outcome, error_class in ((boom, "terminal"), (flaky, "dependency")):
        envelope = msgspec.to_builtins(outcome.result)
        incident = envelope["incident_id"]
        assert INCIDENT.fullmatch(incident) and envelope["error_class"] == error_class
        assert incident not in envelope["sanitized_error"]
        assert "hunter2" not in json.dumps(envelope) and "internal.example" not in json.dumps(envelope)
        [record] = [r for r in caplog.records if incident in r.getMessage()]
        text = logging.Formatter().format(record)
        assert "Traceback (most recent call last)" in text
        [line] = [r for r in audit(tmp_path) if r.get("incident_id") == incident]
        assert line["error_class"] == error_class
    assert "secret detail: /etc/passwd password=hunter2" in caplog.text  # the operator sees what happened
    assert "incident_id" not in msgspec.to_builtins(fine.result)


class LeakySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: SecretRef


class Leaky:
    def __init__(self, token: str) -> None:
        self.token = token

    async def list_tools(self) -> list[Tool]:
        return [
            Tool("leak", "Fails quoting its credential.", {"type": "object"}, "orders.read", SideEffect.READ, self.run)
        ]

    async def run(self, args: object) -> None:
        raise DependencyError(f"upstream refused Authorization: Bearer {self.token}")


class Plugin:
    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        def build(settings: LeakySettings, ctx: ToolPackContext) -> Leaky:
            token = ctx.secret(settings.token, f"{ctx.where} token").reveal()
            ctx.logger.warning("connecting with token %s", token)  # a careless pack: the redactor must mask it
            return Leaky(token)

        return [Provider("leaky", build, "Leaks its token into an exception.", LeakySettings)]


async def test_the_traceback_is_logged_through_the_secret_redactor(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("LEAKY_TOKEN", "leaky-token-5566778899")
    text = kit_config().replace(
        "[packs.kit]", '[packs.leaky]\ntype = "leaky"\ntoken = { env = "LEAKY_TOKEN" }\n\n[packs.kit]'
    )
    text = text.replace(
        "tools.echo = { exposable = true }", "tools.echo = { exposable = true }\ntools.leak = { exposable = true }", 1
    )
    kernel = await start_kernel(write_config(tmp_path, text), plugins=["testkit_pack.plugin", Plugin()])
    try:
        raw, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="l")
        principal = await kernel.authenticate(raw)
        with caplog.at_level(logging.INFO, logger="qaqnuz"):
            outcome = await kernel.host.call_tool(principal, "leak", {}, transport="t")
    finally:
        await kernel.aclose()
    incident = outcome.result.incident_id
    [record] = [r for r in caplog.records if incident in r.getMessage()]
    text = logging.Formatter().format(record)
    assert "DependencyError: upstream refused Authorization: Bearer [redacted]" in text
    assert "leaky-token-5566778899" not in caplog.text


async def test_config_check_masks_what_packs_resolve_too(tmp_path, caplog, monkeypatch):
    from qaqnuz.checking import check
    from qaqnuz.config import load_config
    from qaqnuz.plugins import Plugins

    monkeypatch.setenv("LEAKY_TOKEN", "leaky-token-5566778899")
    text = kit_config().replace(
        "[packs.kit]", '[packs.leaky]\ntype = "leaky"\ntoken = { env = "LEAKY_TOKEN" }\n\n[packs.kit]'
    )
    config = load_config(write_config(tmp_path, text))
    with caplog.at_level(logging.INFO):
        report = await check(config, Plugins(autoload=False, explicit=["testkit_pack.plugin", Plugin()]), [])
    assert report.problems == ()
    assert "connecting with token [redacted]" in caplog.text
    assert "leaky-token-5566778899" not in caplog.text
