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
    from qaqnuz.builtin.walwatch import WalWatch, _Handle

    same = WalWatch(_Handle([], b"a" * 48 + b"a" * 48), (0, 0))  # type: ignore[arg-type]
    assert same.stamp() == b"a" * 48
    assert WalWatch(_Handle([], b"a" * 48 + b"b" * 48), (0, 0)).stamp() is None  # type: ignore[arg-type]


_HOLDS_DMS_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
except OSError:
    print("held")
else:
    print("free")
"""


def _dms_lock(path) -> str:
    import subprocess
    import sys

    probe = [sys.executable, "-c", _HOLDS_DMS_LOCK, f"{path}-shm"]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.anyio
async def test_the_store_keeps_sqlites_locks_on_the_wal_index_while_it_is_open(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it; the WAL-index watch must
    never do that while a connection is open, or other processes rebuild the WAL-index under the server (the
    "dead man switch" byte 128 of the -shm file is how SQLite tells them the database is in use)."""
    path = tmp_path / "shared.db"
    server = SqliteStore(path)
    try:
        assert _dms_lock(path) == "held"
        other = SqliteStore(path)  # a second store of the same file in this process (a test, a reload)
        await other.get_key("k")
        await other.aclose()
        assert _dms_lock(path) == "held", "closing another store of the same file dropped the server's locks"
        assert (await server.get_key("k")) is None
    finally:
        await server.aclose()
    # A connection the watches know nothing about (another thread's store being opened, plain sqlite3) keeps
    # its locks when the last store of the file closes.
    import sqlite3

    plain_store = sqlite3.connect(path, isolation_level=None)
    try:
        plain_store.execute("SELECT count(*) FROM keys").fetchone()
        last = SqliteStore(path)
        await last.get_key("k")
        await last.aclose()
        assert _dms_lock(path) == "held", "closing the last store dropped another connection's locks"
    finally:
        plain_store.close()
    # The probe can tell: a plain connection's locks are gone once this process closes any descriptor of the file.
    import os
    import sqlite3

    plain = sqlite3.connect(tmp_path / "plain.db", isolation_level=None)
    try:
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("CREATE TABLE t (x)")
        assert _dms_lock(tmp_path / "plain.db") == "held"
        os.close(os.open(tmp_path / "plain.db-shm", os.O_RDONLY))
        assert _dms_lock(tmp_path / "plain.db") == "free"
    finally:
        plain.close()


_WRITERS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for j in range(20):
    db.execute("INSERT INTO usage VALUES (?, 'cli', 1)", (f"c{sys.argv[2]}_{j}",))
db.close()
"""
_SERVER = """
import asyncio, subprocess, sys, threading
from qaqnuz.builtin.sqlite_store import SqliteStore

store = SqliteStore(sys.argv[1])
done = threading.Event()
written = 0

def commit_in_a_loop():
    global written
    while not done.is_set():
        with store._tx() as db:
            db.execute("INSERT INTO usage VALUES (?, 'srv', 1)", (f"s{written}",))
        written += 1
        asyncio.run(store.get_key("k"))

worker = threading.Thread(target=commit_in_a_loop)
worker.start()
for batch in range(10):
    children = [subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1], f"{batch}_{k}"]) for k in range(6)]
    for child in children:
        assert child.wait() == 0
done.set()
worker.join()
asyncio.run(store.aclose())
import sqlite3
db = sqlite3.connect(sys.argv[1])
cli = db.execute("SELECT count(*) FROM usage WHERE month = 'cli'").fetchone()[0]
srv = db.execute("SELECT count(*) FROM usage WHERE month = 'srv'").fetchone()[0]
print(cli, written, srv, db.execute("PRAGMA integrity_check").fetchone()[0])
"""


def test_other_processes_writing_while_the_server_commits_lose_nothing_and_crash_nothing(tmp_path):
    """60 short-lived processes each commit 20 rows while the store commits and looks keys up in a loop: every
    row is there, the database is intact, and the server process survives (it runs in its own process, so a
    crash such as a SIGBUS from a WAL-index rebuilt under it is a failed exit, not a dead test run)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _SERVER, str(tmp_path / "busy.db"), _WRITERS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"the server process failed ({run.returncode}): {run.stderr[-2000:]}"
    cli, written, srv, integrity = run.stdout.split()
    assert (int(cli), int(srv), integrity) == (60 * 20, int(written), "ok")
