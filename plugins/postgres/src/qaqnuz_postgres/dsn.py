"""The store URL: checked once, never repeated back.

`[server] store` may carry a password (`postgresql://user:secret@host/db`). libpq's own parse errors quote the
offending part of the URL, password included, so a URL that does not parse is reported without the parser's
text; and everything this package prints about where it connects (`describe`) is rebuilt from the parsed
parts without the password.
"""

from __future__ import annotations

from typing import Any

from qaqnuz import ConfigError

WHERE = "[server] store"
SCHEMES = ("postgresql", "postgres")
#: Connection parameters the store sets itself (per connection kind); a URL may not fight them.
_OURS = ("connect_timeout",)


def parse(url: str) -> dict[str, str]:
    """The URL's connection parameters (libpq's reading of it), or a `ConfigError` that does not quote it."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError([f"{WHERE}: write postgresql://user@host:5432/database (the scheme names the store)"])
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except Error:
        raise ConfigError(
            [
                f"{WHERE}: not a valid PostgreSQL URL (libpq cannot read it; its message is not shown because "
                "it can quote a password); write postgresql://user@host:5432/database?sslmode=require and "
                "percent-encode special characters"
            ]
        ) from None
    for name in _OURS:
        if name in params:
            raise ConfigError([f"{WHERE}: remove {name} from the URL; set it in [plugins.{scheme}] {name} instead"])
    return {k: str(v) for k, v in params.items() if v is not None}


def describe(params: dict[str, str]) -> str:
    """`user@host:port/dbname` for logs and reprs: what an operator needs to find the server, never a
    password."""
    user = params.get("user", "")
    host = params.get("host", "") or params.get("hostaddr", "")
    port = params.get("port", "")
    where = f"{host}:{port}" if port else host
    return f"{user + '@' if user else ''}{where}/{params.get('dbname', '')}"
