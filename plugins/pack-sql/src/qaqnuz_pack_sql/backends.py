"""The two databases behind the pack: SQLite (stdlib, in a worker thread) and PostgreSQL (psycopg 3, async pool).

Both expose `run(statement, params, read=, one=)` and `aclose()`, and both turn every driver exception into
`qaqnuz.DependencyError` or `qaqnuz.TerminalError` with a fixed public text: SQL, driver messages, DSNs and
paths never leave this module, and log lines carry exception type names only.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread

from qaqnuz import DependencyError, TerminalError

from .sqltext import Statement
from .values import row_object, sqlite_param

log = logging.getLogger("qaqnuz_pack_sql")

UNAVAILABLE = "The database is unavailable or busy. Please retry shortly."
TIMED_OUT = "The database query took too long and was cancelled."
CONSTRAINT = "The database rejected the change (a constraint was violated)."
BAD_DATA = "The database rejected the input data."
READ_ONLY = "This tool is read-only; the database refused a write."
FAILED = "The database could not run this tool."


@dataclass(frozen=True)
class Limits:
    statement_timeout_s: float
    busy_timeout_s: float
    max_rows: int


def _shape(columns: list[str] | None, rows: list[tuple[Any, ...]], rowcount: int, *, read: bool, one: bool) -> Any:
    objects = [row_object(dict(zip(columns, row, strict=False))) for row in rows] if columns is not None else []
    if read:
        if one:
            return objects[0] if objects else None
        return objects
    result: dict[str, Any] = {"rowcount": max(rowcount, 0)}
    if columns is not None:  # a write with RETURNING
        result["rows"] = objects
    return result


# -- SQLite --------------------------------------------------------------------------------------------------
# Primary result codes (https://sqlite.org/rescode.html) that mean "the database is not available right now".
_SQLITE_TRANSIENT = {
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    10: "SQLITE_IOERR",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
}
_SQLITE_INTERRUPT = 9
_SQLITE_READONLY = 8
_SQLITE_CONSTRAINT = 19
_SQLITE_MISMATCH = 20


class _Interrupted(Exception):
    """The progress handler stopped a statement (deadline passed or the call was cancelled)."""


class SqliteBackend:
    """One short-lived connection per call in a worker thread: read tools open the file read-only
    (`mode=ro`) with `PRAGMA query_only`; write tools run in `BEGIN IMMEDIATE` ... `COMMIT` in WAL mode."""

    dialect = "sqlite"

    def __init__(self, path: str, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self._wal_checked = False

    def _uri(self, mode: str) -> str:
        return f"file:{quote(self.path)}?mode={mode}"

    def _work(self, statement: Statement, params: dict[str, Any], read: bool, one: bool, stop: threading.Event) -> Any:
        deadline = time.monotonic() + self.limits.statement_timeout_s
        conn = sqlite3.connect(
            self._uri("ro" if read else "rw"),
            uri=True,
            timeout=self.limits.busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        try:
            interrupted = False

            def progress() -> int:
                nonlocal interrupted
                interrupted = stop.is_set() or time.monotonic() > deadline
                return 1 if interrupted else 0

            conn.set_progress_handler(progress, 1000)
            conn.execute("PRAGMA foreign_keys = ON")
            if read:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")
            else:
                if not self._wal_checked:
                    conn.execute("PRAGMA journal_mode = WAL")
                    self._wal_checked = True
                conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(statement.text, {k: sqlite_param(v) for k, v in params.items()})
                columns = [d[0] for d in cur.description] if cur.description is not None else None
                if columns is None:
                    rows: list[tuple[Any, ...]] = []
                elif read and one:
                    first = cur.fetchone()
                    rows = [first] if first is not None else []
                elif read:
                    rows = cur.fetchmany(self.limits.max_rows)
                else:
                    rows = cur.fetchall()
                rowcount = cur.rowcount
                cur.close()
                conn.execute("COMMIT" if not read else "ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            return _shape(columns, rows, rowcount, read=read, one=one)
        except sqlite3.OperationalError as exc:
            if interrupted or getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_INTERRUPT:
                raise _Interrupted from None
            raise
        finally:
            conn.close()

    async def run(self, statement: Statement, params: dict[str, Any], *, read: bool, one: bool) -> Any:
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                self._work, statement, params, read, one, stop, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            stop.set()  # the progress handler ends the statement in its thread
            raise
        except _Interrupted:
            log.warning("sql: statement interrupted by the statement timeout")
            raise DependencyError("sqlite interrupted", public=TIMED_OUT) from None
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from None

    async def aclose(self) -> None:
        return None


def _sqlite_error(exc: sqlite3.Error) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    log.warning("sql: sqlite failed (%s, %s)", type(exc).__name__, name)
    detail = f"sqlite {type(exc).__name__} {name}"
    if primary in _SQLITE_TRANSIENT:
        return DependencyError(detail, public=UNAVAILABLE)
    if primary == _SQLITE_CONSTRAINT or isinstance(exc, sqlite3.IntegrityError):
        return TerminalError(detail, public=CONSTRAINT)
    if primary == _SQLITE_READONLY:
        return TerminalError(detail, public=READ_ONLY)
    if primary == _SQLITE_MISMATCH or isinstance(exc, sqlite3.DataError):
        return TerminalError(detail, public=BAD_DATA)
    return TerminalError(detail, public=FAILED)


# -- PostgreSQL ----------------------------------------------------------------------------------------------
class _DriverLogFilter(logging.Filter):
    """psycopg's pool logs connection failures with the server's message (host, port, user): keep the
    record, drop the text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            record.msg = (
                f"{record.name}: driver {record.levelname.lower()} (details withheld: they can name hosts and users)"
            )
            record.args = None
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = _DriverLogFilter()


def _guard_driver_logs() -> None:
    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class PostgresBackend:
    """A psycopg 3 `AsyncConnectionPool`, opened on first use. Each call is one transaction; read tools
    start theirs with `SET TRANSACTION READ ONLY`. Sessions carry `statement_timeout`."""

    dialect = "postgresql"

    def __init__(self, dsn: str, limits: Limits, *, min_size: int, max_size: int, pool_timeout_s: float) -> None:
        self._dsn = dsn
        self.limits = limits
        self.min_size = min_size
        self.max_size = max_size
        self.pool_timeout_s = pool_timeout_s
        self._pool: Any = None
        self._lock = anyio.Lock()
        self._closed = False
        _guard_driver_logs()

    def __repr__(self) -> str:  # never the DSN
        return f"PostgresBackend(min_size={self.min_size}, max_size={self.max_size})"

    async def _configure(self, conn: Any) -> None:
        """Session settings for every pooled connection: the statement timeout and (PostgreSQL 14+) a periodic
        check that the client is still there. When the kernel cancels a call, psycopg cannot finish cancelling
        inside the cancelled scope and closes the connection; the server then stops the orphaned query
        within a second instead of running it to the statement timeout."""
        ms = max(1, int(self.limits.statement_timeout_s * 1000))
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", [f"{ms}ms"])
        if conn.info.server_version >= 140000:
            await conn.execute("SELECT set_config('client_connection_check_interval', '1000', false)")

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._closed:
                raise DependencyError("pool closed", public=UNAVAILABLE)
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(
                    self._dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.pool_timeout_s,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    open=False,
                    name="qaqnuz-sql",
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def run(self, statement: Statement, params: dict[str, Any], *, read: bool, one: bool) -> Any:
        import psycopg

        try:
            pool = await self._get_pool()
            async with pool.connection() as conn:
                async with conn.transaction():
                    if read:
                        await conn.execute("SET TRANSACTION READ ONLY")
                    async with conn.cursor() as cur:
                        await cur.execute(statement.text, _pg_params(params))
                        columns = [d.name for d in cur.description] if cur.description is not None else None
                        if columns is None:
                            rows: list[tuple[Any, ...]] = []
                        elif read and one:
                            first = await cur.fetchone()
                            rows = [first] if first is not None else []
                        elif read:
                            rows = await cur.fetchmany(self.limits.max_rows)
                        else:
                            rows = await cur.fetchall()
                        rowcount = cur.rowcount
            return _shape(columns, rows, rowcount, read=read, one=one)
        except psycopg.Error as exc:
            raise _pg_error(exc) from None
        except OSError as exc:
            log.warning("sql: postgresql connection failed (%s)", type(exc).__name__)
            raise DependencyError(type(exc).__name__, public=UNAVAILABLE) from None

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=5)


def _pg_params(params: dict[str, Any]) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    return {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}


def _pg_error(exc: Exception) -> Exception:
    import psycopg
    from psycopg import errors

    sqlstate = getattr(exc, "sqlstate", None) or ""
    log.warning("sql: postgresql failed (%s%s)", type(exc).__name__, f", SQLSTATE {sqlstate}" if sqlstate else "")
    detail = f"postgresql {type(exc).__name__} {sqlstate}".strip()
    if isinstance(exc, errors.QueryCanceled):
        return DependencyError(detail, public=TIMED_OUT)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or sqlstate[:2] in ("08", "53", "57", "40"):
        return DependencyError(detail, public=UNAVAILABLE)
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return TerminalError(detail, public=READ_ONLY)
    if isinstance(exc, psycopg.IntegrityError):
        return TerminalError(detail, public=CONSTRAINT)
    if isinstance(exc, psycopg.DataError):
        return TerminalError(detail, public=BAD_DATA)
    return TerminalError(detail, public=FAILED)
