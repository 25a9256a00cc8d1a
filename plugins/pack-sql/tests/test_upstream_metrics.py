"""Each statement's time and failure kind reach the kernel's metrics under the pack's config name, never the
statement, its values or the driver's message."""

from __future__ import annotations

import sqlite3

import pytest
from prometheus_client import generate_latest

import qaqnuz_pack_sql

pytestmark = pytest.mark.anyio

CONFIG = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }
tools.probe = { exposable = true }
tools.insert = { exposable = true }

[packs.db]
type = "sql"
dsn = "sqlite:///t.db"

[[packs.db.tools]]
name = "probe"
description = "Count the rows."
scope = "orders.read"
one = true
sql = "SELECT count(*) AS n FROM t"

[[packs.db.tools]]
name = "insert"
description = "Write one row."
scope = "orders.write"
side_effect = "write"
sql = "INSERT INTO t (k) VALUES (:k)"
input = { k = { type = "string" } }
"""


async def test_statements_are_timed_and_refusals_counted_as_query(qaqnuz_kernel, qaqnuz_client, tmp_path):
    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    db.commit()
    db.close()
    kernel = await qaqnuz_kernel(CONFIG, plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read", "orders.write"], name="e")
    async with qaqnuz_client(kernel, key) as client:
        assert not (await client.call_tool("insert", {"k": "canary-row-5"})).is_error
        assert (await client.call_tool("insert", {"k": "canary-row-5"})).is_error  # the primary key refuses it
        assert (await client.call_tool("probe", {})).structured_content["data"] == {"n": 1}
    sample = kernel.metrics.registry.get_sample_value
    assert sample("qaqnuz_upstream_duration_seconds_count", {"pack": "db"}) == 3.0
    assert sample("qaqnuz_upstream_errors_total", {"pack": "db", "error": "query"}) == 1.0
    text = generate_latest(kernel.metrics.registry).decode()
    assert "canary-row-5" not in text and "INSERT" not in text and "UNIQUE" not in text
