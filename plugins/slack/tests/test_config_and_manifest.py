"""`[plugins.slack]` errors are located and reported together; the manifest names the scope and the URL."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import msgspec
import pytest

from qaqnuz import ApproverContext, ConfigError, SecretResolver, UsageError, run_cli
from qaqnuz_slack import SlackSettings
from qaqnuz_slack.manifest import manifest
from qaqnuz_slack.settings import load


def ctx(tmp_path: Path, masked: list[str] | None = None) -> ApproverContext:
    resolver = SecretResolver(str(tmp_path), (masked if masked is not None else []).append)
    return ApproverContext(section="plugins.slack", logger=logging.getLogger("t"), clock=lambda: 0.0,
                           base_dir=str(tmp_path), store=None, pending_ttl=60.0, valid_for=60.0,  # type: ignore[arg-type]
                           secrets=resolver)  # fmt: skip


def settings(**raw):
    return msgspec.convert(raw, SlackSettings)


def test_every_problem_is_reported_located(tmp_path):
    bad = settings(
        base_url="ftp://x",
        timeout="soon",
        attempts=0,
        signing_secrets=[],
        brands={"acme": {"channel": "general", "approvers": [], "users": {"agent": "bob"}}},
    )
    with pytest.raises(ConfigError) as caught:
        load(bad, ctx(tmp_path))
    text = "\n".join(caught.value.problems)
    for expected in (
        "[plugins.slack] base_url", "[plugins.slack] timeout", "[plugins.slack] attempts",
        "[plugins.slack] bot_token: missing", "[plugins.slack] signing_secrets",
        "[plugins.slack.brands.acme] channel", "[plugins.slack.brands.acme] approvers",
        "'bob' is not a Slack user id",
    ):  # fmt: skip
        assert expected in text


def test_two_brands_cannot_share_a_channel(tmp_path):
    shared = settings(brands={"acme": {"channel": "C1AB", "approvers": ["U1AB"]},
                              "globex": {"channel": "C1AB", "approvers": ["U2AB"]}})  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load(shared, ctx(tmp_path))
    assert any("[plugins.slack.brands.globex] channel: C1AB is brand acme's too" in p for p in caught.value.problems)


def test_a_plain_string_token_is_refused_and_secrets_resolve_from_references(tmp_path):
    with pytest.raises(msgspec.ValidationError):
        settings(bot_token="xoxb-inline")
    (tmp_path / "token").write_text("xoxb-1\n")
    good = settings(bot_token={"file": "token"}, signing_secrets=[{"env": "QZ_SLACK_TEST_SIGNING"}],
                    brands={"acme": {"channel": "C1AB", "approvers": ["U1AB"]}})  # fmt: skip
    with pytest.raises(ConfigError, match="QZ_SLACK_TEST_SIGNING is not set"):
        load(good, ctx(tmp_path))
    os.environ["QZ_SLACK_TEST_SIGNING"] = "s3cret-value"
    masked: list[str] = []
    try:
        options = load(good, ctx(tmp_path, masked))
    finally:
        del os.environ["QZ_SLACK_TEST_SIGNING"]
    assert options.bot_token.reveal() == "xoxb-1" and "xoxb-1" not in repr(options)
    assert sorted(masked) == ["s3cret-value", "xoxb-1"]  # handed to the kernel's log masking


def test_the_manifest_has_the_scope_and_interactivity_url():
    shown = manifest("https://mcp.example.com/")
    assert shown["oauth_config"]["scopes"]["bot"] == ["chat:write"]
    assert shown["settings"]["interactivity"] == {
        "is_enabled": True,
        "request_url": "https://mcp.example.com/slack/interactions",
    }
    with pytest.raises(UsageError, match="https://"):
        manifest("http://mcp.example.com")
    assert manifest("https://mcp.example.com", user_groups=True)["oauth_config"]["scopes"]["bot"] == [
        "chat:write",
        "usergroups:read",
    ]


def test_qaqnuz_slack_manifest_prints_it(capsys):
    assert run_cli(["slack", "manifest", "--url", "https://mcp.example.com"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["interactivity"]["request_url"] == "https://mcp.example.com/slack/interactions"
    assert run_cli(["slack", "manifest", "--url", "http://plain.example.com"]) == 2
