"""`create = "demo-shop"`: the pack generates the demo shop when its SQLite file is missing, and only then."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import qaqnuz_pack_sql
from qaqnuz import ConfigError
from qaqnuz_pack_sql import demo_shop

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "shop" / "qaqnuz.toml"
EXAMPLE_DSN = 'dsn = "sqlite:///.state/shop.db"'
MANAGER_SCOPES = ["orders.read", "contacts.read", "orders.write"]
CREATE = 'create = "demo-shop"'


def shop_config(dsn_line: str, *, extra: str = "") -> str:
    """examples/shop/qaqnuz.toml with another dsn line (plus `extra` pack keys), secret where the fixture puts it."""
    text = EXAMPLE.read_text().replace('secret_file = ".state/qaqnuz.secret"', 'secret_file = "qaqnuz.secret"', 1)
    assert EXAMPLE_DSN in text
    return text.replace(EXAMPLE_DSN, dsn_line + ("\n" + extra if extra else ""), 1)


def orders(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, status FROM orders ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_a_missing_file_becomes_the_demo_shop(tmp_path, qaqnuz_kernel, qaqnuz_client):
    path = tmp_path / ".state" / "shop.db"
    assert not path.parent.exists()
    kernel = await qaqnuz_kernel(shop_config(EXAMPLE_DSN, extra=CREATE), plugins=[qaqnuz_pack_sql])
    assert path.is_file()
    expected = tmp_path / "expected.db"
    demo_shop.create(expected, seed=7)
    assert orders(path) == orders(expected)  # the same shop the generator makes, seed 7
    assert sorted(p.name for p in path.parent.iterdir() if "shop" in p.name) == ["shop.db"]  # no temporary left
    key, _ = kernel.mint_key(brand="acme", role="manager", scopes=MANAGER_SCOPES, name="t")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("get_order_status", {"order_id": "ord_1001"})
    assert result.is_error is False
    assert result.structured_content["data"] == {"order_id": "ord_1001", "status": orders(expected)[0][1]}


async def test_an_existing_file_is_never_touched(tmp_path, qaqnuz_kernel):
    path = tmp_path / ".state" / "shop.db"
    demo_shop.create(path, seed=9)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    await qaqnuz_kernel(shop_config(EXAMPLE_DSN, extra=CREATE), plugins=[qaqnuz_pack_sql])
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


async def test_without_the_setting_nothing_is_created(tmp_path, qaqnuz_kernel):
    await qaqnuz_kernel(shop_config(EXAMPLE_DSN), plugins=[qaqnuz_pack_sql])
    assert not (tmp_path / ".state" / "shop.db").exists()


@pytest.mark.parametrize(
    ("dsn_line", "extra", "expected"),
    [
        (
            'dsn = "postgresql://shop@127.0.0.1:5432/shop"',
            CREATE,
            '[packs.shop] create: only for SQLite files (dsn = "sqlite:///shop.db")',
        ),
        (EXAMPLE_DSN, 'create = "big-shop"', "[packs.shop]"),
    ],
    ids=["postgresql", "unknown generator"],
)
async def test_misuse_is_a_located_config_error(tmp_path, qaqnuz_kernel, dsn_line, extra, expected):
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(shop_config(dsn_line, extra=extra), plugins=[qaqnuz_pack_sql])
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems
    assert "create" in " ".join(caught.value.problems)
    assert not (tmp_path / ".state" / "shop.db").exists()


async def test_a_folder_that_cannot_be_written_is_a_config_error(tmp_path, qaqnuz_kernel):
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(shop_config('dsn = "sqlite:///blocked/shop.db"', extra=CREATE), plugins=[qaqnuz_pack_sql])
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("[packs.shop] create: could not create the demo shop database (")
