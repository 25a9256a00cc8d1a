"""The circuit breaker in front of Redis: a dead or hung Redis costs each call microseconds, not a timeout.

Closed: every call goes to Redis. A failure (refused connection, timeout, any Redis error) opens it: for the
cool-off every call is refused at once as `LimiterUnavailable`, its `retry_after_ms` the cool-off left, and
nothing touches the network. After the cool-off the next call (or readiness check) is let through alone as a
probe (half-open; the others are still refused meanwhile): its success closes the breaker, its failure opens
it for another cool-off. So recovery needs no restart, and a Redis that is down is tried once per cool-off
per process, not once per call.

Only a probe closes the breaker: a call that set out before the failure and happens to succeed after it
says nothing about Redis now. The breaker holds no lock: it lives on one event loop, and nothing between
its checks and updates awaits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from qaqnuz import LimiterUnavailable


def wait_ms(seconds: float) -> int:
    """A wait in whole milliseconds, rounded up and at least 1 (a hint of 0 would invite a busy retry)."""
    return max(1, math.ceil(seconds * 1000))


class Breaker:
    def __init__(self, cooldown: float, probe_wait: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._probe_wait = probe_wait  # what the calls refused while a probe is out are told to wait
        self._clock = clock
        self._open = False
        self._until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Whether Redis failed and no probe has succeeded since (open or half-open)."""
        return self._open

    def enter(self) -> bool:
        """Before a call goes to Redis: False to go as usual, True to go as the probe (the caller must then
        call `probe_done`), or `LimiterUnavailable` when it must not go at all."""
        if not self._open:
            return False
        self.refuse()
        self._probing = True
        return True

    def refuse(self) -> None:
        """Raise `LimiterUnavailable` while the breaker is cooling off or a probe is out (no network)."""
        if not self._open:
            return
        left = self._until - self._clock()
        if left > 0:
            raise LimiterUnavailable("Redis failed; the circuit is open", retry_after_ms=wait_ms(left))
        if self._probing:
            raise LimiterUnavailable("Redis failed; a probe is checking it", retry_after_ms=wait_ms(self._probe_wait))

    def probe_done(self) -> None:
        self._probing = False

    def failed(self) -> bool:
        """Record a failure; True when it opened a closed breaker (the moment to say so, once)."""
        opened = not self._open
        self._open = True
        self._until = max(self._until, self._clock() + self.cooldown)
        return opened

    def succeeded(self, probe: bool) -> bool:
        """Record a success; True when it was the probe's and closed the breaker (the moment to say so)."""
        if probe and self._open:
            self._open = False
            return True
        return False

    def retry_after_ms(self) -> int:
        """The cool-off left, for a call refused because Redis just failed."""
        return wait_ms(max(self._until - self._clock(), 0.0))
