"""Admin commands never build the runtime: with a pack's upstream secret unset and its database unreachable,
`keys`, `approvals`, `audit` and `tools list` still work; `config check` and `serve` report the secret."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import write_config

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def packs() -> str:
    port = closed_port()
    return f"""
[packs.crm]
type = "http"
base_url = "http://127.0.0.1:{port}/api"
allow_private = true
auth = {{ type = "bearer", token = {{ env = "CRM_TOKEN_NOT_SET" }} }}

[[packs.crm.tools]]
name = "find_contact"
description = "Find a contact."
scope = "orders.read"
path = "/contacts"

[packs.erp]
type = "sql"
dsn = {{ env = "ERP_DSN_NOT_SET" }}

[[packs.erp.tools]]
name = "count_invoices"
description = "How many invoices."
scope = "orders.read"
one = true
sql = "SELECT count(*) AS n FROM invoices"

[packs.books]
type = "sql"
dsn = "postgresql://books:pw@127.0.0.1:{port}/books"

[[packs.books.tools]]
name = "count_books"
description = "How many books."
scope = "orders.read"
one = true
sql = "SELECT count(*) AS n FROM books"
"""


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(cfg, None)
    env["QAQNUZ_PLUGINS"] = "stdio,pack-http,pack-sql,testkit_pack.plugin"
    return subprocess.run([QAQNUZ, *args, "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    text = kit_config().replace(
        "tools.echo = { exposable = true }",
        "tools.echo = { exposable = true }\ntools.find_contact = { exposable = true }\n"
        "tools.count_invoices = { exposable = true }",
        1,
    )
    return write_config(tmp_path, text + packs())


def test_admin_commands_work_without_the_packs_upstreams(cfg: Path) -> None:
    created = run(cfg, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "offline")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert run(cfg, "keys", "list").returncode == 0
    rotated = run(cfg, "keys", "rotate", key)
    assert rotated.returncode == 0, rotated.stderr
    assert run(cfg, "keys", "update", rotated.stdout.strip(), "--scope", "orders.read").returncode == 0
    assert run(cfg, "keys", "revoke", rotated.stdout.strip()).returncode == 0
    assert run(cfg, "approvals", "list", "--json").stdout.strip() == "[]"
    verified = run(cfg, "audit", "verify")
    assert verified.returncode == 0 and "chain intact" in verified.stderr
    listed = run(cfg, "tools", "list", "--json", "--brand", "acme")
    assert listed.returncode == 0, listed.stderr
    rows = {row["tool"]: row for row in json.loads(listed.stdout)}
    assert rows["find_contact"]["visible"] is True and rows["count_invoices"]["visible"] is True
    assert rows["count_books"]["visible"] is False and rows["count_books"]["pack"] == "books"


def test_config_check_and_serve_report_the_unset_secrets(cfg: Path) -> None:
    for args in (("config", "check"), ("serve", "--transport", "stdio")):
        result = run(cfg, *args)
        assert result.returncode == 2, result.stderr
        assert (
            "config error: [packs.crm.auth] token: environment variable CRM_TOKEN_NOT_SET is not set" in result.stderr
        )
        assert "config error: [packs.erp] dsn: environment variable ERP_DSN_NOT_SET is not set" in result.stderr
