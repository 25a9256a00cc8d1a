"""The default rate limiter: the memory limiter's sliding logs, kept in a SQLite file every process on the
machine shares.

Each stdio client starts its own server process, and several HTTP servers may run on one host; a limit kept
in one process's memory lets each of them admit the whole limit. Here each admission is one
`BEGIN IMMEDIATE` transaction on the limiter file (`[server] limiter_file`, by default beside the store;
WAL mode): drop the key's and the brand's entries that left their windows, count both, and append to both
only if both have room. So, across every process sharing the file, no rolling window ever admits more than
N, the two dimensions are decided together, and a refusal counts against neither (it writes nothing),
exactly as the memory limiter promises within one process.

The file is separate from the store's: a write per call there would make every process re-validate its
cached keys (the store's cache is revoked on any commit). Commits are not synced to disk one by one
(`synchronous = NORMAL`, safe in WAL mode); a file that is damaged anyway (or replaced) is set aside and
started afresh, with a warning: windows are disposable, a limiter that refuses every call is not.

Each bucket (a key, a brand) keeps its number of entries, its window and its newest entry beside them, so
an admission costs the same whatever the limit (60-70 µs of CPU against the memory limiter's 3 to 4, by
`bench/limiter.py`), and a bucket whose newest entry has left its own window is swept whole, now and then,
by whichever process. The
clock is the machine's monotonic clock, which every process reads alike; it restarts at boot, so the file
remembers the boot it was written in and forgets every window when that changes. A file another process
holds is retried on the event loop (never by sleeping in it) until `LOCK_WAIT_S`; any other error fails the
call closed, as a limiter error, and the file is opened anew for the next one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from qaqnuz.contexts import LimiterContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Admission, Limit, Provider

log = logging.getLogger("qaqnuz.limiter")

#: How long an admission keeps retrying a file another process holds (its transactions take microseconds).
LOCK_WAIT_S = 2.0
#: Buckets whose newest entry left their window are swept after this many admissions in a process.
SWEEP_EVERY = 4096

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits (bucket TEXT NOT NULL, ts REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hits_by_bucket ON hits (bucket, ts)",
    # per bucket: its number of entries (counting a busy brand's entries costs O(limit)), the longest window
    # it was asked about and its newest entry (once `newest + window` is past, none of it is live)
    "CREATE TABLE IF NOT EXISTS buckets (bucket TEXT PRIMARY KEY, n INTEGER NOT NULL, window REAL NOT NULL,"
    " newest REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


class SqliteLimiter:
    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()  # one connection, one transaction at a time in this process
        self._db: sqlite3.Connection | None = None  # opened by the first call: `config check` creates no file
        self._inode: tuple[int, int] | None = None
        self._admissions = 0
        self._last_error = ""

    async def admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.0005
        while True:
            try:
                return self._admit(key_id, key_limit, brand, brand_limit)
            except sqlite3.Error as exc:
                if not _busy(exc):
                    self._failed(exc)
                    raise
                if time.monotonic() >= deadline:
                    raise
            await anyio.sleep(pause)  # another process holds the file for a moment: let this loop work meanwhile
            pause = min(pause * 2, 0.02)

    def _admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        buckets = ((f"k:{key_id}", key_limit, "key"), (f"b:{brand}", brand_limit, "brand"))
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()  # read under the write lock: no entry is later than this
                counts: list[int] = []
                refused: list[tuple[float, str]] = []
                for bucket, limit, dimension in buckets:
                    gone = db.execute("DELETE FROM hits WHERE bucket = ? AND ts <= ?", (bucket, now - limit.window_s))
                    row = db.execute("SELECT n FROM buckets WHERE bucket = ?", (bucket,)).fetchone()
                    count = max(0, (row[0] if row else 0) - gone.rowcount)
                    counts.append(count)
                    if count >= limit.count:  # room again once the entry `count - limit` from the oldest leaves
                        oldest = db.execute(
                            "SELECT ts FROM hits WHERE bucket = ? ORDER BY ts LIMIT 1 OFFSET ?",
                            (bucket, count - limit.count),
                        ).fetchone()[0]
                        refused.append((oldest + limit.window_s - now, dimension))
                if refused:
                    db.execute("ROLLBACK")  # a refusal writes nothing (what expired is dropped by the next write)
                else:
                    db.execute(
                        "INSERT INTO hits (bucket, ts) VALUES (?, ?), (?, ?)", (buckets[0][0], now, buckets[1][0], now)
                    )
                    db.executemany(
                        "INSERT INTO buckets (bucket, n, window, newest) VALUES (?, ?, ?, ?) ON CONFLICT (bucket) DO "
                        "UPDATE SET n = excluded.n, window = max(window, excluded.window), newest = excluded.newest",
                        [
                            (bucket, count + 1, limit.window_s, now)
                            for (bucket, limit, _), count in zip(buckets, counts, strict=True)
                        ],
                    )
                    self._admissions += 1
                    if self._admissions % SWEEP_EVERY == 0:
                        _sweep(db, now)
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._admissions % SWEEP_EVERY == 0 and not refused:
                self._reopen_if_replaced()
        if refused:
            wait, dimension = max(refused)
            return Admission(False, max(1, math.ceil(wait * 1000)), dimension)
        return Admission(True)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = _open(self.path)
            self._inode = _inode_of(self.path)
        return self._db

    def _reopen_if_replaced(self) -> None:
        """A file deleted or replaced under a running process would split the machine's windows in two."""
        if _inode_of(self.path) != self._inode:
            log.warning("the rate-limit file %s was removed or replaced; opening it anew", self.path)
            self._close()

    def _failed(self, exc: sqlite3.Error) -> None:
        """Not a busy file: this call fails closed, the connection is dropped (the next call opens the file
        anew), and the error is logged once while it repeats."""
        with self._lock:
            self._close()
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_error:
            self._last_error = text
            log.error("the rate-limit file %s failed (%s); calls are refused until it answers", self.path, text)

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    async def ready(self) -> bool:
        try:
            with self._lock:
                self._connection().execute("SELECT 1 FROM buckets LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            if not _busy(exc):  # busy: another process is writing to it, which is an answer
                self._failed(exc)
                raise
        return True

    async def aclose(self) -> None:
        with self._lock:
            self._close()


def _sweep(db: sqlite3.Connection, now: float) -> None:
    """Drop the buckets none of whose entries is live any more (idle keys, rotated ones): each judged by its
    own window, so a bucket with a long window is never cut short by one with a short window."""
    db.execute("DELETE FROM hits WHERE bucket IN (SELECT bucket FROM buckets WHERE newest + window <= ?)", (now,))
    db.execute("DELETE FROM buckets WHERE newest + window <= ?", (now,))


def _boot_id() -> str:
    """What tells one boot of the machine from the next (the monotonic clock restarts at boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return f"booted-at-{int((time.time() - time.monotonic()) // 60)}"  # where there is no boot id: the minute


def _open(path: str) -> sqlite3.Connection:
    """The file, created 0600 (its -wal and -shm files take its mode), set aside and made anew if damaged."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        return _connect(path)
    except sqlite3.DatabaseError as exc:
        if path == ":memory:" or _errorcode(exc) not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise
    aside = f"{path}.damaged-{int(time.time())}"
    log.warning("the rate-limit file %s is damaged; set aside as %s, windows start afresh", path, aside)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return _connect(path)


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            boot = _boot_id()
            row = db.execute("SELECT value FROM meta WHERE name = 'boot'").fetchone()
            if row is None or row[0] != boot:  # entries stamped by an earlier boot's clock mean nothing now
                db.execute("DELETE FROM hits")
                db.execute("DELETE FROM buckets")
                db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('boot', ?)", (boot,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except BaseException:
        db.close()
        raise
    return db


def _inode_of(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _errorcode(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _busy(exc: sqlite3.Error) -> bool:
    return _errorcode(exc) == sqlite3.SQLITE_BUSY


def _factory(settings: object, ctx: LimiterContext) -> SqliteLimiter:
    # The monotonic clock is the machine's, so every process stamps entries alike (and a step of the wall
    # clock moves no window); a test's fake clock is used as given.
    return SqliteLimiter(ctx.limiter_file, time.monotonic if ctx.clock is time.time else ctx.clock)


@hookimpl
def qaqnuz_rate_limiters() -> list[Provider]:
    return [
        Provider(
            "sqlite",
            _factory,
            "Sliding-log limiter in a SQLite file ([server] limiter_file) shared by every process on the machine.",
        )
    ]
