"""Row values made JSON-safe, and arguments made bindable (and, for `like`, literal inside a LIKE pattern)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def json_safe(value: Any) -> Any:
    """A JSON-encodable version of one database value.

    Decimal → string (exact), dates and times → ISO 8601 strings, intervals → seconds, bytes → base64,
    UUID → string, non-finite floats → strings; lists and mappings are converted item by item.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def row_object(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(column): json_safe(value) for column, value in row.items()}


def sqlite_param(value: Any) -> Any:
    """SQLite binds scalars; an object or array argument is bound as its JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


#: The `like` modes: where the escaped argument sits in the pattern.
LIKE_MODES = ("contains", "prefix", "suffix", "exact")


def like_pattern(value: Any, mode: str) -> Any:
    """The LIKE pattern that matches `value` literally, for `LIKE :name ESCAPE '\\'`.

    A caller's `%` or `_` would otherwise be a wildcard (`%` alone matches every row), so the backslash (the
    escape character itself first), `%` and `_` are escaped, and only the mode adds wildcards. A value that is
    not a string (a left-out optional argument's NULL) is bound unchanged.
    """
    if not isinstance(value, str):
        return value
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if mode == "contains":
        return f"%{escaped}%"
    if mode == "prefix":
        return f"{escaped}%"
    if mode == "suffix":
        return f"%{escaped}"
    return escaped
