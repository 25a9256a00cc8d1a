"""The demo folder is made once: the shop database appears whole or not at all, and is never replaced."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from qaqnuz import UsageError
from qaqnuz_demo import demo, shop


def orders(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, status FROM orders ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_fresh_folder_gets_config_secret_and_the_seed_7_shop(tmp_path):
    folder = tmp_path / "demo"
    created = demo.prepare(folder)
    assert created == [demo.CONFIG_FILE, demo.SECRET_FILE, demo.SHOP_FILE]
    expected = tmp_path / "expected.db"
    shop.create(expected, seed=7)
    assert orders(folder / demo.SHOP_FILE) == orders(expected)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / demo.SECRET_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted(created)  # no temporary file left behind


def test_an_existing_shop_is_never_touched(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    shop.create(folder / demo.SHOP_FILE, seed=9)
    before = ((folder / demo.SHOP_FILE).read_bytes(), (folder / demo.SHOP_FILE).stat().st_mtime_ns)
    assert demo.SHOP_FILE not in demo.prepare(folder)
    assert ((folder / demo.SHOP_FILE).read_bytes(), (folder / demo.SHOP_FILE).stat().st_mtime_ns) == before
    assert demo.prepare(folder) == []  # a second run creates nothing


def test_a_shop_made_meanwhile_by_another_run_wins(tmp_path, monkeypatch):
    target = tmp_path / demo.SHOP_FILE
    real_create = shop.create

    def racing(path, seed=7):
        real_create(path, seed=seed)
        real_create(target, seed=3)  # another `qaqnuz demo` finishes first

    monkeypatch.setattr(shop, "create", racing)
    assert demo.create_shop(target) is False
    expected = tmp_path / "three.db"
    real_create(expected, seed=3)
    assert orders(target) == orders(expected)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_folder_that_cannot_be_made_is_a_usage_error(tmp_path):
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(UsageError, match=r"cannot set up the demo folder .*blocked"):
        demo.prepare(tmp_path / "blocked" / "demo")
