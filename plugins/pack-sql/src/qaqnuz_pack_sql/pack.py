"""The `sql` tool provider: settings, load-time checks, and the pack that runs configured statements."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from qaqnuz import (
    CALLER_NAMES,
    ConfigError,
    DependencyError,
    SecretRef,
    SideEffect,
    TerminalError,
    Tool,
    ToolPackContext,
    current_call,
    input_schema,
    parse_positive_duration,
    tool_from_config,
    unique_names,
)

from .backends import TIMED_OUT, Limits, PostgresBackend, SqliteBackend
from .settings import SqlSettings, SqlToolConfig
from .sqltext import SqlTextError, Statement, like_patterns, prepare
from .values import LIKE_MODES, like_pattern

__all__ = ["SqlPack", "SqlSettings", "SqlToolConfig", "build"]


def _seconds(text: str, where: str, problems: list[str]) -> float:
    try:
        return parse_positive_duration(text)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return 1.0


def _backend(settings: SqlSettings, ctx: ToolPackContext, where: str, limits: Limits, problems: list[str]) -> Any:
    if isinstance(settings.dsn, SecretRef):
        dsn = ctx.secret(settings.dsn, f"{where} dsn").reveal()
    else:
        dsn = settings.dsn
    if not dsn and ctx.offline:  # describing tools without the DSN's secret: nothing will run
        return None
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
        if not ctx.offline and not Path(path).is_file():
            problems.append(
                f"{where} dsn: no SQLite database at {path}; create it first (the SQL pack opens existing "
                f"databases only), or fix the path (relative paths start at the config file's folder)"
            )
            return None
        return SqliteBackend(path, limits)
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


NO_CALLER = "This tool needs to know its caller and was called outside a governed call."


@attrs.frozen
class _Handler:
    """Runs one statement. Placeholders are bound only from validated arguments (or their schema defaults)
    and, for `:brand`, `:key_id`, `:key_name` and `:role`, from the call's verified caller: never from
    anything the caller sends."""

    backend: Any
    statement: Statement
    defaults: Mapping[str, Any]
    read: bool
    one: bool
    caller_names: frozenset[str]
    #: `like` parameters and their modes: bound as escaped LIKE patterns, matched literally.
    like: Mapping[str, str] = attrs.field(factory=dict)
    #: The pack's `ctx.upstream`: every statement's time and failure kind (`qaqnuz_upstream_*{pack}`).
    observe: Callable[[float, str | None], None] | None = None

    async def __call__(self, arguments: Mapping[str, Any]) -> Any:
        params = {name: arguments.get(name, self.defaults.get(name)) for name in self.statement.names}
        for name, mode in self.like.items():
            params[name] = like_pattern(params[name], mode)
        if self.caller_names:
            call = current_call()
            if call is None:  # fail closed: never run a tenant-scoped statement without its tenant
                raise TerminalError("no call context", public=NO_CALLER)
            who = call.caller.values()
            params.update({name: who[name] for name in self.caller_names})
        if self.observe is None:
            return await self.backend.run(self.statement, params, read=self.read, one=self.one)
        started = time.monotonic()
        try:
            result = await self.backend.run(self.statement, params, read=self.read, one=self.one)
        except Exception as exc:
            self.observe(time.monotonic() - started, _failure_kind(exc))
            raise
        self.observe(time.monotonic() - started, None)
        return result


def _failure_kind(exc: Exception) -> str:
    """The metric's word for a failed statement: the backends already sorted timeouts and an unreachable
    database (transient) from statements the database refused."""
    if isinstance(exc, DependencyError):
        return "timeout" if exc.public == TIMED_OUT else "connect"
    if isinstance(exc, TerminalError):
        return "query"
    return "other"


def build(settings: SqlSettings, ctx: ToolPackContext) -> SqlPack:
    """The factory: every check happens here, at load, and all problems are reported together."""
    where = ctx.where
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
    warnings: list[str] = []
    for index, tool in enumerate(settings.tools):
        at = f"{where} tools[{index}]"
        try:
            tools.append(_tool(tool, at, backend, dialect, ctx.upstream, warnings))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    for warning in warnings:  # logged, so `config check` and a starting server show them
        ctx.logger.warning("%s", warning)
    return SqlPack(tools, backend)


def _tool(
    tool: SqlToolConfig,
    at: str,
    backend: Any,
    dialect: Any,
    observe: Callable[[float, str | None], None] | None = None,
    warnings: list[str] | None = None,
) -> Tool:
    problems: list[str] = []
    try:
        statement = prepare(tool.sql, dialect)
    except SqlTextError as exc:
        raise ConfigError([f"{at} sql: {exc}"]) from None
    schema = input_schema(tool, at)
    properties = schema.get("properties") or {}
    for name in sorted(CALLER_NAMES & set(properties)):
        problems.append(
            f"{at} input.{name}: {name!r} is bound from the verified caller (:{name}), never taken from input; "
            f"rename the parameter"
        )
    for name in statement.names:
        if name not in properties and name not in CALLER_NAMES:
            known = ", ".join(sorted(properties)) or "none"
            problems.append(
                f"{at} sql: placeholder :{name} is not an input parameter (inputs: {known}; the caller's "
                f"{', '.join(sorted(CALLER_NAMES))} are bound too)"
            )
    read = tool.side_effect == SideEffect.READ
    if read and not statement.is_query:
        problems.append(
            f"{at} sql: a read tool runs a query (SELECT, WITH or VALUES), not {statement.keyword}; "
            f'set side_effect = "write" for a statement that changes data'
        )
    if tool.one and not read:
        problems.append(f"{at} one: applies to read tools only")
    problems.extend(_like_problems(tool, at, statement, properties))
    if warnings is not None:
        warnings.extend(_like_warnings(tool, at, statement))
    if problems:
        raise ConfigError(problems)
    defaults = {
        name: spec["default"] for name, spec in properties.items() if isinstance(spec, dict) and "default" in spec
    }
    caller = frozenset(statement.names) & CALLER_NAMES
    handler = _Handler(backend, statement, defaults, read, tool.one, caller, dict(tool.like), observe)
    return tool_from_config(tool, handler, at, binds_brand="brand" in caller)


LIKE_FIX = "write `column LIKE :{name} ESCAPE '\\'` (functions such as lower(:{name}) around it are fine)"


def _like_problems(tool: SqlToolConfig, at: str, statement: Statement, properties: Mapping[str, Any]) -> list[str]:
    """`like` names string input parameters that the statement uses only as whole LIKE patterns escaped by a
    backslash: the bound value is escaped and wrapped, so anywhere else (`= :q`, or no `ESCAPE '\\'`, where
    SQLite would read `\\%` as two characters) it would silently match the wrong rows."""
    problems: list[str] = []
    patterns = like_patterns(statement)
    escaped = {index for pattern in patterns if pattern.escape == "\\" for index in pattern.params}
    modes = ", ".join(f'"{mode}"' for mode in LIKE_MODES)
    for name, mode in tool.like.items():
        where = f"{at} like.{name}"
        if mode not in LIKE_MODES:
            problems.append(f"{where}: {mode!r} is not a like mode; use one of {modes}")
        if name not in properties:
            known = ", ".join(sorted(properties)) or "none"
            problems.append(f"{where}: no input parameter {name!r} (inputs: {known}); like names a string input")
            continue
        spec = properties[name]
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind is not None and kind != "string":
            problems.append(f"{where}: the parameter's type is {kind!r}; like applies to string parameters only")
        if name not in statement.names:
            problems.append(f"{where}: the statement does not use :{name}; {LIKE_FIX.format(name=name)}")
            continue
        uses = [i for i, token in enumerate(statement.tokens) if token == ("param", name)]
        if any(i not in escaped for i in uses):
            problems.append(
                f"{where}: every use of :{name} must be a LIKE pattern followed by ESCAPE '\\' (its value is "
                f"bound with \\, % and _ escaped by a backslash); {LIKE_FIX.format(name=name)}, and in a TOML "
                f'"..." or """...""" string write the backslash twice'
            )
    return problems


def _like_warnings(tool: SqlToolConfig, at: str, statement: Statement) -> list[str]:
    """An argument concatenated into a pattern with `%` literals (`LIKE '%' || :q || '%'`) is meant as text
    but its own `%` and `_` stay wildcards: a caller's `%` matches every row. Worth a warning, not an error:
    a statement may mean to take a pattern from its caller, and existing configs keep loading."""
    tokens = statement.tokens
    names: list[str] = []
    for pattern in like_patterns(statement):
        if not pattern.wildcard_literal:
            continue
        for index in pattern.params:
            name = tokens[index][1]
            if name not in tool.like and name not in CALLER_NAMES and name not in names:
                names.append(name)
    return [
        f"{at} sql: :{name} is joined into a LIKE pattern with '%', so a caller's % and _ act as wildcards "
        f"(an argument '%' matches every row); {LIKE_FIX.format(name=name)} and set like = {{ {name} = "
        f'"contains" }} (or "prefix", "suffix", "exact") to match it literally'
        for name in names
    ]
