"""Sign-in throttling that slows a guesser without locking anyone else out.

Failures are counted per (user name, source address) and per source address, in a sliding window. A pair
over its count waits: the person guessing alice's password from one address is held back, while alice
signing in from her own address, and bob from anywhere, are not. A source over its own count (many names
tried from one address) waits for every name. A throttled attempt is refused before the password is
checked, so it tells the guesser nothing. Counts live in this process (each worker keeps its own), bounded
in size so a flood of names cannot grow them without limit.
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
        waits = [self._wait(("pair", f"{source}\0{name.lower()}"), self.per_pair, now)]
        waits.append(self._wait(("source", source), self.per_source, now))
        return max(waits)

    def failed(self, name: str, source: str, now: float) -> None:
        for key in (("pair", f"{source}\0{name.lower()}"), ("source", source)):
            times = self._failures.get(key)
            if times is None:
                if len(self._failures) >= self.max_entries:
                    self._failures.popitem(last=False)
                times = self._failures[key] = collections.deque()
            else:
                self._failures.move_to_end(key)
            times.append(now)

    def succeeded(self, name: str, source: str) -> None:
        """A right password clears that pair's count (the source's stays: it counts other names too)."""
        self._failures.pop(("pair", f"{source}\0{name.lower()}"), None)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < limit:
            return 0
        return max(1, math.ceil(times[-limit] + self.window - now))
