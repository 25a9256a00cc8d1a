"""qaqnuz-pack-sql: a tool pack where each configured tool is one parameterised SQL statement.

Configure it as `[packs.<name>] type = "sql"` with a `dsn` (SQLite file or PostgreSQL) and a list of
`[[packs.<name>.tools]]`, each with the shared tool fields (`qaqnuz.ToolConfig`) plus `sql`, `one` and
`like`. Arguments are bound by the driver from validated input, never formatted into the SQL (a `like`
parameter's `%` and `_` are escaped too, so it matches as text inside a LIKE pattern); `:brand`, `:key_id`,
`:key_name` and `:role` are bound from the verified caller; read tools run in a read-only transaction;
database errors become `dependency` or `terminal` with fixed texts.

This module only registers the provider (the command line loads it on every start, so it stays light);
the pack itself is in `qaqnuz_pack_sql.pack`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qaqnuz import Provider, ToolPackContext, hookimpl

from .settings import SqlSettings, SqlToolConfig

if TYPE_CHECKING:
    from .pack import SqlPack


def build(settings: SqlSettings, ctx: ToolPackContext) -> SqlPack:
    from .pack import build as build_pack

    return build_pack(settings, ctx)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [
        Provider(
            "sql",
            build,
            "SQL pack: each tool is a parameterised query or statement on SQLite or PostgreSQL.",
            SqlSettings,
        )
    ]


def __getattr__(name: str) -> Any:
    """The pack's parts, imported on first use."""
    if name in ("SqlPack",):
        from . import pack

        return getattr(pack, name)
    if name in ("SqlTextError", "Statement", "prepare"):
        from . import sqltext

        return getattr(sqltext, name)
    raise AttributeError(f"module 'qaqnuz_pack_sql' has no attribute {name!r}")


__all__ = [
    "SqlPack",
    "SqlSettings",
    "SqlTextError",
    "SqlToolConfig",
    "Statement",
    "build",
    "prepare",
    "qaqnuz_tool_providers",
]
