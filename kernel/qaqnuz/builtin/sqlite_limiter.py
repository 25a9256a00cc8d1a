"""The default rate limiter: the memory limiter's sliding logs, kept in a SQLite file every process on the
machine shares.

Two stdio clients each start their own server process, and `--workers N` runs N; a limit kept in one
process's memory lets each of them admit the whole limit. Here each admission is one `BEGIN IMMEDIATE`
transaction on `[server] limiter_file` (WAL mode): drop the key's and the brand's entries that left their
windows, count both, and append to both only if both have room. So, across every process sharing the file,
no rolling window ever admits more than N, the two dimensions are decided together, and a refusal counts
against neither, exactly as the memory limiter promises within one process.

The file is separate from the store's: a write per call there would make every process re-validate its
cached keys (the store's cache is revoked on any commit). Nothing here is durable on purpose
(`synchronous = OFF`): after a crash a window may forget some calls, never invent them.

The clock is the machine's monotonic clock, which every process reads alike; it restarts at boot, so when a
process opens the file, entries stamped later than its now are from an earlier boot and are dropped. Each
bucket's number of entries is kept beside them, so an admission costs the same whatever the limit (about
45 µs of CPU against the memory limiter's 2). A locked file is retried on the event loop (never by sleeping
in it) until `LOCK_WAIT_S`, then the call fails closed as a limiter error.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from qaqnuz.contexts import LimiterContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Admission, Limit, Provider

#: How long an admission keeps retrying a file another process holds (its transactions take microseconds).
LOCK_WAIT_S = 2.0
#: Entries of windows nobody asked about lately are swept after this many admissions.
SWEEP_EVERY = 4096

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits (bucket TEXT NOT NULL, ts REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hits_by_bucket ON hits (bucket, ts)",
    # each bucket's number of entries, kept with them: counting the entries of a busy brand costs O(limit)
    "CREATE TABLE IF NOT EXISTS counts (bucket TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
)


class SqliteLimiter:
    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()  # one connection, one transaction at a time in this process
        self._db: sqlite3.Connection | None = None  # opened by the first call: `config check` creates no file
        self._admissions = 0
        self._longest_window = 0.0

    async def admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.0005
        while True:
            try:
                return self._admit(key_id, key_limit, brand, brand_limit)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            await anyio.sleep(pause)  # another process holds the file for a moment: let this loop work meanwhile
            pause = min(pause * 2, 0.02)

    def _admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        buckets = ((f"k:{key_id}", key_limit, "key"), (f"b:{brand}", brand_limit, "brand"))
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()  # read under the write lock: no live entry is later than this
                counts: list[int] = []
                refused: list[tuple[float, str]] = []
                for bucket, limit, dimension in buckets:
                    gone = db.execute("DELETE FROM hits WHERE bucket = ? AND ts <= ?", (bucket, now - limit.window_s))
                    row = db.execute("SELECT n FROM counts WHERE bucket = ?", (bucket,)).fetchone()
                    count = max(0, (row[0] if row else 0) - gone.rowcount)
                    counts.append(count)
                    if count >= limit.count:  # room again once the entry `count - limit` from the oldest leaves
                        oldest = db.execute(
                            "SELECT ts FROM hits WHERE bucket = ? ORDER BY ts LIMIT 1 OFFSET ?",
                            (bucket, count - limit.count),
                        ).fetchone()[0]
                        refused.append((oldest + limit.window_s - now, dimension))
                if not refused:
                    db.execute(
                        "INSERT INTO hits (bucket, ts) VALUES (?, ?), (?, ?)", (buckets[0][0], now, buckets[1][0], now)
                    )
                    counts = [count + 1 for count in counts]
                db.executemany(
                    "INSERT INTO counts (bucket, n) VALUES (?, ?) ON CONFLICT (bucket) DO UPDATE SET n = excluded.n",
                    [(bucket, count) for (bucket, _, _), count in zip(buckets, counts, strict=True)],
                )
                if not refused:
                    self._swept(db, now, max(key_limit.window_s, brand_limit.window_s))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if refused:
            wait, dimension = max(refused)
            return Admission(False, max(1, math.ceil(wait * 1000)), dimension)
        return Admission(True)

    def _swept(self, db: sqlite3.Connection, now: float, window: float) -> None:
        """Now and then, drop every entry older than the longest window asked about (idle keys' entries),
        and count what is left anew."""
        self._longest_window = max(self._longest_window, window)
        self._admissions += 1
        if self._admissions % SWEEP_EVERY == 0:
            db.execute("DELETE FROM hits WHERE ts <= ?", (now - self._longest_window,))
            _recount(db)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = _open(self.path, self._clock)
        return self._db

    async def ready(self) -> bool:
        with self._lock:
            self._connection().execute("SELECT 1 FROM counts LIMIT 1").fetchone()
        return True

    async def aclose(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _forget_earlier_boots(db: sqlite3.Connection, clock: Callable[[], float]) -> None:
    """Entries stamped later than now (under the write lock) were stamped by the monotonic clock of an earlier
    boot: drop them, and count the rest anew."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("DELETE FROM hits WHERE ts > ?", (clock(),)).rowcount:
            _recount(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _recount(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM counts")
    db.execute("INSERT INTO counts (bucket, n) SELECT bucket, count(*) FROM hits GROUP BY bucket")


def _open(path: str, clock: Callable[[], float]) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        for attempt in range(200):  # creating the file races with other processes starting at once
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = OFF")
                for statement in _SCHEMA:
                    db.execute(statement)
                _forget_earlier_boots(db, clock)
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or attempt == 199:
                    raise
                time.sleep(0.01)
    except BaseException:
        db.close()
        raise
    if path != ":memory:":
        Path(path).chmod(0o600)
    return db


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


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
