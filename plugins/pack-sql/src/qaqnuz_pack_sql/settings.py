"""The `[packs.<pack>] type = "sql"` table as msgspec structs (unknown keys are located errors)."""

from __future__ import annotations

import msgspec

from qaqnuz import SecretRef, ToolConfig


class SqlToolConfig(ToolConfig, forbid_unknown_fields=True, kw_only=True):
    """One `[[packs.<pack>.tools]]` entry: the shared tool fields plus one SQL statement."""

    sql: str
    one: bool = False
    #: Parameter name → "contains" | "prefix" | "suffix" | "exact": the argument is matched literally by
    #: `LIKE :name ESCAPE '\'` (its `\`, `%` and `_` escaped, wildcards added only by the mode). A string,
    #: not a Literal, so a wrong mode is reported by the pack with its fix.
    like: dict[str, str] = {}


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
