"""Reading a configured SQL statement once, at load: its `:name` placeholders, its first keyword, and the
text the driver gets.

The scanner knows just enough SQL to find placeholders safely: it skips string literals (with `''` and, on
PostgreSQL, `E'..'` backslash escapes and `$tag$..$tag$` dollar quotes), quoted identifiers, `--` and
`/* */` comments (nested on PostgreSQL) and `::` casts. Outside those, `:name` is a placeholder.

- SQLite keeps `:name` (sqlite3's named style) and binds a dict.
- PostgreSQL gets psycopg's `%(name)s`, and every literal `%` anywhere in the text is doubled, because psycopg
  reads `%` in the whole query text, inside literals and comments too.

Values are never written into the text: the driver binds them.

The scan also keeps the statement's tokens (comments and whitespace left out), so the pack can check at load
how a parameter is used in a `LIKE` pattern (`like_patterns`) without a SQL parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

_IDENT_START = re.compile(r"[A-Za-z_]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_POSITIONAL_PG = re.compile(r"\$[0-9]+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

READ_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES"})

#: A token: ("word" | "ident" | "string" | "estring" | "param" | "punct", its source text; a param's name).
Token = tuple[str, str]


class SqlTextError(ValueError):
    """A statement the pack will not run; the message never repeats the SQL."""


@dataclass(frozen=True)
class Statement:
    text: str  # what the driver receives
    names: tuple[str, ...]  # placeholder names, each once, in order of first use
    keyword: str  # the first keyword, upper case ("SELECT", "WITH", "INSERT", ...)
    tokens: tuple[Token, ...] = ()  # the source's tokens, without comments and whitespace

    @property
    def is_query(self) -> bool:
        return self.keyword in READ_KEYWORDS


def _ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def prepare(sql: str, dialect: Dialect) -> Statement:
    """Scan `sql` once; raises SqlTextError for more than one statement, positional placeholders,
    unterminated literals or comments, and an empty statement."""
    pg = dialect == "postgresql"
    out: list[str] = []
    names: list[str] = []
    tokens: list[Token] = []
    keyword = ""
    i, n = 0, len(sql)
    ended = False  # a top-level ';' was seen: only whitespace and comments may follow

    def emit(chunk: str) -> None:
        out.append(chunk.replace("%", "%%") if pg else chunk)

    while i < n:
        ch = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if ch.isspace():
            emit(ch)
            i += 1
            continue
        if ch == "-" and nxt == "-":
            end = sql.find("\n", i)
            end = n if end < 0 else end
            emit(sql[i:end])
            i = end
            continue
        if ch == "/" and nxt == "*":
            end = _block_comment_end(sql, i, nested=pg)
            emit(sql[i:end])
            i = end
            continue
        if ended:
            raise SqlTextError("one statement only: nothing but comments may follow ';'")
        if ch == ";":
            ended = True
            i += 1
            continue
        if ch == "'":
            backslashes = pg and i > 0 and sql[i - 1] in "eE" and (i < 2 or not _ident_char(sql[i - 2]))
            end = _quoted_end(sql, i, "'", backslashes=backslashes)
            if backslashes:
                tokens.pop()  # the E that opened it: E'..' is one token
            tokens.append(("estring" if backslashes else "string", sql[i:end]))
            emit(sql[i:end])
            i = end
            continue
        if ch == '"' or (not pg and ch == "`"):
            end = _quoted_end(sql, i, ch, backslashes=False)
            tokens.append(("ident", sql[i:end]))
            emit(sql[i:end])
            i = end
            continue
        if not pg and ch == "[":
            end = sql.find("]", i + 1)
            if end < 0:
                raise SqlTextError("unterminated [identifier]")
            tokens.append(("ident", sql[i : end + 1]))
            emit(sql[i : end + 1])
            i = end + 1
            continue
        if ch == "$":
            previous = sql[i - 1] if i > 0 else ""
            if pg and not _ident_char(previous):
                tag = _DOLLAR_TAG.match(sql, i)
                if tag:
                    close = sql.find(tag.group(0), tag.end())
                    if close < 0:
                        raise SqlTextError("unterminated dollar-quoted string")
                    end = close + len(tag.group(0))
                    tokens.append(("string", sql[i:end]))
                    emit(sql[i:end])
                    i = end
                    continue
                if _POSITIONAL_PG.match(sql, i):
                    raise SqlTextError("positional parameters ($1) are not supported; write :name")
            if not pg and _IDENT_START.match(nxt):
                raise SqlTextError("'$name' parameters are not supported; write :name")
            tokens.append(("punct", ch))
            emit(ch)
            i += 1
            continue
        if ch == ":":
            if nxt == ":":
                tokens.append(("punct", "::"))
                emit("::")
                i += 2
                continue
            match = _NAME.match(sql, i + 1)
            if match:
                name = match.group(0)
                if name not in names:
                    names.append(name)
                tokens.append(("param", name))
                out.append(f"%({name})s" if pg else f":{name}")
                i = match.end()
                continue
            tokens.append(("punct", ch))
            emit(ch)
            i += 1
            continue
        if not pg and ch == "?":
            raise SqlTextError("positional parameters (?) are not supported; write :name")
        if not pg and ch == "@" and _IDENT_START.match(nxt):
            raise SqlTextError("'@name' parameters are not supported; write :name")
        word = _WORD.match(sql, i) if _IDENT_START.match(ch) else None
        if word:
            if not keyword:
                keyword = word.group(0).upper()
            tokens.append(("word", word.group(0)))
            emit(word.group(0))
            i = word.end()
            continue
        tokens.append(("punct", ch))
        emit(ch)
        i += 1
    if not keyword:
        raise SqlTextError("empty statement")
    return Statement(text="".join(out).strip(), names=tuple(names), keyword=keyword, tokens=tuple(tokens))


def _quoted_end(sql: str, start: int, quote: str, *, backslashes: bool) -> int:
    """Index just past the literal or quoted identifier opened at `start` (doubled quotes escape)."""
    i, n = start + 1, len(sql)
    while i < n:
        ch = sql[i]
        if backslashes and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    kind = "string literal" if quote == "'" else "quoted identifier"
    raise SqlTextError(f"unterminated {kind}")


def _block_comment_end(sql: str, start: int, *, nested: bool) -> int:
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth = depth + 1 if nested or depth == 0 else depth
            i += 2
            continue
        if sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
            continue
        i += 1
    raise SqlTextError("unterminated /* comment */")


# -- LIKE patterns -------------------------------------------------------------------------------------------
_LIKE = frozenset({"LIKE", "ILIKE"})
#: Words that end a LIKE pattern's expression (outside parentheses): the next clause or operator begins.
_PATTERN_ENDS = frozenset(
    {
        "ESCAPE", "AND", "OR", "NOT", "IS", "IN", "BETWEEN", "LIKE", "ILIKE", "GLOB", "MATCH", "REGEXP",
        "SIMILAR", "CASE", "WHEN", "THEN", "ELSE", "END", "AS", "FROM", "WHERE", "ON", "USING", "JOIN", "INNER",
        "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "ORDER", "GROUP", "HAVING", "LIMIT", "OFFSET", "FETCH",
        "FOR", "UNION", "INTERSECT", "EXCEPT", "RETURNING", "WINDOW", "ASC", "DESC", "NULLS", "SET", "VALUES",
        "SELECT", "WITH",
    }
)  # fmt: skip
#: Punctuation that keeps a pattern's expression going: concatenation, arithmetic, numbers, casts.
_PATTERN_GOES_ON = frozenset("|+-*/%.0123456789") | {"::"}


@dataclass(frozen=True)
class LikePattern:
    """The expression right of one `LIKE`/`ILIKE`, up to where it ends, and its `ESCAPE` character."""

    params: tuple[int, ...]  # token indexes of the placeholders inside the pattern
    escape: str | None  # the ESCAPE literal's value, or None without ESCAPE
    wildcard_literal: bool  # a string literal inside the pattern holds `%` (as in `'%' || :q || '%'`)


def literal_value(token: Token) -> str:
    """The value of a string token (`'it''s'`, `E'\\\\'`, `$$..$$`), as the database reads it."""
    kind, raw = token
    if raw.startswith("$"):
        tag = raw[: raw.index("$", 1) + 1]
        return raw[len(tag) : -len(tag)]
    body = raw[1:-1]
    if kind == "estring":
        body = re.sub(r"\\(.)", r"\1", body)
    return body.replace("''", "'")


def like_patterns(statement: Statement) -> tuple[LikePattern, ...]:
    """Every LIKE pattern of the statement, found from its tokens.

    Not a parser: a pattern runs from its `LIKE` to the first word that starts another clause or operator
    (`ESCAPE`, `AND`, `ORDER` ...), comparison or comma outside its own parentheses. That is enough to tell
    `lower(name) LIKE lower(:q) ESCAPE '\\'` (a bound pattern with its escape) from `'%' || :q || '%'` (a
    pattern built around an argument whose own `%` and `_` stay wildcards).
    """
    tokens = statement.tokens
    found: list[LikePattern] = []
    for start, (kind, text) in enumerate(tokens):
        if kind != "word" or text.upper() not in _LIKE:
            continue
        end, depth = start + 1, 0
        while end < len(tokens):
            kind, text = tokens[end]
            if kind == "punct" and text == "(":
                depth += 1
            elif kind == "punct" and text == ")":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and (
                (kind == "punct" and text not in _PATTERN_GOES_ON) or (kind == "word" and text.upper() in _PATTERN_ENDS)
            ):
                break
            end += 1
        escape = None
        if end + 1 < len(tokens) and tokens[end][0] == "word" and tokens[end][1].upper() == "ESCAPE":
            if tokens[end + 1][0] in ("string", "estring"):
                escape = literal_value(tokens[end + 1])
        inside = range(start + 1, end)
        found.append(
            LikePattern(
                params=tuple(i for i in inside if tokens[i][0] == "param"),
                escape=escape,
                wildcard_literal=any(
                    tokens[i][0] in ("string", "estring") and "%" in literal_value(tokens[i]) for i in inside
                ),
            )
        )
    return tuple(found)
