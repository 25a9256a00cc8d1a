"""In-process sliding-log rate limiter, per key and per brand.

A call is admitted only if both the key's and the brand's logs hold fewer than N timestamps inside the
rolling window; then both are appended together. So no window ever admits more than N, and a refusal
by either dimension counts against neither. State lives in this process only: run one worker, or use
the Redis limiter for several.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from qaqnuz.contexts import LimiterContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Admission, Limit, Provider


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._logs: dict[tuple[str, str], deque[float]] = {}

    def _log(self, dimension: str, name: str, limit: Limit, now: float) -> deque[float]:
        log = self._logs.get((dimension, name))
        if log is None:
            log = self._logs[(dimension, name)] = deque()
        horizon = now - limit.window_s
        while log and log[0] <= horizon:
            log.popleft()
        while len(log) > limit.count:  # the limit was lowered by a reload
            log.popleft()
        return log

    async def admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        now = self._clock()
        key_log = self._log("key", key_id, key_limit, now)
        brand_log = self._log("brand", brand, brand_limit, now)
        refused: list[tuple[float, str]] = []
        if len(key_log) >= key_limit.count:
            refused.append((key_log[len(key_log) - key_limit.count] + key_limit.window_s - now, "key"))
        if len(brand_log) >= brand_limit.count:
            refused.append((brand_log[len(brand_log) - brand_limit.count] + brand_limit.window_s - now, "brand"))
        if refused:
            wait, dimension = max(refused)
            return Admission(False, max(1, math.ceil(wait * 1000)), dimension)
        key_log.append(now)
        brand_log.append(now)
        return Admission(True)


@hookimpl
def qaqnuz_rate_limiters() -> list[Provider]:
    return [
        Provider(
            "memory",
            _factory,
            "Sliding-log limiter in this process's memory (single worker).",
        )
    ]


def _factory(settings: object, ctx: LimiterContext) -> MemoryLimiter:
    # A monotonic clock: a wall-clock step back must not block keys or inflate retry hints.
    return MemoryLimiter(time.monotonic if ctx.clock is time.time else ctx.clock)
