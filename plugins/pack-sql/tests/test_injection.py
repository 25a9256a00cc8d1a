"""SQL injection is inert in every argument position of every demo tool, on SQLite and PostgreSQL.

Table-driven: each argument position (below) is tried with every string in INJECTIONS. A position that takes a
string sends it to the database (the order-id pattern is removed so the value really reaches SQL); a typed
position (integer, number, enum) must refuse it at validation. Afterwards no extra rows came back, every table
is intact and row counts changed only by the legitimate inserts of `create_order`, which store the string
verbatim.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio

INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "1; DROP TABLE orders; --",
    "x'); DELETE FROM orders; --",
    "ord_1001' OR 'a'='a",
    "ord_1001'; UPDATE orders SET status = 'refunded'; --",
    "' UNION SELECT name, email FROM contacts --",
    '" OR ""="',
    "*/ OR 1=1 /*",
    "%(x)s",
    "%s",
    "%%",
    "%' OR '%'='",
    ":other",
    ":order_id",
    "::text",
    "$1",
    "$$; DROP TABLE order_items; $$",
    "\u2019 OR \u20181\u2019=\u20181",  # typographic quotes
    "\u02bc; DROP TABLE contacts; --",  # modifier letter apostrophe
    "\uff07 OR 1=1 --",  # fullwidth apostrophe
    "\\",
    "\\' OR 1=1 --",
    "\\\\'; DELETE FROM orders; --",
    "E'\\x27' OR TRUE",
    "Robert'); DROP TABLE order_items;--",
]

# (tool, argument, other arguments, whether the argument is a free string that reaches the database)
POSITIONS = {
    "get_order_status.order_id": ("get_order_status", "order_id", {}, True),
    "search_contacts.query": ("search_contacts", "query", {"limit": 50}, True),
    "search_contacts.limit": ("search_contacts", "limit", {"query": "a"}, False),
    "create_order.reference": ("create_order", "reference", {"contact_id": 3, "total": 10}, True),
    "create_order.contact_id": ("create_order", "contact_id", {"total": 10}, False),
    "create_order.total": ("create_order", "total", {"contact_id": 3}, False),
    "create_order.currency": ("create_order", "currency", {"contact_id": 3, "total": 10}, False),
}

CONTACTS = "SELECT id, name, company FROM contacts ORDER BY name, id"


def literal_search(target, value: str, limit: int) -> list[int]:
    """What `search_contacts` must find: the contacts whose name or company holds the value as text (its
    `like = { query = "contains" }`), in the database's own order, computed here rather than by LIKE."""
    needle = value.lower()
    rows = target.rows(CONTACTS)
    return [cid for cid, name, company in rows if needle in name.lower() or needle in company.lower()][:limit]


@pytest.mark.parametrize("position", sorted(POSITIONS))
async def test_injection_strings_are_inert(shop_target, start_shop, qaqnuz_client, position):
    tool, argument, others, reaches_db = POSITIONS[position]
    config = shop_target.config().replace(', pattern = "^ord_[0-9]{1,12}$"', "", 1)
    assert "pattern" not in config
    kernel, key = await start_shop(shop_target, config=config)
    before = shop_target.counts()
    statuses = shop_target.rows("SELECT id, status FROM orders ORDER BY id")
    inserted = 0
    async with qaqnuz_client(kernel, key) as client:
        for value in INJECTIONS:
            result = await client.call_tool(tool, {**others, argument: value})
            answer = result.structured_content
            if not reaches_db:
                assert answer["ok"] is False and answer["error_class"] == "validation", (value, answer)
                continue
            assert answer["ok"] is True, (value, answer)
            if tool == "get_order_status":
                assert answer["data"] is None, value  # no row has that id: nothing extra comes back
            elif tool == "search_contacts":
                # the value is only text: not SQL, and not a LIKE pattern either (its % and _ match
                # themselves), so no contact, which holds none of these strings, comes back
                expected = literal_search(shop_target, value, 50)
                assert [row["contact_id"] for row in answer["data"]] == expected, value
                assert answer["data"] == [], value
            else:
                inserted += 1
                assert answer["data"]["rowcount"] == 1, value
                order_id = answer["data"]["rows"][0]["order_id"]
                assert order_id.startswith("ord_"), value
                stored = shop_target.rows(f"SELECT reference, contact_id FROM orders WHERE id = '{order_id}'")
                assert stored == [(value, 3)], value  # bound as data, stored verbatim
        # the tools still work normally afterwards
        ok = await client.call_tool("get_order_status", {"order_id": "ord_1001"})
        assert ok.structured_content["data"]["order_id"] == "ord_1001"
    assert shop_target.counts() == {**before, "orders": before["orders"] + inserted}
    assert shop_target.rows("SELECT id, status FROM orders ORDER BY id")[: len(statuses)] == statuses
    assert inserted == (len(INJECTIONS) if position == "create_order.reference" else 0)


async def test_extra_argument_names_are_refused(shop_target, start_shop, qaqnuz_client):
    """Arguments that are not input parameters never reach the statement (the schema is closed)."""
    kernel, key = await start_shop(shop_target)
    before = shop_target.counts()
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool(
            "get_order_status", {"order_id": "ord_1001", "other": "x'); DELETE FROM orders; --"}
        )
    assert result.structured_content["error_class"] == "validation"
    assert shop_target.counts() == before
