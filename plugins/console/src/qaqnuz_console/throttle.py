"""Sign-in throttling that slows a guesser without locking anyone else out.

Failures are counted per (user name, source address) and per source address, in a sliding window. A pair
over its count waits: the person guessing alice's password from one address is held back, while alice
signing in from her own address, and bob from anywhere, are not. A source over its own count (many names
tried from one address) waits for every name. A throttled attempt is refused before the password is
checked, so it tells the guesser nothing. An attempt counts as failed from the moment it starts (`begin`)
and is forgiven only when its password proves right (`forgive`): a burst of guesses sent at once, each
waiting for its hash, cannot all slip past a count that would only grow once they are answered. Counts live
in this process (each worker keeps its own), bounded in size so a flood of names cannot grow them without
limit.
"""

from __future__ import annotations

import collections
import math


class Throttle:
    def __init__(self, *, per_pair: int, per_source: int, window: float, max_entries: int = 10_000) -> None:
        self.per_pair = per_pair
        self.per_source = per_source
        self.window = window
        self.max_entries = max_entries
        self._failures: collections.OrderedDict[tuple[str, str], collections.deque[float]] = collections.OrderedDict()

    def wait(self, name: str, source: str, now: float) -> int:
        """Seconds this attempt must wait (0: it may go ahead)."""
        pair, by_source = self._keys(name, source)
        return max(self._wait(pair, self.per_pair, now), self._wait(by_source, self.per_source, now))

    def begin(self, name: str, source: str, now: float) -> None:
        """Count an attempt as failed before its password is checked (see the module's docstring)."""
        for key in self._keys(name, source):
            times = self._failures.get(key)
            if times is None:
                if len(self._failures) >= self.max_entries:
                    self._failures.popitem(last=False)
                times = self._failures[key] = collections.deque()
            else:
                self._failures.move_to_end(key)
            times.append(now)

    def forgive(self, name: str, source: str, started: float) -> None:
        """The attempt begun at `started` had the right password: it was no failure. The pair's count is
        cleared; the source's loses only this attempt (it counts other names too)."""
        pair, by_source = self._keys(name, source)
        self._failures.pop(pair, None)
        times = self._failures.get(by_source)
        if times is not None:
            try:
                times.remove(started)
            except ValueError:
                pass

    @staticmethod
    def _keys(name: str, source: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("pair", f"{source}\0{name.strip().lower()}"), ("source", source)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < limit:
            return 0
        return max(1, math.ceil(times[-limit] + self.window - now))
