"""qaqnuz-pack-sql: a tool pack where each configured tool is one parameterised SQL statement.

Configure it as `[packs.<name>] type = "sql"` with a `dsn` (SQLite file or PostgreSQL) and a list of
`[[packs.<name>.tools]]`, each with the shared tool fields (`qaqnuz.ToolConfig`) plus `sql` and `one`.
Arguments are bound by the driver from validated input, never formatted into the SQL; read tools run in a
read-only transaction; database errors become `dependency` or `terminal` with fixed texts.
"""

from __future__ import annotations

from qaqnuz import Provider, hookimpl

from .pack import SqlPack, SqlSettings, SqlToolConfig, build
from .sqltext import SqlTextError, Statement, prepare


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
