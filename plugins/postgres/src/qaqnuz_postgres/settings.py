"""`[plugins.postgresql]` (or `[plugins.postgres]`, after the URL's scheme) as a msgspec struct, and its check.

The struct is what config decoding sees (unknown keys are located errors); `Options` is the validated form the
store runs on, with durations in seconds. Importing this module loads no database driver.
"""

from __future__ import annotations

import attrs
import msgspec

from qaqnuz import ConfigError, SecretRef, parse_duration

#: Bounds that catch typos (a pool of 10 000 connections, a 3-hour statement) without getting in the way.
MAX_POOL = 1000
MAX_CONNECT_TIMEOUT = 300.0
MAX_STATEMENT_TIMEOUT = 3600.0
MAX_CACHE_TTL = 3600.0


class PostgresSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The store's settings; every one has a default, so the table may be left out."""

    password: SecretRef | None = None
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: str = "2s"
    statement_timeout: str = "2s"
    key_cache_size: int = 10_000
    key_cache_ttl: str = "5s"


@attrs.frozen
class Options:
    """Validated settings: sizes, and durations in seconds."""

    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 2.0
    statement_timeout: float = 2.0
    key_cache_size: int = 10_000
    key_cache_ttl: float = 5.0

    @property
    def cache_enabled(self) -> bool:
        return self.key_cache_size > 0 and self.key_cache_ttl > 0

    @property
    def deadline(self) -> float:
        """The most one operation may take, end to end: waiting for a connection, then its statements. The
        server's `statement_timeout` cannot stop a server that no longer answers at all; this can."""
        return self.connect_timeout + self.statement_timeout + 0.5


def options(settings: PostgresSettings, where: str) -> Options:
    """The settings checked together, every problem named with the fix (`ConfigError`)."""
    problems: list[str] = []

    def seconds(value: str, name: str, low: float, high: float) -> float:
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            problems.append(f"{where} {name}: {exc}")
            return low
        if not low <= parsed <= high:
            problems.append(f"{where} {name}: {value!r} is out of range; use {_span(low)} to {_span(high)}")
        return parsed

    if settings.pool_min < 0:
        problems.append(f"{where} pool_min: must be 0 or more (got {settings.pool_min})")
    if not 1 <= settings.pool_max <= MAX_POOL:
        problems.append(f"{where} pool_max: must be 1 to {MAX_POOL} (got {settings.pool_max})")
    elif settings.pool_min > settings.pool_max:
        problems.append(
            f"{where} pool_min: {settings.pool_min} is more than pool_max = {settings.pool_max}; "
            "lower pool_min or raise pool_max"
        )
    if settings.key_cache_size < 0:
        problems.append(f"{where} key_cache_size: must be 0 (no cache) or more (got {settings.key_cache_size})")
    result = Options(
        pool_min=settings.pool_min,
        pool_max=settings.pool_max,
        connect_timeout=seconds(settings.connect_timeout, "connect_timeout", 0.1, MAX_CONNECT_TIMEOUT),
        statement_timeout=seconds(settings.statement_timeout, "statement_timeout", 0.1, MAX_STATEMENT_TIMEOUT),
        key_cache_size=settings.key_cache_size,
        key_cache_ttl=seconds(settings.key_cache_ttl, "key_cache_ttl", 0.0, MAX_CACHE_TTL),
    )
    if problems:
        raise ConfigError(problems)
    return result


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"
