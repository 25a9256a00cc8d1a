"""The fast path's calls in flight behave as the task group they replace: EOF waits for them, a cancel ends
them, and the first failure stops serving and is raised."""

from __future__ import annotations

import asyncio

import pytest

from qaqnuz_stdio.fastpath import Calls

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_finish_waits_for_every_call_and_raises_the_first_failure():
    calls, finished, stopped = Calls(), [], []
    calls.on_failure = lambda: stopped.append(True)

    async def call(n: int, delay: float) -> None:
        await asyncio.sleep(delay)
        finished.append(n)

    async def broken() -> None:
        await asyncio.sleep(0.02)
        raise BrokenPipeError("the client closed stdout")

    for n, delay in ((1, 0.05), (2, 0.01)):
        calls.spawn(call(n, delay))
    calls.spawn(broken())
    with pytest.raises(BrokenPipeError):
        await calls.finish()
    assert sorted(finished) == [1, 2] and stopped == [True]  # the others still finished first


async def test_cancel_ends_calls_without_a_failure():
    calls, cancelled = Calls(), []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = calls.spawn(slow())
    await asyncio.sleep(0)
    calls.cancel()
    await calls.finish()  # no failure: a cancelled call is not one
    assert task.cancelled() and cancelled == [True] and calls.failure is None


async def test_waiting_for_calls_can_be_cancelled_while_they_run():
    """At EOF the transport waits for running calls; a signal (a cancellation of that wait) must still reach it."""
    calls = Calls()
    task = calls.spawn(asyncio.sleep(30))
    waiter = asyncio.get_running_loop().create_task(calls.wait())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not task.done()  # the wait ended, the call did not: the transport cancels it next
    calls.cancel()
    await calls.finish()
    assert task.cancelled()
