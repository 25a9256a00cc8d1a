"""Hears every key change on any replica, so the key cache can be trusted: `LISTEN qaqnuz_keys`.

Why LISTEN/NOTIFY: the store already is the source of truth, so telling replicas about a change needs no
extra moving part (no broker to run, secure and watch). The notification is sent by a trigger in the very
transaction that changes the key (`migrations`), whoever makes it: a replica, `qaqnuz keys revoke`, or an
operator in psql. PostgreSQL delivers it only when that transaction commits, so there is no window in which a
replica hears of a change it cannot read yet; and a rolled-back change is never announced.

The listener holds one dedicated autocommit connection (a pooled one would be reset and reused). While it is
not listening (starting, PostgreSQL down, connection lost) the cache is untrusted and bypassed; it is emptied
and trusted again once `LISTEN` is back in place. A heartbeat query after `heartbeat` seconds without a
notification catches a connection that died without a word (a network partition, a frozen server): the cache
stops being trusted within `heartbeat + timeout` seconds then, and each entry is served for `key_cache_ttl`
at most anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .cache import KeyCache
from .deadline import hard_deadline
from .migrations import CHANNEL, EVERYTHING

HEARTBEAT = 2.0
RETRY_MIN = 0.2
RETRY_MAX = 2.0


class KeyListener:
    """One background task in the event loop that started it; `stop()` ends it and closes its connection."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        cache: KeyCache,
        logger: logging.Logger,
        *,
        timeout: float,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._connect = connect
        self.cache = cache
        self.log = logger
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._task: asyncio.Task[None] | None = None
        #: The backend process id of the listening connection while it listens (for tests and diagnostics).
        self.backend_pid: int | None = None
        self.notifications = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qaqnuz-postgres-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # not `await task`: our own cancellation must still reach our caller
        self.cache.distrust()

    async def _run(self) -> None:
        delay = RETRY_MIN
        lost = False
        while True:
            conn: Any = None
            try:
                async with hard_deadline(asyncio.get_running_loop().time() + self.timeout):
                    conn = await self._connect()
                    await conn.execute(f"LISTEN {CHANNEL}")
                self.backend_pid = conn.info.backend_pid
                self.cache.trust()
                if lost:
                    self.log.warning("key change notifications are back; the key cache is in use again")
                    lost = False
                delay = RETRY_MIN
                await self._listen(conn)
            except Exception as exc:  # any failure means the same: not listening, so not trusted
                if not lost:
                    self.log.warning(
                        "key change notifications unavailable (%s); every key lookup asks PostgreSQL until they are "
                        "back",
                        type(exc).__name__,
                    )
                    lost = True
            finally:
                self.cache.distrust()
                self.backend_pid = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _listen(self, conn: Any) -> None:
        while True:
            async for note in conn.notifies(timeout=self.heartbeat):
                self.notifications += 1
                if note.payload == EVERYTHING:
                    self.cache.clear()
                else:
                    self.cache.evict((note.payload,))
            async with hard_deadline(asyncio.get_running_loop().time() + self.timeout):
                await conn.execute("SELECT 1")
