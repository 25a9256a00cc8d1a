"""`qaqnuz console users ...` through the real CLI, in a subprocess, against a SQLite store in tmp_path: who
may be added with which role and brand, where a password may come from and which are refused, listing,
changing a password (which ends sessions) and removing; and that no output ever holds a password or hash.

Hashes use the product's real argon2id parameters (about a tenth of a second each)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sqlite3
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest

from qaqnuz import CONSOLE_USER_COLUMNS, ConsoleUser, UsageError, console_user_from_row, looks_like_key
from qaqnuz.testing import MINIMAL_CONFIG, write_config

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")
CONFIG = (
    MINIMAL_CONFIG
    + """
[brands.acme]
plan = "growth"
roles = { viewer = ["orders.read"] }
"""
)
ALICE_PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "bob's own long passphrase"
NEW_PASSWORD = "a brand new password, 2nd edition"
PASSWORDS = (ALICE_PASSWORD, BOB_PASSWORD, NEW_PASSWORD)


def key_shaped() -> str:
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(12))
    tail = "".join(secrets.choice(alphabet) for _ in range(49))
    return f"qz_{body}_{tail}"


class Cli:
    """Runs `qaqnuz` with only the console plugin, keeping every output to check none leaks a secret."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        config = write_config(folder, CONFIG)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
        self.env.update(QAQNUZ_CONFIG=str(config), QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1", QAQNUZ_PLUGINS="console")
        self.outputs: list[str] = []

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [QAQNUZ, "console", "users", *args],
            env={**self.env, **(env or {})},
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def password_file(self, password: str, name: str = "pw.txt") -> str:
        path = self.folder / name
        path.write_text(password + "\n")
        path.chmod(0o600)
        return str(path)

    def stored(self) -> dict[str, ConsoleUser]:
        """The users in the store, read straight from its SQLite file (none before the store was first opened)."""
        path = self.folder / "qaqnuz.db"
        if not path.exists():
            return {}
        with sqlite3.connect(path) as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'console_users'").fetchall():
                return {}
            rows = db.execute(f"SELECT {CONSOLE_USER_COLUMNS} FROM console_users").fetchall()
        return {user.name: user for user in map(console_user_from_row, rows)}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    hashes = (
        [u.password_hash for u in runner.stored().values() if u.password_hash]
        if (tmp_path / "qaqnuz.db").exists()
        else []
    )
    for text in runner.outputs:
        for secret in (*PASSWORDS, *hashes):
            assert secret not in text
        assert "$argon2" not in text
        assert not any(looks_like_key(word) for word in text.split())


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def test_add_an_admin_from_a_password_file(cli):
    done = ok(cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(ALICE_PASSWORD)))
    assert "alice" in done.stderr and "admin" in done.stderr and "every brand" in done.stderr
    alice = cli.stored()["alice"]
    assert (alice.role, alice.brand) == ("admin", None)
    assert alice.password_hash is not None and alice.password_hash.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(alice.password_hash, ALICE_PASSWORD)  # the first line, no newline


def test_a_password_file_gives_only_its_first_line(cli):
    path = cli.folder / "two-lines.txt"
    path.write_text(f"{ALICE_PASSWORD}\r\nsecond line\n")
    ok(cli("add", "alice", "--role", "admin", "--password-file", str(path)))
    assert argon2.PasswordHasher().verify(cli.stored()["alice"].password_hash, ALICE_PASSWORD)


def test_a_missing_password_file_is_a_usage_error(cli):
    done = cli("add", "alice", "--role", "admin", "--password-file", str(cli.folder / "nope.txt"))
    assert done.returncode == 2
    assert "--password-file" in done.stderr
    assert cli.stored() == {}


def test_add_a_brand_admin_from_the_environment(cli):
    done = ok(
        cli("add", "bob", "--role", "brand-admin", "--brand", "acme", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD})
    )
    assert "bob" in done.stderr and "brand-admin" in done.stderr and "acme" in done.stderr
    bob = cli.stored()["bob"]
    assert (bob.role, bob.brand) == ("brand-admin", "acme")
    assert argon2.PasswordHasher().verify(bob.password_hash, BOB_PASSWORD)


def test_add_from_stdin(cli):
    ok(cli("add", "carol", "--role", "auditor", "--password-stdin", stdin=ALICE_PASSWORD + "\n"))
    assert argon2.PasswordHasher().verify(cli.stored()["carol"].password_hash, ALICE_PASSWORD)


def test_add_an_oidc_only_user_stores_no_password(cli):
    done = ok(cli("add", "dana@example.com", "--role", "auditor", "--brand", "acme", "--oidc-only"))
    assert "OpenID Connect" in done.stderr
    assert cli.stored()["dana@example.com"].password_hash is None


def test_no_password_and_no_terminal_is_a_usage_error_naming_the_sources(cli):
    done = cli("add", "alice", "--role", "admin")
    assert done.returncode == 2
    assert "--password-file" in done.stderr and "--password-stdin" in done.stderr and "--oidc-only" in done.stderr
    assert cli.stored() == {}


def test_a_brand_admin_needs_a_brand(cli):
    done = cli("add", "bob", "--role", "brand-admin", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD})
    assert done.returncode == 2
    assert "--brand" in done.stderr
    assert cli.stored() == {}


def test_an_unknown_brand_is_refused(cli):
    done = cli(
        "add", "bob", "--role", "brand-admin", "--brand", "globex", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD}
    )
    assert done.returncode == 2
    assert "unknown brand" in done.stderr and "acme" in done.stderr
    assert cli.stored() == {}


def test_an_unknown_role_is_refused(cli):
    done = cli("add", "bob", "--role", "owner", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD})
    assert done.returncode == 2
    assert "owner" in done.stderr
    assert cli.stored() == {}


def test_an_invalid_name_is_refused(cli):
    done = cli("add", "bob;drop", "--role", "admin", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD})
    assert done.returncode == 2
    assert "invalid user name" in done.stderr
    assert cli.stored() == {}


def test_a_duplicate_needs_replace_and_replace_ends_sessions(cli):
    ok(cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(ALICE_PASSWORD)))
    before = cli.stored()["alice"]
    done = cli("add", "alice", "--role", "auditor", "--password-file", cli.password_file(BOB_PASSWORD))
    assert done.returncode == 2
    assert "--replace" in done.stderr
    assert cli.stored()["alice"] == before
    ok(cli("add", "alice", "--role", "auditor", "--replace", "--password-file", cli.password_file(BOB_PASSWORD)))
    after = cli.stored()["alice"]
    assert after.role == "auditor"
    assert argon2.PasswordHasher().verify(after.password_hash, BOB_PASSWORD)
    assert after.sessions_after > 0


@pytest.mark.parametrize("how", ["file", "env", "stdin"])
def test_a_key_shaped_password_is_refused(cli, how):
    key = key_shaped()
    assert looks_like_key(key)
    if how == "file":
        done = cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(key))
    elif how == "env":
        done = cli("add", "alice", "--role", "admin", env={"QAQNUZ_CONSOLE_PASSWORD": key})
    else:
        done = cli("add", "alice", "--role", "admin", "--password-stdin", stdin=key + "\n")
    assert done.returncode == 2
    assert "an MCP key is never a console credential" in done.stderr
    assert key not in done.stdout + done.stderr
    assert cli.stored() == {}


@pytest.mark.parametrize("password", ["short", "            "])
def test_a_weak_password_is_refused(cli, password):
    done = cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(password))
    assert done.returncode == 2
    assert "at least 12" in done.stderr
    assert cli.stored() == {}


def test_list_shows_users_as_a_table_and_as_json_without_hashes(cli):
    ok(cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(ALICE_PASSWORD)))
    ok(cli("add", "bob", "--role", "brand-admin", "--brand", "acme", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD}))
    ok(cli("add", "carol", "--role", "auditor", "--oidc-only"))
    lines = ok(cli("list")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "BRAND", "SIGN-IN", "CREATED"]
    rows = {line.split()[0]: line.split()[:4] for line in lines[1:]}
    assert rows == {
        "alice": ["alice", "admin", "-", "password"],
        "bob": ["bob", "brand-admin", "acme", "password"],
        "carol": ["carol", "auditor", "-", "oidc"],
    }
    listed = json.loads(ok(cli("list", "--json")).stdout)
    assert [u["name"] for u in listed] == ["alice", "bob", "carol"]
    assert listed[1] == {**listed[1], "role": "brand-admin", "brand": "acme", "password": True}
    assert listed[2]["password"] is False
    assert all("password_hash" not in u for u in listed)


def test_list_with_no_users_is_just_the_header(cli):
    assert ok(cli("list")).stdout.split() == ["NAME", "ROLE", "BRAND", "SIGN-IN", "CREATED"]
    assert json.loads(ok(cli("list", "--json")).stdout) == []


def test_passwd_changes_the_hash_keeps_role_and_brand_and_ends_sessions(cli):
    ok(cli("add", "bob", "--role", "brand-admin", "--brand", "acme", env={"QAQNUZ_CONSOLE_PASSWORD": BOB_PASSWORD}))
    before = cli.stored()["bob"]
    assert before.sessions_after == before.created_at  # no session from before the user was made counts
    done = ok(cli("passwd", "bob", "--password-file", cli.password_file(NEW_PASSWORD)))
    assert "bob" in done.stderr
    after = cli.stored()["bob"]
    assert after.password_hash != before.password_hash
    assert argon2.PasswordHasher().verify(after.password_hash, NEW_PASSWORD)
    assert (after.role, after.brand) == ("brand-admin", "acme")
    assert after.sessions_after > before.sessions_after and after.created_at == before.created_at


def test_passwd_from_stdin_and_refusals(cli):
    ok(cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(ALICE_PASSWORD)))
    ok(cli("passwd", "alice", "--password-stdin", stdin=NEW_PASSWORD + "\n"))
    assert argon2.PasswordHasher().verify(cli.stored()["alice"].password_hash, NEW_PASSWORD)
    stored = cli.stored()["alice"]
    refused = cli("passwd", "alice", "--password-stdin", stdin=key_shaped() + "\n")
    assert refused.returncode == 2 and "never a console credential" in refused.stderr
    assert cli.stored()["alice"] == stored
    missing = cli("passwd", "nobody", "--password-file", cli.password_file(NEW_PASSWORD))
    assert missing.returncode == 1
    assert "no console user 'nobody'" in missing.stderr


def test_remove_then_remove_again_exits_1(cli):
    ok(cli("add", "alice", "--role", "admin", "--password-file", cli.password_file(ALICE_PASSWORD)))
    ok(cli("add", "carol", "--role", "auditor", "--oidc-only"))
    done = ok(cli("remove", "alice"))
    assert "alice" in done.stderr
    assert list(cli.stored()) == ["carol"]
    again = cli("remove", "alice")
    assert again.returncode == 1
    assert "no console user 'alice'" in again.stderr


def test_every_command_has_help(cli):
    for words in ([], ["add"], ["list"], ["remove"], ["passwd"]):
        done = ok(cli(*words, "--help"))
        assert "usage: qaqnuz console users" in done.stdout
        assert "--config" in done.stdout or not words
    assert "QAQNUZ_CONSOLE_PASSWORD" in ok(cli("add", "--help")).stdout


def test_importing_the_commands_does_not_load_argon2():
    code = "import sys, qaqnuz_console.commands; sys.exit('argon2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


class Terminal:
    """Standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        raise AssertionError("a terminal password is read through getpass, never from stdin")


def no_source() -> argparse.Namespace:
    return argparse.Namespace(password_file=None, password_stdin=False)


def test_in_a_terminal_the_password_is_prompted_for_twice(monkeypatch):
    from qaqnuz_console import commands

    answers = iter([ALICE_PASSWORD, ALICE_PASSWORD])
    prompts: list[str] = []
    monkeypatch.delenv("QAQNUZ_CONSOLE_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert commands._read_password(no_source(), "alice") == ALICE_PASSWORD
    assert len(prompts) == 2 and "alice" in prompts[0]

    answers = iter([ALICE_PASSWORD, BOB_PASSWORD])
    with pytest.raises(UsageError, match="differ"):
        commands._read_password(no_source(), "alice")


def test_the_environment_variable_is_removed_once_read(monkeypatch):
    from qaqnuz_console import commands

    monkeypatch.setenv("QAQNUZ_CONSOLE_PASSWORD", BOB_PASSWORD)
    monkeypatch.setattr(sys, "stdin", Terminal())
    assert commands._read_password(no_source(), "bob") == BOB_PASSWORD
    assert "QAQNUZ_CONSOLE_PASSWORD" not in os.environ
