"""`keys revoke` takes a key id or a whole key, `keys rotate` and `keys update` (all audited), and no command
ever prints a minted key except the one print when it is minted or rotated: checked over every command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.cli import build_parser
from qaqnuz.testing import write_config
from stdio_harness import stdio_session

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")


def run(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QAQNUZ, *args], env=env or server_env(cfg, None), capture_output=True, text=True, timeout=60, cwd=cfg.parent
    )


def create(cfg: Path, *extra: str, role: str = "manager", scopes: tuple[str, ...] = ("orders.read",)) -> str:
    scope_args = [a for s in scopes for a in ("--scope", s)]
    result = run(cfg, "keys", "create", "--brand", "acme", "--role", role, *scope_args, "--name", "ci", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def keys(cfg: Path) -> dict[str, dict]:
    return {row["key_id"]: row for row in json.loads(run(cfg, "keys", "list", "--json").stdout)}


def audit(cfg: Path) -> list[dict]:
    return [json.loads(line) for line in (cfg.parent / "qaqnuz-audit.jsonl").read_text().splitlines()]


def key_id(raw: str) -> str:
    return raw.split("_")[2]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path, kit_config())


def test_revoke_takes_a_whole_key_and_never_repeats_it(cfg: Path) -> None:
    raw = create(cfg)
    typo = raw[:-3] + ("aaa" if not raw.endswith("aaa") else "bbb")
    bad = run(cfg, "keys", "revoke", typo, "--config", str(cfg))
    assert bad.returncode == 2 and typo not in bad.stderr + bad.stdout and raw not in bad.stderr
    assert "neither a key id" in bad.stderr
    done = run(cfg, "keys", "revoke", raw, "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert raw not in done.stderr + done.stdout and key_id(raw) in done.stderr
    assert keys(cfg)[key_id(raw)]["state"] == "revoked"
    again = run(cfg, "keys", "revoke", key_id(raw), "--config", str(cfg))
    assert again.returncode == 0 and "already revoked" in again.stderr
    assert [r["outcome"] for r in audit(cfg) if r["step"] == "key"] == ["minted", "revoked"]


@pytest.mark.anyio
async def test_rotate_mints_a_new_secret_with_the_same_settings_and_revokes_the_old_one(cfg: Path) -> None:
    old = create(cfg, "--expires-in", "10d", scopes=("orders.read", "orders.write"))
    rotated = run(cfg, "keys", "rotate", key_id(old), "--config", str(cfg))
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new != old and key_id(new) != key_id(old) and old not in rotated.stdout + rotated.stderr
    listed = keys(cfg)
    before, after = listed[key_id(old)], listed[key_id(new)]
    assert before["state"] == "revoked" and after["state"] == "active"
    for field in ("brand", "role", "scopes", "name", "expires_at"):
        assert before[field] == after[field], field
    async with stdio_session(server_env(cfg, new)) as client:
        assert (await client.call_tool("echo", {"message": "new key"})).is_error is False
    refused = run(cfg, "keys", "list", env=server_env(cfg, old))  # the old key no longer serves
    assert refused.returncode == 0
    with pytest.raises(Exception):
        async with stdio_session(server_env(cfg, old)) as client:
            await client.list_tools()
    [line] = [r for r in audit(cfg) if r["outcome"] == "rotated"]
    assert line["key_id"] == key_id(new) and line["replaces"] == key_id(old)
    twice = run(cfg, "keys", "rotate", key_id(old), "--config", str(cfg))
    assert twice.returncode == 2 and "is revoked; only an active key can be rotated" in twice.stderr


def test_rotation_at_the_key_cap_still_works(cfg: Path) -> None:
    made = [create(cfg) for _ in range(5)]  # growth: 5 active keys
    assert run(cfg, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "x").returncode == 2
    rotated = run(cfg, "keys", "rotate", made[0], "--config", str(cfg))  # a whole key works as the reference
    assert rotated.returncode == 0, rotated.stderr


def test_update_changes_scopes_within_the_roles_ceiling(cfg: Path) -> None:
    raw = create(cfg, role="viewer")
    widened = run(cfg, "keys", "update", key_id(raw), "--scope", "orders.write", "--config", str(cfg))
    assert widened.returncode == 2
    assert "scope 'orders.write' is outside role 'viewer''s ceiling for brand 'acme' (orders.read)" in widened.stderr
    manager = create(cfg, role="manager")
    done = run(cfg, "keys", "update", key_id(manager), "--scope", "orders.write", "--scope", "orders.read")
    assert done.returncode == 0, done.stderr
    assert keys(cfg)[key_id(manager)]["scopes"] == ["orders.read", "orders.write"]
    [line] = [r for r in audit(cfg) if r["outcome"] == "scopes_updated"]
    assert line["scopes"] == ["orders.read", "orders.write"] and line["key_id"] == key_id(manager)
    run(cfg, "keys", "revoke", key_id(manager))
    gone = run(cfg, "keys", "update", key_id(manager), "--scope", "orders.read")
    assert gone.returncode == 2 and "is revoked; only an active key can be updated" in gone.stderr


def _commands() -> list[list[str]]:
    paths = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            paths.append(path)
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, [*path, name])

    walk(build_parser(), [])
    return paths


def test_no_command_ever_prints_a_key_except_where_it_is_minted_or_rotated(cfg: Path) -> None:
    """Every command of the command line, with the keys given wherever a command takes an argument."""
    minted = run(cfg, "keys", "create", "--brand", "acme", "--role", "manager", "--scope", "orders.write",
                 "--name", "k", "--json")  # fmt: skip
    first = json.loads(minted.stdout)["key"]
    rotated = run(cfg, "keys", "rotate", first, "--json")
    second = json.loads(rotated.stdout)["key"]
    assert minted.stderr.count(first) == 0 and rotated.stderr.count(second) == 0
    secrets = (first, second, first[-20:], second[-20:])
    key_file = cfg.parent / "a-key-as-a-password"
    key_file.write_text(second + "\n")
    commands = _commands()
    by_name = {" ".join(c): c for c in commands}
    plans = {
        "init": [["init", "--dir", str(cfg.parent / "init")]],
        "demo": [["demo", "--help"]],  # the demo prints its own demo key; it never sees these
        "serve": [["serve", "--transport", "nope"]],
        "keys create": [["keys", "create", "--brand", "acme", "--scope", first, "--name", second]],
        "keys list": [["keys", "list"], ["keys", "list", "--json"]],
        "keys revoke": [["keys", "revoke", second[:-1] + "x"], ["keys", "revoke", first]],
        "keys rotate": [["keys", "rotate", first]],
        "keys update": [["keys", "update", second, "--scope", second], ["keys", "update", second, "--scope", "x.y"]],
        "approvals list": [["approvals", "list"], ["approvals", "list", "--json"]],
        "approvals show": [["approvals", "show", second], ["approvals", "show", "apr_unknown"]],
        "approvals approve": [["approvals", "approve", first, "--reason", second]],
        "approvals deny": [["approvals", "deny", second, "--by", first]],
        "tools list": [["tools", "list"], ["tools", "list", "--json", "--brand", first]],
        "plugins list": [["plugins", "list"], ["plugins", "list", "--json"]],
        "config check": [["config", "check"], ["config", "check", "--config", second]],
        "audit verify": [["audit", "verify"], ["audit", "verify", "--file", first]],
        "audit search": [
            ["audit", "search"],
            ["audit", "search", "--json"],
            ["audit", "search", "--key", first],
            ["audit", "search", "--brand", second, "--tool", first],
        ],
        "audit tail": [["audit", "tail", "-n", "50"], ["audit", "tail", "--json", "--file", first]],
        "store migrate": [["store", "migrate"], ["store", "migrate", "--config", first]],
        "slack manifest": [
            ["slack", "manifest", "--url", "https://mcp.example.com"],
            ["slack", "manifest", "--url", first],
        ],
        "console users add": [
            ["console", "users", "add", first, "--role", "admin", "--password-file", str(key_file)],
            ["console", "users", "add", "ann", "--role", "admin", "--password-file", str(key_file)],
            ["console", "users", "add", "ann", "--role", "brand-admin", "--brand", second, "--oidc-only"],
        ],
        "console users list": [["console", "users", "list"], ["console", "users", "list", "--json"]],
        "console users remove": [["console", "users", "remove", first]],
        "console users passwd": [["console", "users", "passwd", second, "--password-file", str(key_file)]],
    }
    assert set(by_name) <= set(plans), f"a command is not covered here: {set(by_name) - set(plans)}"
    seen = []
    for name in by_name:
        for args in plans[name]:
            env = {**server_env(cfg, None), "QAQNUZ_CONFIG": str(cfg)}
            env["QAQNUZ_PLUGINS"] += ",slack,console"  # plugins' commands run as installed plugins' would
            result = run(cfg, *args, env=env)
            seen.append(name)
            for secret in secrets:
                assert secret not in result.stdout and secret not in result.stderr, (args, result.stderr)
        stray = run(cfg, *plans[name][0], second)  # a key as a stray argument: argparse's error repeats it, masked
        assert second not in stray.stderr + stray.stdout, name
    assert len(seen) >= len(by_name)
    text = (cfg.parent / "qaqnuz-audit.jsonl").read_text()
    assert not any(secret in text for secret in secrets)
