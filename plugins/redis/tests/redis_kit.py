"""What the Redis limiter's tests share: a tool pack that counts its executions, a config that selects the
`redis` limiter, and helpers to call through a real kernel's governed pipeline.

The pack is a plugin object of its own, so a test sees exactly how many calls ran (not just how many were
admitted): "none executes" is something the test counts, not something it infers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from qaqnuz import Kernel, Limit, Provider, Secret, SideEffect, Tool, ToolPackContext, hookimpl
from qaqnuz_redis.limiter import RedisLimiter
from qaqnuz_redis.settings import RedisSettings, check

OBJ = {"type": "object", "properties": {}, "additionalProperties": False}
UNLIMITED = Limit(1_000_000, 60.0)


class CounterPack:
    """The `counter` tool pack: one tool, `bump`, whose every execution is counted here."""

    def __init__(self) -> None:
        self.executions = 0

    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        return [Provider("counter", self._factory, "Counts the calls that ran.", _NoSettings)]

    def _factory(self, settings: object, ctx: ToolPackContext) -> _Tools:
        return _Tools(self)


class _NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _Tools:
    def __init__(self, pack: CounterPack) -> None:
        self.pack = pack

    async def list_tools(self) -> list[Tool]:
        return [Tool("bump", "Count one execution.", OBJ, "count.run", SideEffect.READ, self.bump)]

    async def bump(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        self.pack.executions += 1
        return {"executions": self.pack.executions}


def config(url: str, *, per_key: str = "1000/60s", per_brand: str = "1000/60s", redis: str = "") -> str:
    """A kernel config whose limiter is `redis` at `url` (extra `[plugins.redis]` lines in `redis`)."""
    return f"""\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"

[plugins]
limiter = "redis"

[plugins.redis]
url = "{url}"
breaker_cooldown = "200ms"
{redis}
[plans.growth]
entitled = true
max_keys = 50
limits = {{ per_key = "{per_key}", per_brand = "{per_brand}" }}

[brands.acme]
plan = "growth"
roles = {{ viewer = ["count.run"] }}
tools.bump = {{ exposable = true }}

[packs.counter]
type = "counter"
"""


async def start(qaqnuz_kernel: Any, url: str, folder: Any = None, **options: Any) -> tuple[Kernel, CounterPack]:
    """A started kernel (the `redis` plugin loaded through its entry point) and its counting pack."""
    pack = CounterPack()
    kernel = await qaqnuz_kernel(config(url, **options), plugins=["redis", pack], folder=folder)
    return kernel, pack


def limiter(url: str, logger: str = "test.redis", password: str | None = None, **settings: Any) -> RedisLimiter:
    """A limiter built straight from settings (no kernel, so no log masking either), for the tests of the
    limiter alone."""
    options, problems = check(RedisSettings(url=url, **settings), "[plugins.redis]")
    assert options is not None, problems
    if password is not None:
        options = dataclasses.replace(options, password=Secret(password))
    return RedisLimiter(options, logging.getLogger(logger))
