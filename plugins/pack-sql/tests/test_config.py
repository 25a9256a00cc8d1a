"""Load-time checks: every mistake is a ConfigError with its location, found before any call is served."""

from __future__ import annotations

import pytest

import qaqnuz_pack_sql
from qaqnuz import ConfigError

pytestmark = pytest.mark.anyio

HEAD = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["orders.read"] }

[packs.shop]
type = "sql"
"""

STATUS_TOOL = """
[[packs.shop.tools]]
name = "get_order_status"
description = "Look up an order."
scope = "orders.read"
sql = "SELECT id, status FROM orders WHERE id = :order_id"
input = { order_id = { type = "string" } }
"""


def config(pack: str, tools: str = STATUS_TOOL) -> str:
    return HEAD + pack + "\n" + tools


async def problems(qaqnuz_kernel, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(text, plugins=[qaqnuz_pack_sql])
    return caught.value.problems


def tool(sql: str, *, side_effect: str = "read", input: str = "{ order_id = { type = 'string' } }", extra: str = ""):
    return f'''
[[packs.shop.tools]]
name = "t"
description = "A tool."
scope = "orders.read"
side_effect = "{side_effect}"
sql = """{sql}"""
input = {input}
{extra}
'''


CASES = {
    "unknown placeholder": (
        tool("SELECT * FROM orders WHERE id = :order_id AND status = :state"),
        "[packs.shop] tools[0] sql: placeholder :state is not an input parameter (inputs: order_id; the caller's "
        "brand, key_id, key_name, role are bound too)",
    ),
    "two statements": (
        tool("SELECT 1; DELETE FROM orders"),
        "[packs.shop] tools[0] sql: one statement only",
    ),
    "read tool with an UPDATE": (
        tool("UPDATE orders SET status = 'paid' WHERE id = :order_id"),
        "[packs.shop] tools[0] sql: a read tool runs a query (SELECT, WITH or VALUES), not UPDATE",
    ),
    "positional parameter": (
        tool("SELECT * FROM orders WHERE id = ?"),
        "[packs.shop] tools[0] sql: positional parameters (?) are not supported; write :name",
    ),
    "unterminated literal": (
        tool("SELECT * FROM orders WHERE id = 'x"),
        "[packs.shop] tools[0] sql: unterminated string literal",
    ),
    "empty sql": (tool("  -- nothing\n"), "[packs.shop] tools[0] sql: empty statement"),
    "one on a write tool": (
        tool("DELETE FROM orders WHERE id = :order_id", side_effect="write", extra="one = true"),
        "[packs.shop] tools[0] one: applies to read tools only",
    ),
    "missing sql": (
        '[[packs.shop.tools]]\nname = "t"\ndescription = "d"\nscope = "orders.read"\n',
        "[packs.shop] tools[0] sql: missing required key",
    ),
    "unknown tool key": (
        tool("SELECT 1", extra='query = "SELECT 2"'),
        "[packs.shop] tools[0] query: unknown key",
    ),
    "bad shared field": (
        tool("SELECT 1", extra='timeout = "soon"').replace('scope = "orders.read"', 'scope = "Orders"'),
        "[packs.shop] tools[0] scope: 'Orders' must be '<resource>.<action>' in lower case",
    ),
    "bad input parameter": (
        tool("SELECT :n AS n", input="{ n = { type = 'string', minimum = 1 } }"),
        "[packs.shop] tools[0] input.n: minimum/maximum apply to integer and number parameters only",
    ),
    "no tools": ("", "[packs.shop] tools: configure at least one"),
    # `like`. The SQL says ESCAPE '\' (one backslash): twice in TOML's """ string, four times in Python's.
    "unknown like mode": (
        tool("SELECT id FROM orders WHERE id LIKE :order_id ESCAPE '\\\\'", extra='like = { order_id = "anywhere" }'),
        '[packs.shop] tools[0] like.order_id: \'anywhere\' is not a like mode; use one of "contains", "prefix", '
        '"suffix", "exact"',
    ),
    "like names no input": (
        tool("SELECT id FROM orders WHERE id LIKE :order_id ESCAPE '\\\\'", extra='like = { id = "contains" }'),
        "[packs.shop] tools[0] like.id: no input parameter 'id' (inputs: order_id)",
    ),
    "like on a number": (
        tool(
            "SELECT id FROM orders WHERE total LIKE :n ESCAPE '\\\\'",
            input="{ n = { type = 'integer' } }",
            extra='like = { n = "prefix" }',
        ),
        "[packs.shop] tools[0] like.n: the parameter's type is 'integer'; like applies to string parameters only",
    ),
    "like parameter unused": (
        tool("SELECT id FROM orders", extra='like = { order_id = "contains" }'),
        "[packs.shop] tools[0] like.order_id: the statement does not use :order_id; write `column LIKE :order_id "
        "ESCAPE '\\'`",
    ),
    "like without ESCAPE": (
        tool("SELECT id FROM orders WHERE id LIKE :order_id", extra='like = { order_id = "contains" }'),
        "[packs.shop] tools[0] like.order_id: every use of :order_id must be a LIKE pattern followed by ESCAPE '\\'",
    ),
    "like with another escape": (
        tool("SELECT id FROM orders WHERE id LIKE :order_id ESCAPE '!'", extra='like = { order_id = "contains" }'),
        "[packs.shop] tools[0] like.order_id: every use of :order_id must be a LIKE pattern",
    ),
    "like parameter also compared": (
        tool(
            "SELECT id FROM orders WHERE id LIKE :order_id ESCAPE '\\\\' OR status = :order_id",
            extra='like = { order_id = "exact" }',
        ),
        "[packs.shop] tools[0] like.order_id: every use of :order_id must be a LIKE pattern",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_mistakes_are_located(qaqnuz_kernel, case):
    tools, expected = CASES[case]
    found = await problems(qaqnuz_kernel, config('dsn = "sqlite:///shop.db"', tools))
    assert any(p.startswith(expected) for p in found), found


async def test_all_problems_are_reported_together(qaqnuz_kernel):
    text = config(
        'dsn = "sqlite:///shop.db"\nstatement_timeout = "forever"',
        tool("SELECT :nope") + tool("DELETE FROM orders").replace('name = "t"', 'name = "t2"'),
    )
    found = await problems(qaqnuz_kernel, text)
    assert any(p.startswith("[packs.shop] statement_timeout:") for p in found)
    assert any(p.startswith("[packs.shop] tools[0] sql: placeholder :nope") for p in found)
    assert any(p.startswith("[packs.shop] tools[1] sql: a read tool") for p in found)


async def test_duplicate_tool_names_name_both_positions(qaqnuz_kernel):
    found = await problems(qaqnuz_kernel, config('dsn = "sqlite:///shop.db"', STATUS_TOOL + STATUS_TOOL))
    assert any("tools[1] name: 'get_order_status' is already used by" in p and "tools[0]" in p for p in found)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("mysql://admin:hunter22@db.internal/shop", "[packs.shop] dsn: unsupported scheme 'mysql'"),
        ("shop.db", "[packs.shop] dsn: unsupported scheme ''"),
        ("sqlite://shop.db", "[packs.shop] dsn: write sqlite:///relative/path.db"),
        ("sqlite:///:memory:", "[packs.shop] dsn: SQLite needs a database file path"),
        ("postgresql://admin:hunter22@db.internal/shop?bogus_option=1", "[packs.shop] dsn: not a valid PostgreSQL"),
    ],
)
async def test_bad_dsn_is_located_and_never_echoed(qaqnuz_kernel, dsn, expected):
    found = await problems(qaqnuz_kernel, config(f'dsn = "{dsn}"'))
    assert any(p.startswith(expected) for p in found), found
    assert not any("hunter22" in p or "db.internal" in p for p in found)


async def test_inline_password_dsn_loads_without_connecting(qaqnuz_kernel):
    """The pool opens on first use, so a server that is not there yet does not stop startup."""
    kernel = await qaqnuz_kernel(
        config('dsn = "postgresql://shop:pa55word@127.0.0.1:1/shop"'), plugins=[qaqnuz_pack_sql]
    )
    assert "get_order_status" in kernel.registry.snapshot.tools


async def test_secret_ref_dsn_from_env_and_file(qaqnuz_kernel, qaqnuz_client, tmp_path, monkeypatch):
    from qaqnuz_demo import shop as demo_shop

    demo_shop.create(tmp_path / "data" / "shop.db")
    monkeypatch.setenv("SHOP_DSN", "sqlite:///data/shop.db")
    (tmp_path / "dsn.txt").write_text("sqlite:///data/shop.db\n")
    text = config('dsn = { env = "SHOP_DSN" }').replace(
        'roles = { viewer = ["orders.read"] }',
        'roles = { viewer = ["orders.read"] }\ntools.get_order_status = { exposable = true }',
    )
    for variant in (text, text.replace('{ env = "SHOP_DSN" }', '{ file = "dsn.txt" }')):
        kernel = await qaqnuz_kernel(variant, plugins=[qaqnuz_pack_sql])
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name=f"k{id(variant)}")
        async with qaqnuz_client(kernel, key) as client:
            result = await client.call_tool("get_order_status", {"order_id": "ord_1001"})
        assert result.structured_content["data"][0]["id"] == "ord_1001"


async def test_missing_secret_is_located(qaqnuz_kernel, monkeypatch):
    monkeypatch.delenv("NO_SUCH_DSN", raising=False)
    found = await problems(qaqnuz_kernel, config('dsn = { env = "NO_SUCH_DSN" }'))
    assert any(p.startswith("[packs.shop] dsn: environment variable NO_SUCH_DSN is not set") for p in found)


async def test_plain_settings_keys_are_checked(qaqnuz_kernel):
    found = await problems(qaqnuz_kernel, config('dsn = "sqlite:///shop.db"\npool_size = 3'))
    assert any(p.startswith("[packs.shop] pool_size: unknown key") for p in found), found
