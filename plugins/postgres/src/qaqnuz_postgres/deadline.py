"""A deadline that also works when PostgreSQL does not answer at all.

`asyncio.timeout` cancels once. psycopg answers a cancelled query by asking the server to cancel it, and waits
up to 5 s for that request and 5 s more for the query to end: against a frozen server (a stopped process, a
host that accepts TCP and never answers) that is ten seconds past any deadline. A second cancellation while it
waits makes psycopg give up and close the connection at once. So `hard_deadline` cancels at the deadline, and
again `grace` seconds later if the body still runs; a server that merely was slow has had its chance to cancel
cleanly (and the pool drops a connection that was closed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

GRACE = 0.2


@contextlib.asynccontextmanager
async def hard_deadline(when: float, grace: float = GRACE) -> AsyncIterator[None]:
    """Raise `TimeoutError` if the body still runs at loop time `when`; a cancellation from outside stays one."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    fired = 0
    again: asyncio.TimerHandle | None = None

    def fire() -> None:
        nonlocal fired, again
        fired += 1
        task.cancel()
        if fired == 1:
            again = loop.call_at(loop.time() + grace, fire)

    first = loop.call_at(when, fire)
    try:
        yield
    except asyncio.CancelledError:
        if not fired:
            raise
        if _withdraw(task, fired) > 0:  # cancelled from outside as well: that cancellation wins
            raise
        raise TimeoutError from None
    else:
        if fired:  # the body ended just as the deadline fired: take the cancellation back
            _withdraw(task, fired)
    finally:
        first.cancel()
        if again is not None:
            again.cancel()


def _withdraw(task: asyncio.Task[object], times: int) -> int:
    """Take back our own cancellations; how many (from others) remain."""
    left = task.cancelling()
    for _ in range(times):
        left = task.uncancel()
    return left
