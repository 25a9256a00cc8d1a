"""`[plugins.redis]`: where Redis is and how long the limiter may wait for it.

Validated here without importing redis-py (the command line loads every plugin's entry module), and every
problem is reported at once, located, with its fix. The URL is parsed by this module, not by redis-py:
redis-py lets query options (`?socket_timeout=`, `?password=`) override the client's own settings, so a
URL could silently undo the timeouts this limiter's promises rest on. No message here ever repeats the URL:
a URL the user wrote may carry a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import msgspec

from qaqnuz import Secret, SecretRef, parse_positive_duration


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: redis://host:port/db or rediss://host:port/db (TLS); never a password (see `password`).
    url: str
    #: An ACL user (Redis 6+); the URL's user part gives it too, but not both.
    username: str | None = None
    #: The password, by reference only: { env = "NAME" } or { file = "path" }.
    password: SecretRef | None = None
    #: Prefix of every key the limiter writes, to share one Redis with other applications.
    key_prefix: str = "qaqnuz:"
    #: How long opening a connection (TCP, TLS, AUTH) may take.
    connect_timeout: str = "1s"
    #: How long one admission's round trip may take before the call is refused as retryable.
    timeout: str = "50ms"
    #: Connections to Redis at most; calls beyond it wait (within their time budget) for a free one.
    pool_size: int = 32
    #: After a failure, how long calls are refused without trying Redis before one probe call tries again.
    breaker_cooldown: str = "1s"


@dataclass(frozen=True)
class Options:
    """The validated settings, durations in seconds. `password` is a `Secret` (its repr shows nothing)."""

    host: str
    port: int
    db: int
    tls: bool
    username: str | None
    key_prefix: str
    connect_timeout: float
    timeout: float
    pool_size: int
    breaker_cooldown: float
    password: Secret | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """Where Redis is, for log lines: scheme, host, port and database; never a user or a password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


_DB_PATH = re.compile(r"/?(\d{1,5})?/?")


def check(settings: RedisSettings, where: str) -> tuple[Options | None, list[str]]:
    """The options, or None and every problem found (each located at `where` and saying how to fix it)."""
    problems: list[str] = []
    location = _url(settings.url, where, problems)
    username = settings.username
    if location is not None and location[4] is not None:
        if username is not None:
            problems.append(f"{where} username: the url names a user too; give the user once (keep `username`)")
        username = location[4]
    if username == "":
        problems.append(f"{where} username: must not be empty; leave it out for the default user")
    if "{" in settings.key_prefix or "}" in settings.key_prefix:
        problems.append(
            f"{where} key_prefix: must not contain '{{' or '}}': the brand is the keys' hash tag (both of a call's "
            f"keys in one Redis Cluster slot), and a brace in the prefix would put every brand in one slot"
        )
    durations: dict[str, float] = {}
    for name in ("connect_timeout", "timeout", "breaker_cooldown"):
        try:
            durations[name] = parse_positive_duration(getattr(settings, name))
        except ValueError as exc:
            problems.append(f"{where} {name}: {exc}")
    if settings.pool_size < 1:
        problems.append(f"{where} pool_size: must be at least 1 (connections to Redis)")
    if problems or location is None:
        return None, problems
    host, port, db, tls, _ = location
    options = Options(
        host=host,
        port=port,
        db=db,
        tls=tls,
        username=username,
        key_prefix=settings.key_prefix,
        connect_timeout=durations["connect_timeout"],
        timeout=durations["timeout"],
        pool_size=settings.pool_size,
        breaker_cooldown=durations["breaker_cooldown"],
    )
    return options, problems


def _url(url: str, where: str, problems: list[str]) -> tuple[str, int, int, bool, str | None] | None:
    """(host, port, db, tls, user) from a redis:// or rediss:// URL, or None with the problem added."""
    shape = "write it as redis://host:6379/0 (or rediss:// for TLS)"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        problems.append(f"{where} url: not a valid URL (or its port is not a number from 0 to 65535); {shape}")
        return None
    if parts.scheme not in ("redis", "rediss"):
        problems.append(f"{where} url: must start with redis:// or rediss:// (TLS); {shape}")
        return None
    if parts.password is not None:  # before anything else: the rest of the URL does not matter now
        problems.append(
            f'{where} url: must not carry a password; remove it from the URL and set password = {{ env = "NAME" }} '
            f'(or {{ file = "path" }}) in {where}'
        )
        return None
    if parts.query or parts.fragment:
        problems.append(
            f"{where} url: takes no '?' options or '#' part; timeouts, the pool and the password are settings of "
            f"their own in {where}"
        )
        return None
    if not parts.hostname:
        problems.append(f"{where} url: names no host; {shape}")
        return None
    if port == 0:
        problems.append(f"{where} url: port 0 is not a port Redis listens on; {shape}")
        return None
    db_match = _DB_PATH.fullmatch(parts.path)
    if db_match is None:
        problems.append(f"{where} url: the path must be a database number such as /0; {shape}")
        return None
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, port or 6379, int(db_match.group(1) or 0), parts.scheme == "rediss", user
