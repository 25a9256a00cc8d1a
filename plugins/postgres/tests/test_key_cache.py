"""The key cache across replicas: a change made anywhere is honoured everywhere within a second, a hit costs
no query, and the cache is never used while its listener is not listening."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import psycopg
import pytest

from qaqnuz.store_contract import NOW, key
from qaqnuz_postgres.store import PostgresStore

pytestmark = pytest.mark.anyio


async def eventually(check: Callable[[], Awaitable[bool]], within: float, step: float = 0.01) -> float:
    """Poll `check` until it holds; the seconds it took (fails after `within`)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            pytest.fail(f"not true within {within}s")
        await anyio.sleep(step)
    return time.monotonic() - start


async def cached(store: PostgresStore, key_id: str) -> None:
    """Look `key_id` up until `store` serves it from its (trusted) cache."""

    async def hit() -> bool:
        before = store.cache.hits if store.cache is not None else 0
        await store.get_key(key_id)
        return store.cache is not None and store.cache.hits > before

    await eventually(hit, within=5)


@pytest.fixture
def count_key_queries(monkeypatch) -> list[str]:
    """Every statement psycopg sends that reads or writes the keys table, from any connection."""
    sent: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counting(self, query, params=None, **kwargs):
        if "qaqnuz_keys" in str(query):
            sent.append(str(query))
        return await execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    return sent


async def revoke(store: PostgresStore) -> None:
    assert await store.revoke_key("k1", NOW + 1)


async def rotate(store: PostgresStore) -> None:
    await store.rotate_key("k1", key("k2"), NOW + 1)


async def rescope(store: PostgresStore) -> None:
    await store.update_key_scopes("k1", ("orders.read", "orders.write"), NOW + 1)


@pytest.mark.parametrize("change", [revoke, rotate, rescope], ids=["revoke", "rotate", "update-scopes"])
async def test_a_change_on_one_replica_reaches_another_replicas_cache_within_a_second(make_store, change) -> None:
    a, b = make_store(), make_store()
    await b.insert_key(key("k1"), max_active=None, now=NOW)
    await cached(a, "k1")
    before = await a.get_key("k1")
    await change(b)

    async def seen() -> bool:
        return await a.get_key("k1") != before

    took = await eventually(seen, within=1.0, step=0.005)
    changed = await a.get_key("k1")
    assert changed is not None
    if change is rescope:
        assert changed.scopes == ("orders.read", "orders.write")
    else:
        assert changed.revoked_at == NOW + 1 and not changed.active(NOW + 2)
    assert took < 1.0


async def test_a_change_made_in_sql_by_hand_reaches_the_cache_too(make_store, qaqnuz_postgres, pg_database) -> None:
    """The notification comes from a trigger, so even an operator's UPDATE in psql is honoured."""
    a = make_store()
    await a.insert_key(key("k1"), max_active=None, now=NOW)
    await cached(a, "k1")
    database = pg_database.rsplit("/", 1)[1]
    await anyio.to_thread.run_sync(
        qaqnuz_postgres.sql, f"UPDATE qaqnuz_keys SET revoked_at = {NOW + 1} WHERE key_id = 'k1'", database
    )

    async def revoked() -> bool:
        record = await a.get_key("k1")
        return record is not None and record.revoked_at == NOW + 1

    assert await eventually(revoked, within=1.0, step=0.005) < 1.0


async def test_own_writes_are_read_back_at_once(make_store) -> None:
    a = make_store()
    await a.insert_key(key("k1"), max_active=None, now=NOW)
    await cached(a, "k1")
    assert await a.revoke_key("k1", NOW + 1)
    revoked = await a.get_key("k1")  # no waiting for the notification
    assert revoked is not None and revoked.revoked_at == NOW + 1
    await a.flush_usage({"k1": NOW + 9}, {})
    used = await a.get_key("k1")
    assert used is not None and used.last_used_at == NOW + 9


async def test_a_cache_hit_costs_no_query(make_store, count_key_queries) -> None:
    a = make_store()
    await a.insert_key(key("k1"), max_active=None, now=NOW)
    await cached(a, "k1")
    count_key_queries.clear()
    hits = a.cache.hits
    for _ in range(200):
        assert (await a.get_key("k1")) is not None
    assert count_key_queries == []
    assert a.cache.hits == hits + 200

    uncached = make_store(key_cache_size=0)  # the cache switched off: every lookup is a query
    for _ in range(20):
        assert (await uncached.get_key("k1")) is not None
    assert len(count_key_queries) == 20


async def test_unknown_keys_are_not_cached_and_entries_age_out(make_store, count_key_queries) -> None:
    a = make_store(key_cache_ttl=0.3, key_cache_size=2)
    for name in ("k1", "k2", "k3"):
        await a.insert_key(key(name), max_active=None, now=NOW)
    await cached(a, "k1")
    assert await a.get_key("nope") is None and await a.get_key("nope") is None
    await a.get_key("k2")
    await a.get_key("k3")
    assert len(a.cache) == 2  # bounded: the least recently used went
    count_key_queries.clear()
    await anyio.sleep(0.35)
    await a.get_key("k3")  # too old: asked again
    assert len(count_key_queries) == 1


@pytest.fixture
def store_role(qaqnuz_postgres, pg_database) -> str:
    """A login role that owns this test's database, and a DSN for it."""
    database = pg_database.rsplit("/", 1)[1]
    role = f"r_{database}"
    qaqnuz_postgres.sql(f'CREATE ROLE "{role}" LOGIN')
    qaqnuz_postgres.sql(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    return role


async def test_the_cache_is_bypassed_while_the_listener_is_not_listening(
    make_store, qaqnuz_postgres, pg_database, store_role
) -> None:
    """The listener loses its connection and cannot get it back (its role may not log in), while the pool's
    connection still works: a revocation made meanwhile is not announced to it, and must still be seen."""
    database = pg_database.rsplit("/", 1)[1]
    a = make_store(qaqnuz_postgres.dsn(database, user=store_role), pool_min=1, pool_max=1)
    await a.insert_key(key("k1"), max_active=None, now=NOW)
    await cached(a, "k1")
    assert a.listener is not None and a.listener.backend_pid is not None

    def cut_off() -> None:
        qaqnuz_postgres.sql(f'ALTER ROLE "{store_role}" NOLOGIN')  # connections already open stay
        qaqnuz_postgres.sql(f"SELECT pg_terminate_backend({a.listener.backend_pid})")

    await anyio.to_thread.run_sync(cut_off)

    async def distrusted() -> bool:
        return a.cache is not None and not a.cache.trusted

    await eventually(distrusted, within=2)
    await anyio.to_thread.run_sync(
        qaqnuz_postgres.sql, f"UPDATE qaqnuz_keys SET revoked_at = {NOW + 1} WHERE key_id = 'k1'", database
    )
    record = await a.get_key("k1")  # not the cached, active record
    assert record is not None and record.revoked_at == NOW + 1
    await anyio.sleep(0.5)  # the listener keeps failing to come back ...
    assert not a.cache.trusted and len(a.cache) == 0  # ... and nothing is cached meanwhile

    await anyio.to_thread.run_sync(qaqnuz_postgres.sql, f'ALTER ROLE "{store_role}" LOGIN')

    async def trusted() -> bool:
        return a.cache is not None and a.cache.trusted

    await eventually(trusted, within=5)
    await cached(a, "k1")
