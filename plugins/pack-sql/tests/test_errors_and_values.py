"""Error mapping (dependency vs terminal, fixed texts, quiet logs) and JSON-safe values, on real databases."""

from __future__ import annotations

import logging
import re
import socket
import sqlite3

import pytest

import qaqnuz_pack_sql
from qaqnuz import ConfigError
from qaqnuz_pack_sql.backends import CONSTRAINT, UNAVAILABLE

pytestmark = pytest.mark.anyio

HEAD = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }
tools.probe = { exposable = true }
tools.insert = { exposable = true }

[packs.db]
type = "sql"
"""

TOOLS = """
[[packs.db.tools]]
name = "probe"
description = "Read one value."
scope = "orders.read"
one = true
sql = '''PROBE'''
input = { x = { type = "string", required = false } }

[[packs.db.tools]]
name = "insert"
description = "Write one row."
scope = "orders.write"
side_effect = "write"
sql = "INSERT INTO t (k) VALUES (:k)"
input = { k = { type = "string" } }
"""


async def call(qaqnuz_kernel, qaqnuz_client, text: str, tool: str, args: dict):
    kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read", "orders.write"], name="e")
    async with qaqnuz_client(kernel, key) as client:
        return (await client.call_tool(tool, args)).structured_content


def without_incident(answer: dict) -> dict:
    """A dependency or terminal envelope, after checking it carries an incident id (the log line's too)."""
    assert re.fullmatch(r"inc_[0-9A-Za-z]{16}", answer.pop("incident_id"))
    return answer


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


async def test_unreachable_postgres_is_a_dependency_error_and_logs_no_driver_text(qaqnuz_kernel, qaqnuz_client, caplog):
    port = closed_port()
    pack = f'dsn = "postgresql://shop:pa55word@127.0.0.1:{port}/shop"\npool_timeout = "1s"\npool_min_size = 0\n'
    with caplog.at_level(logging.DEBUG):
        answer = await call(
            qaqnuz_kernel, qaqnuz_client, HEAD + pack + TOOLS.replace("PROBE", "SELECT 1 AS one"), "probe", {}
        )
    assert without_incident(answer) == {"ok": False, "error_class": "dependency", "sanitized_error": UNAVAILABLE}
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            text = record.getMessage()
            assert str(port) not in text and "pa55word" not in text and "refused" not in text.lower(), text


async def test_constraint_violation_on_postgres_has_a_fixed_text(qaqnuz_kernel, qaqnuz_client, pg_server, pg_shop):
    with pg_server.connect(pg_shop) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY CHECK (k <> 'bad'))")
    pack = f'dsn = "{pg_server.dsn(pg_shop)}"\n'
    text = HEAD + pack + TOOLS.replace("PROBE", "SELECT 1 AS one")
    first = await call(qaqnuz_kernel, qaqnuz_client, text, "insert", {"k": "bad"})
    assert without_incident(first) == {"ok": False, "error_class": "terminal", "sanitized_error": CONSTRAINT}


async def test_locked_sqlite_is_a_dependency_error_and_reads_still_work(qaqnuz_kernel, qaqnuz_client, tmp_path):
    db = tmp_path / "t.db"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    setup.commit()
    setup.close()
    text = (
        HEAD
        + 'dsn = "sqlite:///t.db"\nbusy_timeout = "200ms"\n'
        + TOOLS.replace("PROBE", "SELECT count(*) AS n FROM t")
    )
    kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read", "orders.write"], name="e")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
    try:
        async with qaqnuz_client(kernel, key) as client:
            blocked = (await client.call_tool("insert", {"k": "a"})).structured_content
            read = (await client.call_tool("probe", {})).structured_content
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert without_incident(blocked) == {"ok": False, "error_class": "dependency", "sanitized_error": UNAVAILABLE}
    assert read["data"] == {"n": 0}  # WAL: readers are not blocked by the writer


async def test_missing_sqlite_file_is_a_located_config_error_and_is_not_created(qaqnuz_kernel, tmp_path):
    text = HEAD + 'dsn = "sqlite:///missing/none.db"\n' + TOOLS.replace("PROBE", "SELECT 1 AS one")
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    assert caught.value.problems == [
        f"[packs.db] dsn: no SQLite database at {tmp_path / 'missing' / 'none.db'}; create it first (the SQL pack "
        f"opens existing databases only), or fix the path (relative paths start at the config file's folder)"
    ]
    assert not (tmp_path / "missing").exists()


async def test_a_sqlite_file_removed_while_serving_is_a_dependency_error_and_is_not_created(
    qaqnuz_kernel, qaqnuz_client, tmp_path
):
    sqlite3.connect(tmp_path / "gone.db").close()
    text = HEAD + 'dsn = "sqlite:///gone.db"\n' + TOOLS.replace("PROBE", "SELECT 1 AS one")
    kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read", "orders.write"], name="e")
    (tmp_path / "gone.db").unlink()
    async with qaqnuz_client(kernel, key) as client:
        answer = (await client.call_tool("insert", {"k": "a"})).structured_content
    assert without_incident(answer) == {"ok": False, "error_class": "dependency", "sanitized_error": UNAVAILABLE}
    assert not (tmp_path / "gone.db").exists()


async def test_sqlite_values_are_json_safe(qaqnuz_kernel, qaqnuz_client, tmp_path):
    sqlite3.connect(tmp_path / "t.db").close()
    probe = "SELECT x'00ff10' AS blob, 1.5 AS real, 2 AS int, NULL AS empty, :x AS echoed, '50%' AS pct"
    text = HEAD + 'dsn = "sqlite:///t.db"\n' + TOOLS.replace("PROBE", probe)
    answer = await call(qaqnuz_kernel, qaqnuz_client, text, "probe", {"x": "it's"})
    assert answer["data"] == {"blob": "AP8Q", "real": 1.5, "int": 2, "empty": None, "echoed": "it's", "pct": "50%"}


async def test_postgres_values_and_translation(qaqnuz_kernel, qaqnuz_client, pg_server, pg_shop):
    """`::` casts, literal `%`, dollar quotes and `:name` inside literals survive the translation to psycopg;
    numeric, date, timestamp, bytea, uuid, json and arrays come back JSON-safe."""
    probe = (
        "SELECT :x::text || '!' AS cast_ok, '100%' AS pct, $$:x$$ AS raw, ':x' AS literal, "
        "12.50::numeric AS amount, DATE '2025-01-02' AS day, TIMESTAMP '2025-01-02 03:04:05' AS at, "
        "'\\x00ff10'::bytea AS blob, '8d9f4b0c-7a0e-4d2c-9a5e-0f6f1f0e2b7a'::uuid AS uid, "
        """'{"a": [1, 2.5]}'::jsonb AS doc, ARRAY[1, 2] AS arr, INTERVAL '90 seconds' AS span"""
    )
    text = HEAD + f'dsn = "{pg_server.dsn(pg_shop)}"\n' + TOOLS.replace("PROBE", probe)
    answer = await call(qaqnuz_kernel, qaqnuz_client, text, "probe", {"x": "50%"})
    assert answer["ok"] is True, answer
    assert answer["data"] == {
        "cast_ok": "50%!",
        "pct": "100%",
        "raw": ":x",
        "literal": ":x",
        "amount": "12.50",
        "day": "2025-01-02",
        "at": "2025-01-02T03:04:05",
        "blob": "AP8Q",
        "uid": "8d9f4b0c-7a0e-4d2c-9a5e-0f6f1f0e2b7a",
        "doc": {"a": [1, 2.5]},
        "arr": [1, 2],
        "span": 90.0,
    }


async def test_postgres_pool_is_closed_with_the_kernel(qaqnuz_kernel, qaqnuz_client, pg_server, pg_shop):
    text = HEAD + f'dsn = "{pg_server.dsn(pg_shop)}"\n' + TOOLS.replace("PROBE", "SELECT 1 AS one")
    kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read"], name="e")
    async with qaqnuz_client(kernel, key) as client:
        assert (await client.call_tool("probe", {})).structured_content["data"] == {"one": 1}

    def sessions() -> int:
        with pg_server.connect() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [pg_shop]).fetchone()[0]

    assert sessions() >= 1
    await kernel.aclose()
    assert sessions() == 0


SLOW_TOOLS = """
[[packs.db.tools]]
name = "probe"
description = "Slow write, cut by the kernel's timeout."
scope = "orders.write"
side_effect = "write"
timeout = "300ms"
sql = '''SLOW'''

[[packs.db.tools]]
name = "insert"
description = "Write one row."
scope = "orders.write"
side_effect = "write"
sql = "INSERT INTO t (k) VALUES (:k)"
input = { k = { type = "string" } }
"""


async def test_a_call_cut_by_the_kernel_timeout_stops_its_sqlite_statement(qaqnuz_kernel, qaqnuz_client, tmp_path):
    """The slow write holds SQLite's write lock; if it kept running after the kernel gave up, the next write
    would wait out its busy timeout and fail."""
    setup = sqlite3.connect(tmp_path / "t.db")
    setup.execute("CREATE TABLE t (k TEXT)")
    setup.close()
    slow = (
        "INSERT INTO t (k) SELECT 'x' FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < 1000000000) SELECT i FROM n) WHERE i = -1"
    )
    pack = 'dsn = "sqlite:///t.db"\nstatement_timeout = "60s"\nbusy_timeout = "3s"\n'
    kernel = await qaqnuz_kernel(HEAD + pack + SLOW_TOOLS.replace("SLOW", slow), plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.write"], name="e")
    async with qaqnuz_client(kernel, key) as client:
        cut = (await client.call_tool("probe", {})).structured_content
        after = (await client.call_tool("insert", {"k": "a"})).structured_content
    assert cut["error_class"] == "dependency"
    assert after == {"ok": True, "data": {"rowcount": 1}, "truncated": False}


async def test_a_call_cut_by_the_kernel_timeout_cancels_its_postgres_query(
    qaqnuz_kernel, qaqnuz_client, pg_server, pg_shop
):
    import anyio

    with pg_server.connect(pg_shop) as conn:
        conn.execute("CREATE TABLE t (k TEXT)")
    pack = f'dsn = "{pg_server.dsn(pg_shop)}"\nstatement_timeout = "60s"\n'
    slow = "INSERT INTO t (k) SELECT 'slept' FROM pg_sleep(30)"
    kernel = await qaqnuz_kernel(HEAD + pack + SLOW_TOOLS.replace("SLOW", slow), plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.write"], name="e")
    async with qaqnuz_client(kernel, key) as client:
        cut = (await client.call_tool("probe", {})).structured_content
        after = (await client.call_tool("insert", {"k": "a"})).structured_content
    assert cut["error_class"] == "dependency"
    assert after["data"] == {"rowcount": 1}

    def sleeping() -> int:
        with pg_server.connect() as conn:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE %s AND state = 'active'"
            return conn.execute(sql, [pg_shop, "%pg_sleep%"]).fetchone()[0]

    with anyio.fail_after(5):
        while sleeping():
            await anyio.sleep(0.1)
