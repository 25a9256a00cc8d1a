"""Versioned, idempotent migrations: applied once, recorded, safe when replicas start together, and never in
a dry run."""

from __future__ import annotations

import anyio
import psycopg
import pytest

from qaqnuz import StoreError
from qaqnuz.store_contract import DAY, NOW, call, key
from qaqnuz_postgres import migrations
from qaqnuz_postgres.migrations import LOCK, MIGRATIONS

pytestmark = pytest.mark.anyio
ALL = [m.name for m in MIGRATIONS]


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def recorded(server, dsn: str) -> str:
    exists = server.sql("SELECT to_regclass('qaqnuz_schema_migrations') IS NOT NULL", database_of(dsn))
    if exists != "t":
        return ""
    return server.sql("SELECT version || ':' || name FROM qaqnuz_schema_migrations ORDER BY version", database_of(dsn))


async def test_migrate_applies_each_version_once_and_records_it(make_store, qaqnuz_postgres, pg_database) -> None:
    store = make_store()
    assert await store.migrate() == ALL
    assert await store.migrate() == []
    assert await make_store().migrate() == []  # another instance: nothing left either
    assert recorded(qaqnuz_postgres, pg_database) == "\n".join(f"{m.version}:{m.name}" for m in MIGRATIONS)
    tables = qaqnuz_postgres.sql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE tablename LIKE 'qaqnuz%'",
        database_of(pg_database),
    )
    assert tables == (
        "qaqnuz_approvals,qaqnuz_audit_anchors,qaqnuz_console_users,qaqnuz_keys,qaqnuz_schema_migrations,qaqnuz_usage"
    )


async def test_the_first_operation_migrates(make_store, qaqnuz_postgres, pg_database) -> None:
    assert await make_store().list_keys() == []
    assert recorded(qaqnuz_postgres, pg_database).startswith("1:")


async def test_replicas_migrating_at_once_apply_each_version_exactly_once(make_store, pg_database) -> None:
    """The migration lock is held elsewhere while five replicas start: they all find the schema missing, queue
    on the lock, and when it is released exactly one applies the migrations."""
    stores = [make_store() for _ in range(5)]
    results: list[list[str]] = []
    async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s::bigint)", [LOCK])

        async def migrate(store) -> None:
            results.append(await store.migrate())

        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(migrate, store)
            await anyio.sleep(0.5)
            waiting = await holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            (queued,) = await waiting.fetchone()
            assert queued == 5
            assert results == []
            await holder.execute("SELECT pg_advisory_unlock(%s::bigint)", [LOCK])
    assert sorted(results) == [[]] * 4 + [ALL]
    async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
        assert await migrations.applied(conn) == {m.version: m.name for m in MIGRATIONS}


async def test_replicas_starting_together_all_work(make_store) -> None:
    stores = [make_store() for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.list_keys)
    assert [await s.list_keys() for s in stores] == [[]] * 6


async def test_a_request_is_not_held_behind_a_long_migration_elsewhere(make_store, pg_database) -> None:
    """Another process holds the migration lock (a long migration): a store's first operation is refused
    within its own time (retryable), not after the 30 s an explicit `migrate()` may wait; then it works."""
    store = make_store(connect_timeout=1.0, statement_timeout=0.5)
    with psycopg.connect(pg_database, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s::bigint)", [LOCK])
        started = anyio.current_time()
        with pytest.raises(StoreError):
            await store.list_keys()
        assert anyio.current_time() - started < store.options.deadline + 1.0
    assert await store.list_keys() == []  # the lock released: migrated, served


async def test_a_dry_run_creates_nothing_and_says_what_to_do(make_store, qaqnuz_postgres, pg_database) -> None:
    """A dry run (`qaqnuz config check`) never migrates: on a database without the schema an operation fails
    with a StoreError naming the fix; once migrated, it reads normally."""
    dry = make_store(dry_run=True)
    with pytest.raises(StoreError, match="qaqnuz store migrate"):
        await dry.list_keys()
    await dry.ping()
    assert recorded(qaqnuz_postgres, pg_database) == ""
    assert dry.cache is None
    await make_store().migrate()
    assert await dry.list_keys() == [] and await dry.get_key("k1") is None


async def test_after_the_owner_migrated_a_role_with_row_rights_only_runs_the_store(
    make_store, qaqnuz_postgres, pg_database
) -> None:
    """The servers' role needs no DDL rights: the owner runs the migrations, then SELECT, INSERT and UPDATE on
    the tables are enough for everything the store does."""
    database = database_of(pg_database)
    role = f"rw_{database}"
    await make_store().migrate()
    qaqnuz_postgres.sql(f'CREATE ROLE "{role}" LOGIN')
    qaqnuz_postgres.sql(f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "{role}"', database)
    qaqnuz_postgres.sql(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"', database)
    dsn = qaqnuz_postgres.dsn(database, user=role)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # it really has no DDL rights
            await conn.execute("CREATE TABLE nope (x int)")
    store = make_store(dsn, pool_min=0)
    await store.insert_key(key("k1"), max_active=2, now=NOW)
    await store.rotate_key("k1", key("k2"), NOW)
    await store.update_key_scopes("k2", ("a.b",), NOW)
    await store.flush_usage({"k2": NOW}, {("acme", "2027-01"): 1})
    await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
    await store.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW, valid_for=60)
    assert await store.consume_approval("apr_1", NOW + 1)
    assert await store.expire_approvals(NOW) == 0 and await store.pending_counts() == {}
    assert await store.migrate() == []
