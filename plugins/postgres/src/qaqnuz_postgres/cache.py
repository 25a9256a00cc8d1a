"""The key cache of one store instance: `get_key` answered from memory, but only while it can be trusted.

Authentication looks a key up on every request, so each replica keeps the records it has read. A record may
only be served while this replica would hear of its change: the cache is *trusted* only while the listener
(see `listener`) holds a live `LISTEN` on the database; it is emptied whenever trust is gained or lost, and
nothing is cached while it is untrusted. The listener evicts each key a notification names.

A read races with a change: the row is read, another replica commits a revocation and its notification is
handled, and only then would the (old) row be stored. So each read takes a `ticket` (the generation) before
it asks the database, and `put` stores the row only if no eviction, clearing or change of trust happened in
between. Defence in depth against a notification that never comes (a silent network partition): an entry is
served for at most `ttl` seconds, and the cache holds at most `size` entries (least recently used go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from qaqnuz import KeyRecord


class KeyCache:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, KeyRecord]] = OrderedDict()
        self._generation = 0
        self.trusted = False
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str) -> KeyRecord | None:
        """The cached record, or None (not cached, too old, or the cache is not trusted now)."""
        if not self.trusted:
            return None
        entry = self._entries.get(key_id)
        if entry is None:
            self.misses += 1
            return None
        stored, record = entry
        if self._clock() - stored >= self.ttl:
            del self._entries[key_id]
            self.misses += 1
            return None
        self._entries.move_to_end(key_id)
        self.hits += 1
        return record

    def ticket(self) -> int | None:
        """Take before reading the database; None when nothing read now may be cached."""
        return self._generation if self.trusted else None

    def put(self, key_id: str, record: KeyRecord, ticket: int | None) -> None:
        if ticket is None or ticket != self._generation or not self.trusted:
            return
        self._entries[key_id] = (self._clock(), record)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def evict(self, key_ids: Iterable[str]) -> None:
        """These keys changed (a notification, or a write of this instance)."""
        self._generation += 1
        for key_id in key_ids:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def trust(self) -> None:
        """The listener is listening: from now on every change is announced to it."""
        self.clear()
        self.trusted = True

    def distrust(self) -> None:
        """The listener is not listening (starting, lost its connection, stopped): bypass the cache."""
        self.clear()
        self.trusted = False
