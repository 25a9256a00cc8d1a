"""The demo shop generator: row counts, plausible values, determinism, and the command line."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from qaqnuz_demo import shop as demo_shop


def dump(path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("contacts", "orders", "order_items")
        }
    finally:
        conn.close()


def test_counts_and_shapes(tmp_path):
    demo_shop.create(tmp_path / "shop.db")
    data = dump(tmp_path / "shop.db")
    assert len(data["contacts"]) == 120
    assert len(data["orders"]) == 300
    assert 300 <= len(data["order_items"]) <= 1200
    assert [o[0] for o in data["orders"]] == [f"ord_{n}" for n in range(1001, 1301)]
    assert {o[2] for o in data["orders"]} <= set(demo_shop.STATUSES)
    assert len({o[2] for o in data["orders"]}) >= 4
    assert all(re.fullmatch(r"[a-z.0-9]+@[a-z-]+\.example", c[2]) for c in data["contacts"])
    assert len({c[2] for c in data["contacts"]}) == 120  # emails are unique
    conn = sqlite3.connect(tmp_path / "shop.db")
    try:  # every order's total is the sum of its items; every reference resolves
        mismatched = conn.execute(
            "SELECT count(*) FROM orders o WHERE abs(o.total - "
            "(SELECT sum(quantity * unit_price) FROM order_items i WHERE i.order_id = o.id)) > 0.001"
        ).fetchone()[0]
        orphans = conn.execute("SELECT count(*) FROM orders WHERE contact_id NOT IN (SELECT id FROM contacts)")
        assert mismatched == 0 and orphans.fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    demo_shop.create(tmp_path / "a.db", seed=7)
    demo_shop.create(tmp_path / "b.db", seed=7)
    demo_shop.create(tmp_path / "c.db", seed=8)
    assert dump(tmp_path / "a.db") == dump(tmp_path / "b.db")
    assert dump(tmp_path / "a.db") != dump(tmp_path / "c.db")
    assert demo_shop.rows(7) == demo_shop.rows(7)


def test_create_refuses_an_existing_file(tmp_path):
    (tmp_path / "shop.db").write_text("keep me")
    with pytest.raises(FileExistsError):
        demo_shop.create(tmp_path / "shop.db")
    assert (tmp_path / "shop.db").read_text() == "keep me"


def test_command_line(tmp_path):
    out = tmp_path / "shop.db"
    command = [sys.executable, "-m", "qaqnuz_demo.shop"]
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True)
    assert "--force" in helped.stdout and "--seed" in helped.stdout
    first = subprocess.run([*command, str(out)], capture_output=True, text=True)
    assert first.returncode == 0 and "300 orders" in first.stderr
    again = subprocess.run([*command, str(out), "--seed", "9"], capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = subprocess.run([*command, str(out), "--seed", "9", "--force"], capture_output=True, text=True)
    assert forced.returncode == 0
    expected = tmp_path / "nine.db"
    demo_shop.create(expected, seed=9)
    assert dump(out) == dump(expected)
