"""Fixtures for the PostgreSQL store's tests: a fresh database per test on the session's real cluster
(`qaqnuz_postgres` from qaqnuz.testing), store instances on it that are always closed, and a private cluster
for the tests that stop PostgreSQL or need it to check a password."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from qaqnuz.testing import postgres_cluster
from qaqnuz.testservers import PostgresServer
from qaqnuz_postgres.settings import Options
from qaqnuz_postgres.store import PostgresStore

_numbers = itertools.count(1)
MakeStore = Callable[..., PostgresStore]


@pytest.fixture
def pg_database(qaqnuz_postgres) -> str:
    """The DSN of a new, empty database of this test alone."""
    return qaqnuz_postgres.create_database(f"qzstore_{os.getpid()}_{next(_numbers)}")


@pytest.fixture
async def make_store(pg_database: str) -> AsyncIterator[MakeStore]:
    """`make_store(dsn=None, dry_run=False, **options)`: a store on this test's database (or `dsn`), closed
    after the test. Several calls give several instances, as several replicas would have."""
    stores: list[PostgresStore] = []

    def make(dsn: str | None = None, *, dry_run: bool = False, **options: object) -> PostgresStore:
        store = PostgresStore(dsn or pg_database, Options(**options), dry_run=dry_run)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


PASSWORD = "Pw-6f1c9e-not-in-any-log"
PASSWORD_ROLE = "qz_pw"


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    """A cluster of these tests alone, free to stop, start and freeze. Unlike the shared one it checks one
    role's password: `PASSWORD_ROLE` logs in over TCP with `PASSWORD` only (everyone else is trusted)."""

    def password_for_one_role(server: PostgresServer) -> None:
        hba = server.data / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())

    with postgres_cluster(password_for_one_role) as server:
        server.sql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        yield server


@pytest.fixture
def private_database(private_postgres: PostgresServer) -> Iterator[str]:
    """A new database on the private cluster (owned by `PASSWORD_ROLE`); the cluster is running again after."""
    name = f"qzprivate_{os.getpid()}_{next(_numbers)}"
    private_postgres.sql(f'CREATE DATABASE "{name}" OWNER {PASSWORD_ROLE}')
    try:
        yield name
    finally:
        if not (private_postgres.data / "postmaster.pid").exists():
            private_postgres.start()


@pytest.fixture
def password_login() -> tuple[str, str]:
    """(role, password) of the private cluster's role that must give its password."""
    return PASSWORD_ROLE, PASSWORD
