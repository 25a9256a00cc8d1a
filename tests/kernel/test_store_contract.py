"""The built-in `sqlite` store against the shared store contract every store plugin runs."""

from __future__ import annotations

import pytest

from qaqnuz.builtin.sqlite_store import SqliteStore
from qaqnuz.store_contract import StoreContract


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path):
        store = SqliteStore(tmp_path / "store.db")
        yield store
        await store.aclose()


@pytest.mark.anyio
async def test_a_key_cached_by_one_connection_is_seen_revoked_after_another_revokes_it(tmp_path):
    """The sqlite store caches key lookups; another process's revocation must still apply on the next one."""
    from qaqnuz.store_contract import NOW, key

    server, cli = SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
    try:
        await cli.insert_key(key("k1"), max_active=None, now=NOW)
        assert (await server.get_key("k1")).revoked_at is None  # now cached by the server's connection
        assert (await server.get_key("k1")).revoked_at is None
        assert await cli.revoke_key("k1", NOW + 1)
        assert (await server.get_key("k1")).revoked_at == NOW + 1
        await cli.insert_key(key("k2"), max_active=None, now=NOW)
        assert await server.get_key("k2") is not None
    finally:
        await server.aclose()
        await cli.aclose()


_OTHER_PROCESS = """
import asyncio, sys
from qaqnuz.builtin.sqlite_store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    for line in sys.stdin:
        await store.update_key_scopes("k1", line.split(), 0.0)
        print("done", flush=True)
    await store.aclose()

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_every_change_another_process_commits_is_seen_on_the_next_lookup_and_none_costs_a_query(tmp_path):
    """The lookup asks SQLite only when the WAL-index header moved (see `walwatch`): so each of many commits by
    another process must be seen by the very next lookup, and lookups with nothing committed run no statement."""
    import subprocess
    import sys

    from qaqnuz.store_contract import NOW, key

    path = tmp_path / "shared.db"
    server = SqliteStore(path)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server._watch is not None, "the WAL-index of a fresh store could not be read"
        await server.insert_key(key("k1"), max_active=None, now=NOW)
        statements: list[str] = []
        server._db.set_trace_callback(statements.append)
        for round_ in range(60):
            scopes = sorted({f"s{round_}.read", f"s{round_ % 7}.write"})
            other.stdin.write(" ".join(scopes) + "\n")
            other.stdin.flush()
            assert other.stdout.readline() == "done\n"
            assert sorted((await server.get_key("k1")).scopes) == scopes, f"round {round_}: a stale key"
            statements.clear()
            for _ in range(5):
                assert sorted((await server.get_key("k1")).scopes) == scopes
            assert statements == [], f"round {round_}: an unchanged database was queried: {statements}"
    finally:
        other.stdin.close()
        other.wait(timeout=30)
        await server.aclose()


def test_a_header_caught_between_its_two_copies_is_not_trusted():
    """A writer updates the second copy, then the first: while they differ the watch answers None (ask SQLite)."""
    from qaqnuz.builtin.walwatch import WalWatch

    same = WalWatch(b"a" * 48 + b"a" * 48)  # type: ignore[arg-type]
    assert same.stamp() == b"a" * 48
    assert WalWatch(b"a" * 48 + b"b" * 48).stamp() is None  # type: ignore[arg-type]
