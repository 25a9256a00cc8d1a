"""The `redis` rate limiter: the memory limiter's windows, per key and per brand, kept in Redis and shared
by every worker and replica that points at it.

This module only registers the provider and validates its settings (the command line loads every plugin
on each start, so it imports no redis-py); `qaqnuz_redis.limiter` holds the limiter, `script` the Lua
script that decides a call, `breaker` what keeps a dead Redis cheap. See README.md.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from qaqnuz import ConfigError, LimiterContext, Provider, hookimpl
from qaqnuz_redis.settings import RedisSettings, check

if TYPE_CHECKING:
    from qaqnuz_redis.limiter import RedisLimiter

__all__ = ["RedisSettings", "qaqnuz_rate_limiters"]


def _factory(settings: RedisSettings, ctx: LimiterContext) -> RedisLimiter:
    """Validates everything and resolves the password now (a config error stops the load); connects
    nothing: the first call does."""
    options, problems = check(settings, ctx.where)
    password = None
    if settings.password is not None:
        try:
            password = ctx.secret(settings.password, f"{ctx.where} password")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems or options is None:
        raise ConfigError(problems)
    from qaqnuz_redis.limiter import RedisLimiter

    return RedisLimiter(dataclasses.replace(options, password=password), ctx.logger)


@hookimpl
def qaqnuz_rate_limiters() -> list[Provider]:
    return [
        Provider(
            "redis",
            _factory,
            "Sliding-log limiter in Redis (one Lua script per call), shared by every worker and replica.",
            RedisSettings,
        )
    ]
