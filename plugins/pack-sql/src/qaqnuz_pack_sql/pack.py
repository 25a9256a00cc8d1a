"""The `sql` tool provider: settings, load-time checks, and the pack that runs configured statements."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from qaqnuz import (
    ConfigError,
    ProviderContext,
    SecretRef,
    SideEffect,
    Tool,
    ToolConfig,
    input_schema,
    parse_positive_duration,
    tool_from_config,
    unique_names,
)

from .backends import Limits, PostgresBackend, SqliteBackend
from .sqltext import SqlTextError, Statement, prepare


class SqlToolConfig(ToolConfig, forbid_unknown_fields=True, kw_only=True):
    """One `[[packs.<pack>.tools]]` entry: the shared tool fields plus one SQL statement."""

    sql: str
    one: bool = False


class SqlSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<pack>]` keys besides `type = "sql"`."""

    dsn: str | SecretRef
    tools: list[SqlToolConfig] = []
    statement_timeout: str = "30s"
    busy_timeout: str = "5s"
    max_rows: int = 1000
    pool_min_size: int = 1
    pool_max_size: int = 5
    pool_timeout: str = "5s"
    create: Literal["demo-shop"] | None = None


def _seconds(text: str, where: str, problems: list[str]) -> float:
    try:
        return parse_positive_duration(text)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return 1.0


def _where(settings: SqlSettings, ctx: ProviderContext) -> str:
    """`[packs.<name>]` for error locations."""
    return f"[{ctx.section}]" if ctx.section else "[packs (type sql)]"


def _backend(settings: SqlSettings, ctx: ProviderContext, where: str, limits: Limits, problems: list[str]) -> Any:
    if isinstance(settings.dsn, SecretRef):
        dsn = ctx.secret(settings.dsn, f"{where} dsn").reveal()
    else:
        dsn = settings.dsn
    scheme = dsn.split(":", 1)[0].lower() if ":" in dsn else ""
    if scheme == "sqlite":
        if not dsn.startswith("sqlite:///") or len(dsn) <= len("sqlite:///"):
            problems.append(f"{where} dsn: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
            return None
        raw_path = dsn[len("sqlite:///") :]
        if raw_path == ":memory:" or raw_path.startswith("file:") or "?" in raw_path:
            problems.append(f"{where} dsn: SQLite needs a database file path (no :memory:, URI or query string)")
            return None
        path = ctx.resolve(str(Path(raw_path)))
        if settings.create is not None and not _create_demo_shop(Path(path), where, problems):
            return None
        return SqliteBackend(path, limits)
    if settings.create is not None:
        problems.append(f'{where} create: only for SQLite files (dsn = "sqlite:///shop.db")')
        return None
    if scheme in ("postgresql", "postgres"):
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(dsn)
        except Exception:
            problems.append(f"{where} dsn: not a valid PostgreSQL connection URI")  # never echo the DSN
            return None
        if settings.pool_min_size < 0 or settings.pool_max_size < 1 or settings.pool_min_size > settings.pool_max_size:
            problems.append(f"{where} pool_min_size/pool_max_size: need 0 <= pool_min_size <= pool_max_size, >= 1")
            return None
        pool_timeout = _seconds(settings.pool_timeout, f"{where} pool_timeout", problems)
        return PostgresBackend(
            dsn,
            limits,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            pool_timeout_s=pool_timeout,
        )
    shown = scheme if re.fullmatch(r"[a-z0-9+.-]{0,20}", scheme) else "?"
    problems.append(f"{where} dsn: unsupported scheme {shown!r}; use sqlite:///path.db or postgresql://...")
    return None


def _create_demo_shop(path: Path, where: str, problems: list[str]) -> bool:
    """`create = "demo-shop"`: generate the demo shop at `path` when no file is there; never replace one.

    The database is built under a temporary name and linked into place, so a reader (or a second server
    starting at the same moment) never sees half a shop.
    """
    if path.exists():
        return True
    from . import demo_shop

    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        demo_shop.create(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the same shop
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(temporary, path)
    except (OSError, sqlite3.Error) as exc:
        problems.append(f"{where} create: could not create the demo shop database ({type(exc).__name__})")
        return False
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(f"{temporary}{suffix}").unlink()
    return True


class SqlPack:
    """The tools of one `[packs.<pack>] type = "sql"` table. Tools are fixed at load: a config edit rebuilds
    the pack (the kernel reloads it), so `list_tools` just returns them."""

    def __init__(self, tools: list[Tool], backend: Any) -> None:
        self._tools = tools
        self.backend = backend

    async def list_tools(self) -> list[Tool]:
        return list(self._tools)

    async def aclose(self) -> None:
        await self.backend.aclose()


def _handler(backend: Any, statement: Statement, defaults: Mapping[str, Any], *, read: bool, one: bool) -> Any:
    async def run(arguments: Mapping[str, Any]) -> Any:
        # Only placeholder names are bound, only from validated arguments (or their schema defaults).
        params = {name: arguments.get(name, defaults.get(name)) for name in statement.names}
        return await backend.run(statement, params, read=read, one=one)

    return run


def build(settings: SqlSettings, ctx: ProviderContext) -> SqlPack:
    """The factory: every check happens here, at load, and all problems are reported together."""
    where = _where(settings, ctx)
    problems: list[str] = []
    limits = Limits(
        statement_timeout_s=_seconds(settings.statement_timeout, f"{where} statement_timeout", problems),
        busy_timeout_s=_seconds(settings.busy_timeout, f"{where} busy_timeout", problems),
        max_rows=settings.max_rows,
    )
    if settings.max_rows < 1:
        problems.append(f"{where} max_rows: at least 1")
    try:
        backend = _backend(settings, ctx, where, limits, problems)
    except ConfigError as exc:  # a missing secret
        problems.extend(exc.problems)
        backend = None
    if not settings.tools:
        problems.append(f"{where} tools: configure at least one [[packs.<pack>.tools]] entry")
    try:
        unique_names(list(settings.tools), where)
    except ConfigError as exc:
        problems.extend(exc.problems)
    dialect = backend.dialect if backend is not None else "sqlite"
    tools: list[Tool] = []
    for index, tool in enumerate(settings.tools):
        at = f"{where} tools[{index}]"
        try:
            tools.append(_tool(tool, at, backend, dialect))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return SqlPack(tools, backend)


def _tool(tool: SqlToolConfig, at: str, backend: Any, dialect: Any) -> Tool:
    problems: list[str] = []
    try:
        statement = prepare(tool.sql, dialect)
    except SqlTextError as exc:
        raise ConfigError([f"{at} sql: {exc}"]) from None
    schema = input_schema(tool, at)
    properties = schema.get("properties") or {}
    for name in statement.names:
        if name not in properties:
            known = ", ".join(sorted(properties)) or "none"
            problems.append(f"{at} sql: placeholder :{name} is not an input parameter (inputs: {known})")
    read = tool.side_effect == SideEffect.READ
    if read and not statement.is_query:
        problems.append(
            f"{at} sql: a read tool runs a query (SELECT, WITH or VALUES), not {statement.keyword}; "
            f'set side_effect = "write" for a statement that changes data'
        )
    if tool.one and not read:
        problems.append(f"{at} one: applies to read tools only")
    if problems:
        raise ConfigError(problems)
    defaults = {
        name: spec["default"] for name, spec in properties.items() if isinstance(spec, dict) and "default" in spec
    }
    return tool_from_config(tool, _handler(backend, statement, defaults, read=read, one=tool.one), at)
