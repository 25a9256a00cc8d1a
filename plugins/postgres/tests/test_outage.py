"""PostgreSQL down, frozen or back: every operation fails fast with a StoreError (fail closed, never from the
cache), and the same store object works again once PostgreSQL does, without a restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from qaqnuz import StoreError
from qaqnuz.store_contract import DAY, NOW, call, key
from qaqnuz_postgres.settings import Options
from qaqnuz_postgres.store import PostgresStore, StoreUnavailable

pytestmark = pytest.mark.anyio
FAST = Options(connect_timeout=0.5, statement_timeout=0.5)
#: connect_timeout, plus what a refused connection and the bookkeeping around it may take on a busy machine
FAILS_WITHIN = 1.5


async def eventually(check, within: float) -> float:
    start = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - start
        except StoreError:
            pass
        if time.monotonic() - start > within:
            pytest.fail(f"not true within {within}s")
        await anyio.sleep(0.05)


async def timed_failure(operation) -> float:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await operation
    took = time.monotonic() - start
    assert isinstance(caught.value, StoreError)
    return took


@pytest.fixture
async def store(private_postgres, private_database) -> PostgresStore:
    store = PostgresStore(private_postgres.dsn(private_database), FAST)
    yield store
    await store.aclose()


async def test_postgres_down_fails_fast_and_the_same_store_recovers(private_postgres, store) -> None:
    await store.insert_key(key("k1"), max_active=None, now=NOW)
    await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
    await store.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW, valid_for=DAY)

    async def cached() -> bool:
        hits = store.cache.hits
        await store.get_key("k1")
        return store.cache.hits > hits

    await eventually(cached, within=5)

    await anyio.to_thread.run_sync(private_postgres.stop)
    assert not store.cache.trusted  # the listener noticed at once: nothing is answered from memory now
    operations = {
        "get_key (cached a moment ago)": store.get_key("k1"),
        "insert_key": store.insert_key(key("k2"), max_active=5, now=NOW),
        "consume_approval": store.consume_approval("apr_1", NOW + 1),
        "list_keys": store.list_keys(),
        "flush_usage": store.flush_usage({"k1": NOW + 1}, {("acme", "2027-01"): 1}),
        "ping": store.ping(),
    }
    for name, operation in operations.items():
        took = await timed_failure(operation)
        assert took < FAILS_WITHIN, f"{name} took {took:.2f}s"

    await anyio.to_thread.run_sync(private_postgres.start)

    async def answers() -> bool:
        return (await store.get_key("k1")) is not None

    assert await eventually(answers, within=10) < 10
    await store.insert_key(key("k2"), max_active=5, now=NOW)
    assert await store.consume_approval("apr_1", NOW + 1) is True
    await store.ping()
    await eventually(cached, within=5)  # the listener is back, so is the cache


async def test_stale_connections_after_a_restart_cost_no_failure(private_postgres, store) -> None:
    """A restart between two operations: the pooled connections are dead, and the next operation gets a fresh
    one instead of failing."""
    store_pool_max = FAST.pool_max
    await store.migrate()
    async with anyio.create_task_group() as tg:  # several pooled connections
        for _ in range(store_pool_max):
            tg.start_soon(store.list_keys)
    await anyio.to_thread.run_sync(private_postgres.stop)
    await anyio.to_thread.run_sync(private_postgres.start)
    assert await store.list_keys() == []


async def test_a_store_first_used_while_postgres_is_down(private_postgres, private_database) -> None:
    store = PostgresStore(private_postgres.dsn(private_database), FAST)
    try:
        await anyio.to_thread.run_sync(private_postgres.stop)
        start = time.monotonic()
        async with anyio.create_task_group() as tg:  # a burst of first requests: none waits for the others
            for i in range(10):
                tg.start_soon(timed_failure, store.get_key(f"k{i}"))
        assert time.monotonic() - start < FAILS_WITHIN
        assert await timed_failure(store.migrate()) < FAILS_WITHIN
        await anyio.to_thread.run_sync(private_postgres.start)

        async def answers() -> bool:
            return await store.list_keys() == []

        await eventually(answers, within=10)
    finally:
        await store.aclose()


def server_processes(data: Path) -> list[int]:
    """The postmaster and its children (every backend and worker)."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def frozen(data: Path) -> Iterator[None]:
    """SIGSTOP the whole server: connections stay open and nothing answers (a hung host)."""
    pids = server_processes(data)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def test_a_frozen_server_is_cut_off_client_side(private_postgres, store) -> None:
    """statement_timeout cannot fire in a server that does not run: the store's own deadline does."""
    await store.insert_key(key("k1"), max_active=None, now=NOW)

    async def cached() -> bool:
        hits = store.cache.hits
        await store.get_key("k1")
        return store.cache.hits > hits

    await eventually(cached, within=5)
    listener = store.listener
    assert listener is not None
    with frozen(private_postgres.data):
        start = time.monotonic()
        for operation in (store.list_keys(), store.insert_key(key("k2"), max_active=None, now=NOW), store.ping()):
            took = await timed_failure(operation)
            assert took < FAST.deadline + 1.0

        async def distrusted() -> bool:
            return not store.cache.trusted

        # the listener's heartbeat finds the silence: no notification could reach it, so no more cache
        await eventually(distrusted, within=listener.heartbeat + listener.timeout + 1.0)
        assert time.monotonic() - start < listener.heartbeat + listener.timeout + 1.5
    assert [k.key_id for k in await store.list_keys()] == ["k1"]
