"""The real `qaqnuz` command in a subprocess: keys, init, tools list and help (SPEC §5, §10).

Every command runs the installed console script against a real config and SQLite store in tmp_path.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz import keys
from qaqnuz.cli import build_parser
from qaqnuz.testing import start_kernel, write_config

BIN = Path(sys.executable).parent
QAQNUZ = str(BIN / "qaqnuz")
PREFIX = "qx_live_"
KEY_RE = re.compile(r"^qx_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}$")


def qaqnuz(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QAQNUZ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def secret_part(raw: str) -> str:
    """The secret and checksum: everything after `<prefix><key_id>_`."""
    return raw[len(PREFIX) + keys.KEY_ID_LEN + 1 :]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    cfg = write_config(tmp_path, kit_config())
    return cfg, server_env(cfg, None)


async def mint(cfg: Path, count: int, brand: str = "acme", **kw) -> list[tuple[str, object]]:
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        return [await kernel.keys.mint(brand=brand, scopes=["orders.read"], name=f"k{i}", **kw) for i in range(count)]
    finally:
        await kernel.aclose()


def create(env: dict[str, str], *extra: str, name: str = "ci") -> subprocess.CompletedProcess[str]:
    return qaqnuz("keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", name, *extra, env=env)


# -- keys create -------------------------------------------------------------------------------------
def test_keys_create_prints_the_key_alone_on_stdout(setup):
    cfg, env = setup
    result = create(env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and result.stdout == lines[0] + "\n"
    raw = lines[0]
    assert KEY_RE.match(raw), raw
    parsed = keys.parse_key(raw, PREFIX)
    assert parsed is not None
    # Everything else (the key id, the shown-once warning) is on stderr, without the key.
    assert parsed.key_id in result.stderr
    assert "shown once" in result.stderr
    assert raw not in result.stderr and secret_part(raw) not in result.stderr
    # The printed key is the one stored: its HMAC matches the stored hash.
    db = sqlite3.connect(cfg.parent / "qaqnuz.db")
    try:
        (stored,) = db.execute("SELECT hash FROM keys WHERE key_id = ?", (parsed.key_id,)).fetchone()
    finally:
        db.close()
    assert keys.hash_matches((cfg.parent / "qaqnuz.secret").read_bytes().strip(), raw, stored)


def test_keys_create_json(setup):
    _, env = setup
    result = create(env, "--json", "--role", "manager", name="json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    data = json.loads(result.stdout)
    assert KEY_RE.match(data["key"])
    assert keys.parse_key(data["key"], PREFIX).key_id == data["key_id"]
    assert data["brand"] == "acme" and data["role"] == "manager" and data["name"] == "json"
    assert data["scopes"] == ["orders.read"]
    assert data["revoked_at"] is None and data["last_used_at"] is None
    assert "hash" not in data
    assert data["key"] not in result.stderr


# -- the store never holds a raw key -----------------------------------------------------------------
def test_store_file_and_wal_never_contain_a_raw_key(setup):
    cfg, env = setup
    folder = cfg.parent
    db_path, wal_path = folder / "qaqnuz.db", folder / "qaqnuz.db-wal"
    minted: list[tuple[str, str]] = []

    def mint_one(role: str, name: str) -> None:
        result = qaqnuz(
            "keys", "create", "--brand", "acme", "--role", role, "--scope", "orders.read", "--name", name, env=env
        )
        assert result.returncode == 0, result.stderr
        raw = result.stdout.strip()
        minted.append((raw, keys.parse_key(raw, PREFIX).key_id))

    mint_one("viewer", "first")
    # Hold a connection open so the later inserts stay in the -wal file (SQLite deletes it on last close).
    holder = sqlite3.connect(db_path)
    try:
        holder.execute("SELECT COUNT(*) FROM keys").fetchone()
        mint_one("manager", "second")
        mint_one("viewer", "third")
        assert wal_path.exists() and wal_path.stat().st_size > 0
        wal_bytes = wal_path.read_bytes()
        # The later keys' rows really are in the WAL (so grepping it means something) ...
        assert minted[1][1].encode() in wal_bytes and minted[2][1].encode() in wal_bytes
        live = db_path.read_bytes() + wal_bytes
        for raw, _ in minted:
            # ... and neither the key nor its secret is.
            assert raw.encode() not in live
            assert secret_part(raw).encode() not in live
    finally:
        holder.close()

    files = [p for p in folder.iterdir() if p.name.startswith("qaqnuz.db") or p.suffix == ".jsonl"]
    assert db_path in files and (folder / "qaqnuz-audit.jsonl") in files
    everything = b"".join(p.read_bytes() for p in files)
    for raw, key_id in minted:
        assert key_id.encode() in everything  # the search reads the right files
        assert raw.encode() not in everything
        assert secret_part(raw).encode() not in everything


# -- plan cap ----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_plan_cap_refuses_the_sixth_growth_key_until_one_is_revoked(setup):
    cfg, env = setup
    await mint(cfg, 4)
    fifth = create(env, name="fifth")
    assert fifth.returncode == 0, fifth.stderr

    sixth = create(env, name="sixth")
    assert sixth.returncode == 2
    assert sixth.stdout == ""
    message = sixth.stderr
    assert "5 active keys" in message
    assert "cap of plan 'growth' (5)" in message
    assert "qaqnuz keys revoke KEY_ID" in message and "larger plan" in message
    listed = json.loads(qaqnuz("keys", "list", "--brand", "acme", "--json", env=env).stdout)
    assert len(listed) == 5  # the refused key was not stored

    # The cap is per brand: globex is unaffected.
    other = qaqnuz("keys", "create", "--brand", "globex", "--scope", "orders.read", "--name", "g", env=env)
    assert other.returncode == 0, other.stderr

    revoked = qaqnuz("keys", "revoke", listed[0]["key_id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    again = create(env, name="after-revoke")
    assert again.returncode == 0, again.stderr
    assert KEY_RE.match(again.stdout.strip())


# -- keys list ---------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_keys_list_never_prints_a_secret(setup):
    cfg, env = setup
    minted = await mint(cfg, 3)
    revoked = qaqnuz("keys", "revoke", minted[0][1].key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr

    table = qaqnuz("keys", "list", env=env)
    as_json = qaqnuz("keys", "list", "--json", env=env)
    one_brand = qaqnuz("keys", "list", "--brand", "acme", env=env)
    for result in (table, as_json, one_brand):
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        for raw, record in minted:
            assert record.key_id in result.stdout  # the key is listed ...
            assert raw not in output and secret_part(raw) not in output  # ... its secret is not
            assert record.hash not in output  # nor its hash

    rows = json.loads(as_json.stdout)
    assert {r["key_id"] for r in rows} == {rec.key_id for _, rec in minted}
    assert all(set(r) >= {"last_used_at", "revoked_at", "active"} and "hash" not in r and "key" not in r for r in rows)
    states = {r["key_id"]: r["active"] for r in rows}
    assert states[minted[0][1].key_id] is False and states[minted[1][1].key_id] is True
    assert "revoked" in table.stdout and "LAST_USED" in table.stdout


def test_keys_revoke_unknown_id_is_a_usage_error(setup):
    _, env = setup
    result = qaqnuz("keys", "revoke", "AAAAAAAAAAAA", env=env)
    assert result.returncode == 2
    assert "no key with id 'AAAAAAAAAAAA'" in result.stderr


# -- scope, brand and role validation at mint --------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scope", "*"], "invalid scope '*'"),
        (["--scope", "orders.*"], "invalid scope 'orders.*'"),
        (["--scope", "Orders.read"], "invalid scope 'Orders.read'"),
        (["--scope", "orders"], "invalid scope 'orders'"),
        (["--scope", "orders.read.x"], "invalid scope 'orders.read.x'"),
        (["--scope", "orders.write"], "scope 'orders.write' is outside role 'viewer'"),
        (["--scope", "orders.read", "--scope", "customers.read"], "scope 'customers.read' is outside role 'viewer'"),
        (["--role", "admin", "--scope", "orders.read"], "brand 'acme' has no role 'admin'"),
        (["--brand", "nosuch", "--scope", "orders.read"], "unknown brand 'nosuch'"),
        (["--brand", "tiny", "--scope", "orders.read"], "not entitled"),
        (["--scope", "orders.read", "--expires-in", "400d"], "--expires-in must be more than 0 and at most 366d"),
        (["--scope", "orders.read", "--expires-in", "soon"], "is not a duration"),
    ],
    ids=[
        "star",
        "wildcard",
        "upper",
        "no-action",
        "extra-dot",
        "outside-ceiling",
        "one-of-two",
        "role",
        "brand",
        "plan",
        "lifetime-over-max",
        "lifetime-unparsable",
    ],
)
def test_keys_create_refuses_bad_scopes_roles_and_brands(setup, args, expected):
    cfg, env = setup
    brand = [] if "--brand" in args else ["--brand", "acme"]
    result = qaqnuz("keys", "create", *brand, "--name", "bad", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert expected in result.stderr
    if not (cfg.parent / "qaqnuz.db").exists():
        return  # refused before the store was even opened
    db = sqlite3.connect(cfg.parent / "qaqnuz.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM keys").fetchone() == (0,)
    finally:
        db.close()


# -- init --------------------------------------------------------------------------------------------
def test_init_writes_config_and_0600_secret_and_refuses_to_overwrite(tmp_path):
    folder = tmp_path / "fresh"
    env = server_env(folder / "qaqnuz.toml", None)
    first = qaqnuz("init", "--dir", str(folder), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    config, secret = folder / "qaqnuz.toml", folder / "qaqnuz.secret"
    assert config.is_file() and secret.is_file()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    original = secret.read_bytes()
    assert len(original.strip()) >= 32
    # The written config is valid as it stands.
    check = qaqnuz("config", "check", "--config", str(config), env=env)
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stderr

    config.write_text(config.read_text() + "# operator edit\n")
    edited = config.read_text()
    refused = qaqnuz("init", "--dir", str(folder), env=env)
    assert refused.returncode == 2
    assert "--force" in refused.stderr and "already exist" in refused.stderr
    assert secret.read_bytes() == original and config.read_text() == edited

    forced = qaqnuz("init", "--dir", str(folder), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert secret.read_bytes() != original
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "# operator edit" not in config.read_text()


# -- tools list --------------------------------------------------------------------------------------
def test_tools_list_explains_visibility(setup):
    _, env = setup
    result = qaqnuz("tools", "list", "--brand", "acme", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {r["tool"]: r for r in json.loads(result.stdout)}
    assert {r["brand"] for r in rows.values()} == {"acme"}
    assert rows["secret_dump"]["visible"] is False and "sensitive" in rows["secret_dump"]["why"]
    assert rows["disabled_tool"]["visible"] is False and "disabled" in rows["disabled_tool"]["why"]
    assert rows["hidden_tool"]["visible"] is False and "not exposable" in rows["hidden_tool"]["why"]
    assert rows["echo"]["visible"] is True and rows["echo"]["roles"] == ["manager", "viewer"]
    assert "visible" in rows["echo"]["why"]
    assert rows["write_tool"]["visible"] is True and rows["write_tool"]["roles"] == ["manager"]
    assert rows["write_tool"]["scope"] == "orders.write"

    everyone = qaqnuz("tools", "list", "--json", env=env)
    assert everyone.returncode == 0, everyone.stderr
    tiny = [r for r in json.loads(everyone.stdout) if r["brand"] == "tiny"]
    assert tiny and all(not r["visible"] and r["why"] == "brand not entitled" for r in tiny)
    table = qaqnuz("tools", "list", "--brand", "acme", env=env)
    assert "sensitive tools are never exposed" in table.stdout


# -- help --------------------------------------------------------------------------------------------
COMMANDS = [
    ["init"],
    ["demo"],
    ["serve"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["keys", "rotate"],
    ["keys", "update"],
    ["approvals", "list"],
    ["approvals", "show"],
    ["approvals", "approve"],
    ["approvals", "deny"],
    ["tools", "list"],
    ["plugins", "list"],
    ["config", "check"],
    ["audit", "verify"],
    ["audit", "search"],
    ["audit", "tail"],
    ["store", "migrate"],
    ["slack", "manifest"],
    ["console", "users", "add"],
    ["console", "users", "list"],
    ["console", "users", "remove"],
    ["console", "users", "passwd"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(tmp_path, command):
    env = server_env(tmp_path / "absent.toml", None)
    env["QAQNUZ_PLUGINS"] += ",slack,console"  # plugins' commands, loaded as installed plugins would be
    result = qaqnuz(*command, "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: qaqnuz {' '.join(command)} ")
    assert "-h, --help" in result.stdout
    assert result.stderr == ""
    assert not list(tmp_path.iterdir())  # --help touches nothing


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str | None, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return {name: (helps.get(name), sub) for name, sub in action.choices.items()}
    return {}


def test_every_command_and_option_has_help_text():
    seen = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        children = _subcommands(parser)
        if not children:
            seen.append(path)
            for action in parser._actions:
                if action.option_strings:
                    assert action.help, (path, action.option_strings)
        for name, (text, sub) in children.items():
            assert text and text.strip(), [*path, name]
            walk(sub, [*path, name])

    walk(build_parser(), [])
    assert sorted(seen) == sorted(COMMANDS)
