"""`qaqnuz config check` validates everything `serve` would, and reports every error of a file in one run.

The real command in a subprocess with the transports and packs installed (http, stdio, sql, the testkit);
each planted error must be reported at its location, and a file with several must report them all, exit 2.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import write_config

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")

SQL_PACK = """
[packs.shop]
type = "sql"
dsn = "sqlite:///shop.db"

[[packs.shop.tools]]
name = "count_orders"
description = "How many orders there are."
scope = "orders.read"
one = true
sql = "SELECT count(*) AS n FROM orders"
"""
GOOD = kit_config() + SQL_PACK


def check(config: Path) -> subprocess.CompletedProcess[str]:
    env = server_env(config, None)
    env["QAQNUZ_PLUGINS"] = "stdio,http,pack-sql,testkit_pack.plugin"
    return subprocess.run([QAQNUZ, "config", "check", "--config", str(config)], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.removeprefix("config error: ") for line in result.stderr.splitlines() if line.startswith("config error:")
    ]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    conn = sqlite3.connect(tmp_path / "shop.db")
    conn.execute("CREATE TABLE orders (id TEXT)")
    conn.close()
    return tmp_path


def edit(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return apply


def plugins(table: str) -> Callable[[str], str]:
    return lambda text: text.replace("[server]\n", f"{table}\n[server]\n", 1)


CASES = [
    (
        "transport settings of a transport serve does not select",
        plugins('[plugins.http]\nport = "abc"\n'),
        "[plugins.http] port: expected `int`, got `str`",
    ),
    (
        "a transport's own checks",
        plugins('[plugins.http]\nhost = "0.0.0.0"\n'),
        "[plugins.http] query_token: must be false when host is not a loopback address",
    ),
    (
        "a table naming nothing installed",
        plugins("[plugins.nosuch]\nx = 1\n"),
        "[plugins.nosuch]: no installed provider or web route is named 'nosuch'; settings tables can name: anonymous, "
        "apikey, file, http, memory, queue, scope, sqlite, stdio",
    ),
    (
        "a first-party table whose plugin is not installed",
        plugins('[plugins.redis]\nurl = "redis://127.0.0.1"\n'),
        "[plugins.redis]: no installed provider or web route is named 'redis'; settings tables can name:",
    ),
    (
        "a first-party limiter that is not installed",
        plugins('[plugins]\nlimiter = "redis"\n'),
        "[plugins] limiter: unknown limiter provider 'redis'; valid names: memory, sqlite; 'redis' comes with the "
        "distribution qaqnuz-redis, which is not installed: pip install 'qaqnuz[redis]'",
    ),
    (
        "a first-party approver that is not installed",
        plugins('[plugins]\napprover = "slack"\n'),
        "[plugins] approver: unknown approver provider 'slack'; valid names: queue; 'slack' comes with the "
        "distribution qaqnuz-slack, which is not installed: pip install 'qaqnuz[slack]'",
    ),
    (
        "an SQLite database that is not there",
        edit('dsn = "sqlite:///shop.db"', 'dsn = "sqlite:///gone.db"'),
        "[packs.shop] dsn: no SQLite database at",
    ),
    (
        "a per-brand setting the pack does not have",
        lambda text: text + '\n[brands.acme.packs.shop]\nschema = "tenant_a"\n',
        "[brands.acme.packs.shop] schema: unknown key; valid keys: busy_timeout, dsn,",
    ),
    (
        "an unknown web route",
        plugins('[plugins]\nroutes = ["console"]\n'),
        "[plugins] routes: unknown web route 'console'; valid names: none installed",
    ),
]


def test_a_default_transport_that_is_not_installed_is_a_warning(folder: Path) -> None:
    text = GOOD.replace('secret_file = "qaqnuz.secret"', 'secret_file = "qaqnuz.secret"\ntransport = "grpc"')
    result = check(write_config(folder, text))
    assert result.returncode == 0, result.stderr
    assert (
        "warning: [server] transport: unknown transport provider 'grpc'; valid names: http, stdio; `qaqnuz serve` "
        "without --transport would fail" in result.stderr
    )


def test_the_good_config_passes(folder: Path) -> None:
    result = check(write_config(folder, GOOD))
    assert result.returncode == 0, result.stderr
    assert "OK (4 brands" not in result.stderr and "tools" in result.stderr


@pytest.mark.parametrize(("planted", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_planted_error_is_reported_at_its_location(folder: Path, planted: Callable[[str], str], expected: str):
    result = check(write_config(folder, planted(GOOD)))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    found = problems(result)
    assert len(found) == 1, found  # exactly the planted one
    assert found[0].startswith(expected), found


def test_every_error_of_one_file_is_reported_in_one_run(folder: Path) -> None:
    head = '[plugins]\nlimiter = "redis"\n\n[plugins.http]\nport = "abc"\n\n[plugins.nosuch]\nx = 1\n\n'
    text = head + GOOD.replace('dsn = "sqlite:///shop.db"', 'dsn = "sqlite:///gone.db"')
    text = text.replace('plan = "growth"', 'plan = "gold"', 1) + '\n[brands.globex.packs.shop]\nschema = "b"\n'
    result = check(write_config(folder, text))
    assert result.returncode == 2
    found = problems(result)
    for start in (
        "[brands.acme] plan: undefined plan 'gold'",
        "[plugins] limiter: unknown limiter provider 'redis'",
        "[plugins.http] port:",
        "[plugins.nosuch]:",
        "[packs.shop] dsn: no SQLite database at",
        "[brands.globex.packs.shop] schema: unknown key; valid keys: busy_timeout, dsn,",
    ):
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == 6, found


def test_config_check_creates_no_store(folder: Path) -> None:
    cfg = write_config(folder, GOOD.replace('store = "sqlite:///qaqnuz.db"', 'store = "sqlite:///state/typo.db"'))
    result = check(cfg)
    assert result.returncode == 0, result.stderr
    assert not (folder / "state").exists()  # a mistyped store path is not turned into an empty store


def test_a_broken_store_url_still_checks_the_routes(folder: Path) -> None:
    text = '[plugins]\nroutes = ["nothere"]\n\n' + GOOD.replace('store = "sqlite:///qaqnuz.db"', 'store = "nope"')
    found = problems(check(write_config(folder, text)))
    assert any(p.startswith("[server] store: the URL is not a store URL") for p in found), found
    assert any(p.startswith("[plugins] routes: unknown web route 'nothere'") for p in found), found
