"""Fixtures for the SQL pack's tests: the demo shop in SQLite, and a real PostgreSQL server.

The PostgreSQL server is the session's `qaqnuz_postgres` (from `qaqnuz.testing`: the machine's own binaries on
a free 127.0.0.1 port, stopped at the end). Each test gets a fresh database cloned from a template holding the
demo shop.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qaqnuz_demo import shop as demo_shop

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "shop" / "qaqnuz.toml"
EXAMPLE_DSN = 'dsn = "sqlite:///.state/shop.db"'
SECRET_LINE = 'secret_file = ".state/qaqnuz.secret"'


def shop_config(dsn_line: str, *, extra: str = "") -> str:
    """The demo config from examples/shop with another `dsn = ...` line (and extra pack keys), and the server
    secret where qaqnuz.testing writes it."""
    text = EXAMPLE.read_text()
    assert EXAMPLE_DSN in text and SECRET_LINE in text
    text = text.replace(SECRET_LINE, 'secret_file = "qaqnuz.secret"', 1)
    return text.replace(EXAMPLE_DSN, dsn_line + ("\n" + extra if extra else ""), 1)


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    """A fresh demo shop SQLite file at tmp_path/.state/shop.db (where the example config points)."""
    path = tmp_path / ".state" / "shop.db"
    demo_shop.create(path)
    return path


# -- PostgreSQL ------------------------------------------------------------------------------------------------
@dataclass
class PgServer:
    port: int
    user: str = "postgres"

    def dsn(self, database: str, password: str | None = None) -> str:
        auth = f"{self.user}:{password}" if password else self.user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_server(qaqnuz_postgres) -> PgServer:
    """The session's PostgreSQL (`qaqnuz.testing`), with a `shop_template` database holding the demo shop."""
    server = PgServer(qaqnuz_postgres.port)
    with server.connect() as conn:
        conn.execute("CREATE DATABASE shop_template")
    with server.connect("shop_template") as conn:
        conn.execute(demo_shop.SCHEMA)
        data_rows = demo_shop.rows()
        with conn.cursor() as cur:
            for table in ("contacts", "orders", "order_items"):
                cur.executemany(demo_shop.INSERTS[table].replace("?", "%s"), data_rows[table])
    return server


_numbers = itertools.count(1)


@pytest.fixture
def pg_shop(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with the demo shop; yields its name, dropped after the test."""
    name = f"shop_{os.getpid()}_{next(_numbers)}"
    with pg_server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE shop_template')
    yield name
    with pg_server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the demo shop on either database, behind a real kernel ----------------------------------------------------
APPROVAL = "tools.create_order = { exposable = true, approval = true }"
NO_APPROVAL = "tools.create_order = { exposable = true }"
MANAGER_SCOPES = ["orders.read", "contacts.read", "orders.write"]


@dataclass
class ShopTarget:
    """Where the demo shop lives for one test, and a side door to check the database directly."""

    dialect: str
    dsn_line: str
    folder: Path
    sqlite_path: Path | None = None
    pg: PgServer | None = None
    pg_database: str | None = None

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run `sql` directly; `?` marks a bound parameter on either database."""
        if self.sqlite_path is not None:
            import sqlite3

            conn = sqlite3.connect(self.sqlite_path)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        assert self.pg is not None and self.pg_database is not None
        with self.pg.connect(self.pg_database) as conn:
            if params:
                sql = sql.replace("%", "%%").replace("?", "%s")
            return conn.execute(sql, params or None).fetchall()

    def scalar(self, sql: str):
        return self.rows(sql)[0][0]

    def counts(self) -> dict[str, int]:
        return {t: self.scalar(f"SELECT count(*) FROM {t}") for t in ("contacts", "orders", "order_items")}

    def config(self, *, extra: str = "", approval: bool = False) -> str:
        text = shop_config(self.dsn_line, extra=extra)
        return text if approval else text.replace(APPROVAL, NO_APPROVAL, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def shop_target(request, tmp_path: Path) -> ShopTarget:
    (tmp_path / ".state").mkdir(exist_ok=True)
    if request.param == "sqlite":
        path = tmp_path / ".state" / "shop.db"
        demo_shop.create(path)
        return ShopTarget("sqlite", EXAMPLE_DSN, tmp_path, sqlite_path=path)
    server = request.getfixturevalue("pg_server")
    database = request.getfixturevalue("pg_shop")
    return ShopTarget("postgresql", f'dsn = "{server.dsn(database)}"', tmp_path, pg=server, pg_database=database)


@pytest.fixture
def start_shop(qaqnuz_kernel):
    """`kernel, key = await start_shop(target, extra=..., approval=False)`: a started kernel with the demo config
    on `target` and a manager key holding every shop scope."""
    import qaqnuz_pack_sql

    async def start(target: ShopTarget, *, extra: str = "", approval: bool = False, config: str | None = None):
        text = config if config is not None else target.config(extra=extra, approval=approval)
        kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql], folder=target.folder)
        key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=MANAGER_SCOPES, name="shop-test")
        return kernel, key

    return start
