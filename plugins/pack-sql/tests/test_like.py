"""`like = { param = mode }`: an argument inside a LIKE pattern is matched as text, on SQLite and PostgreSQL.

Without it a caller's `%` and `_` are LIKE wildcards (an argument `%` matches every row). Every expectation
here is computed in Python from the rows themselves (plain substring, prefix, suffix and equality tests on
lower-cased text), never by the database, so the pack's escaping is checked against an independent answer.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qaqnuz_pack_sql
from qaqnuz_pack_sql.sqltext import like_patterns, prepare
from qaqnuz_pack_sql.values import like_pattern

pytestmark = pytest.mark.anyio

ROWS = [
    (1, "100% cotton"),
    (2, "100 percent wool"),
    (3, "snake_case"),
    (4, "snakeXcase"),
    (5, "back\\slash"),
    (6, "backslash"),
    (7, "Acme Corp"),
    (8, "50%"),
    (9, "%start"),
    (10, "a\\%b"),
    (11, "a%b"),
    (12, "a_b"),
    (13, "axb"),
]

HEAD = """
[brands.acme]
plan = "growth"
roles = { viewer = ["items.read"] }
tools.contains = { exposable = true }
tools.prefix = { exposable = true }
tools.suffix = { exposable = true }
tools.exact = { exposable = true }
tools.optional = { exposable = true }
tools.unescaped = { exposable = true }

[packs.items]
type = "sql"
"""

# Literal TOML strings ('''...''') keep the SQL's one backslash as it is: ESCAPE '\'.
MODE_TOOL = r"""
[[packs.items.tools]]
name = "MODE"
description = "Items whose name matches the text (MODE)."
scope = "items.read"
like = { q = "MODE" }
sql = '''SELECT id FROM items WHERE lower(name) LIKE lower(:q) ESCAPE '\' ORDER BY id'''
input = { q = { type = "string", max_length = 40 } }
"""

OTHER_TOOLS = r"""
[[packs.items.tools]]
name = "optional"
description = "Left out, the text is NULL and nothing matches."
scope = "items.read"
like = { q = "contains" }
sql = '''SELECT id FROM items WHERE name LIKE :q ESCAPE '\' ORDER BY id'''
input = { q = { type = "string", required = false } }

[[packs.items.tools]]
name = "unescaped"
description = "The pattern this setting replaces: the argument's own % and _ stay wildcards."
scope = "items.read"
sql = '''SELECT id FROM items WHERE lower(name) LIKE '%' || lower(:q) || '%' ORDER BY id'''
input = { q = { type = "string" } }
"""


def config(dsn_line: str) -> str:
    modes = "".join(MODE_TOOL.replace("MODE", mode) for mode in ("contains", "prefix", "suffix", "exact"))
    return HEAD + dsn_line + "\n" + modes + OTHER_TOOLS


MATCHES: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda name, q: q in name,
    "prefix": lambda name, q: name.startswith(q),
    "suffix": lambda name, q: name.endswith(q),
    "exact": lambda name, q: name == q,
}

QUERIES = ["%", "_", "\\", "\\%", "%%", "0%", "a%b", "a_b", "a\\%b", "snake_", "_case", "%start", "acme", "ACME", ""]


def expected(mode: str, q: str) -> list[int]:
    return [i for i, name in ROWS if MATCHES[mode](name.lower(), q.lower())]


_numbers = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def items_dsn(request, tmp_path: Path) -> Iterator[str]:
    """A `dsn = ...` line for a fresh `items` table on either database."""
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "items.db")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.executemany("INSERT INTO items (id, name) VALUES (?, ?)", ROWS)
        conn.commit()
        conn.close()
        yield 'dsn = "sqlite:///items.db"'
        return
    server = request.getfixturevalue("pg_server")
    name = f"items_{os.getpid()}_{next(_numbers)}"
    with server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with server.connect(name) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)", ROWS)
    yield f'dsn = "{server.dsn(name)}"'
    with server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def items_client(items_dsn, qaqnuz_kernel, qaqnuz_client):
    kernel = await qaqnuz_kernel(config(items_dsn), plugins=[qaqnuz_pack_sql])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["items.read"], name="like-test")
    async with qaqnuz_client(kernel, key) as client:

        async def ids(tool: str, arguments: dict) -> list[int]:
            answer = (await client.call_tool(tool, arguments)).structured_content
            assert answer["ok"] is True, answer
            return [row["id"] for row in answer["data"]]

        yield ids


async def test_every_mode_matches_the_argument_as_text(items_client):
    for mode in MATCHES:
        for q in QUERIES:
            assert await items_client(mode, {"q": q}) == expected(mode, q), (mode, q)


async def test_a_percent_sign_finds_only_rows_that_hold_one(items_client):
    """The measured defect: `%` alone matched every row."""
    assert await items_client("contains", {"q": "%"}) == [1, 8, 9, 10, 11]
    assert await items_client("contains", {"q": "_"}) == [3, 12]
    assert await items_client("contains", {"q": "\\"}) == [5, 10]
    assert await items_client("contains", {"q": "cotton"}) == [1]  # an ordinary search still works
    assert await items_client("prefix", {"q": "snake"}) == [3, 4]
    # what the setting replaces: the same text concatenated into the pattern is a wildcard
    assert await items_client("unescaped", {"q": "%"}) == [i for i, _ in ROWS]


async def test_a_left_out_optional_argument_is_null_and_matches_nothing(items_client):
    assert await items_client("optional", {}) == []
    assert await items_client("optional", {"q": "%"}) == [1, 8, 9, 10, 11]


def test_the_bound_pattern():
    assert like_pattern("50%_\\", "contains") == "%50\\%\\_\\\\%"
    assert like_pattern("a", "prefix") == "a%"
    assert like_pattern("a", "suffix") == "%a"
    assert like_pattern("a%", "exact") == "a\\%"
    assert like_pattern(None, "contains") is None


@pytest.mark.parametrize(
    ("sql", "dialect", "escapes"),
    [
        ("SELECT 1 FROM t WHERE lower(a) LIKE lower(:q) ESCAPE '\\' AND b = :q", "sqlite", ["\\"]),
        ("SELECT 1 FROM t WHERE a ILIKE :q ESCAPE E'\\\\' ORDER BY a", "postgresql", ["\\"]),
        ("SELECT 1 FROM t WHERE a NOT LIKE :q ESCAPE '!' OR b LIKE :q", "sqlite", ["!", None]),
        ("SELECT 1 FROM t WHERE a LIKE '%' || :q || '%' LIMIT :n", "postgresql", [None]),
    ],
)
def test_patterns_are_found_with_their_escape(sql, dialect, escapes):
    statement = prepare(sql, dialect)
    patterns = like_patterns(statement)
    assert [p.escape for p in patterns] == escapes
    for pattern in patterns:  # each pattern holds one :q and never the placeholders of other clauses
        assert [statement.tokens[i] for i in pattern.params] == [("param", "q")]


WARNED = '''
[packs.items]
type = "sql"
dsn = "sqlite:///items.db"

[[packs.items.tools]]
name = "t"
description = "A tool."
scope = "items.read"
{like}
sql = """SELECT id FROM items WHERE name LIKE {pattern} AND name LIKE :brand || '%' ORDER BY id"""
input = {{ q = {{ type = "string" }} }}
'''


@pytest.mark.parametrize(
    ("pattern", "like", "warned"),
    [
        ("'%' || :q || '%'", "", True),
        ("concat(:q, '%')", "", True),
        (":q", "", False),  # a pattern taken whole from the caller may be meant
        ("lower(:q) ESCAPE '\\\\'", 'like = { q = "contains" }', False),
    ],
)
async def test_an_argument_joined_into_a_pattern_is_warned_about(
    qaqnuz_kernel, tmp_path, caplog, pattern, like, warned
):
    sqlite3.connect(tmp_path / "items.db").close()
    with caplog.at_level(logging.WARNING):
        await qaqnuz_kernel(WARNED.format(pattern=pattern, like=like), plugins=[qaqnuz_pack_sql])
    messages = [r.getMessage() for r in caplog.records if "LIKE pattern" in r.getMessage()]
    if not warned:
        assert messages == []
        return
    assert messages, caplog.text
    assert messages[0].startswith("[packs.items] tools[0] sql: :q is joined into a LIKE pattern with '%'")
    assert 'like = { q = "contains" }' in messages[0]
    assert not any(":brand" in m for m in messages)  # the caller's own names are not arguments
