"""The placeholder scanner: what each dialect's driver receives, and which statements are refused."""

from __future__ import annotations

import re

import pytest

from qaqnuz_pack_sql import SqlTextError, prepare

PG = [
    ("SELECT * FROM t WHERE a = :a AND b = :b", "SELECT * FROM t WHERE a = %(a)s AND b = %(b)s", ("a", "b")),
    ("SELECT :a, :a", "SELECT %(a)s, %(a)s", ("a",)),
    ("SELECT x::text, :a::int", "SELECT x::text, %(a)s::int", ("a",)),
    ("SELECT ':a', \":a\"", "SELECT ':a', \":a\"", ()),
    ("SELECT 'it''s :a'", "SELECT 'it''s :a'", ()),
    ("SELECT E'it\\'s :a', :b", "SELECT E'it\\'s :a', %(b)s", ("b",)),
    ("SELECT $$ :a ' $$, $tag$ :b $$ $tag$", "SELECT $$ :a ' $$, $tag$ :b $$ $tag$", ()),
    ("SELECT 1 -- :a\n, 2 /* :b /* :c */ :d */", "SELECT 1 -- :a\n, 2 /* :b /* :c */ :d */", ()),
    ("SELECT '100%' LIKE :p", "SELECT '100%%' LIKE %(p)s", ("p",)),
    ("SELECT 5 % 3 -- 50%", "SELECT 5 %% 3 -- 50%%", ()),
    ("SELECT f(a := 1)", "SELECT f(a := 1)", ()),
    ("SELECT a$b, :c;  -- trailing", "SELECT a$b, %(c)s  -- trailing", ("c",)),
]

SQLITE = [
    ("SELECT * FROM t WHERE a = :a", "SELECT * FROM t WHERE a = :a", ("a",)),
    ("SELECT '100%', :p", "SELECT '100%', :p", ("p",)),
    ('SELECT [odd :x], `odd :y`, ":z"', 'SELECT [odd :x], `odd :y`, ":z"', ()),
    ("SELECT 1 /* :a /* */ , :b", "SELECT 1 /* :a /* */ , :b", ("b",)),
]


@pytest.mark.parametrize(("sql", "text", "names"), PG)
def test_postgresql_translation(sql, text, names):
    statement = prepare(sql, "postgresql")
    assert (statement.text, statement.names) == (text, names)


@pytest.mark.parametrize(("sql", "text", "names"), SQLITE)
def test_sqlite_keeps_named_style(sql, text, names):
    statement = prepare(sql, "sqlite")
    assert (statement.text, statement.names) == (text, names)


@pytest.mark.parametrize(
    ("sql", "keyword", "is_query"),
    [
        ("  /* c */ (SELECT 1)", "SELECT", True),
        ("with x as (select 1) select * from x", "WITH", True),
        ("VALUES (1)", "VALUES", True),
        ("-- note\nINSERT INTO t VALUES (:a)", "INSERT", False),
        ("update t set a = 1", "UPDATE", False),
    ],
)
def test_first_keyword(sql, keyword, is_query):
    for dialect in ("sqlite", "postgresql"):
        statement = prepare(sql, dialect)
        assert (statement.keyword, statement.is_query) == (keyword, is_query)


@pytest.mark.parametrize(
    ("sql", "dialect", "message"),
    [
        ("SELECT 1; SELECT 2", "sqlite", "one statement only"),
        ("SELECT 1; DROP TABLE t", "postgresql", "one statement only"),
        ("SELECT ';'; SELECT 2", "postgresql", "one statement only"),
        ("SELECT * FROM t WHERE a = ?", "sqlite", "positional parameters (?)"),
        ("SELECT * FROM t WHERE a = $1", "postgresql", "positional parameters ($1)"),
        ("SELECT @a", "sqlite", "'@name' parameters"),
        ("SELECT $a", "sqlite", "'$name' parameters"),
        ("SELECT 'open", "postgresql", "unterminated string literal"),
        ('SELECT "open', "sqlite", "unterminated quoted identifier"),
        ("SELECT $$ open", "postgresql", "unterminated dollar-quoted string"),
        ("SELECT 1 /* open", "sqlite", "unterminated /* comment */"),
        ("SELECT 1 /* a /* b */", "postgresql", "unterminated /* comment */"),
        ("   ", "sqlite", "empty statement"),
        ("; -- x", "postgresql", "empty statement"),
    ],
)
def test_refused(sql, dialect, message):
    with pytest.raises(SqlTextError, match=re.escape(message)):
        prepare(sql, dialect)


def test_comments_and_semicolon_at_the_end_are_fine():
    assert prepare("SELECT 1;\n-- done\n/* really */\n", "sqlite").text.startswith("SELECT 1")
