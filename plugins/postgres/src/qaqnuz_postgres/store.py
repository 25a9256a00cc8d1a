"""The PostgreSQL store: keys, approvals, usage and last-used times shared by every replica and the CLI.

It keeps the built-in SQLite store's semantics exactly (`qaqnuz.store_contract` holds both to them); what
differs is how each exact decision is made atomic when several processes write at once:

- minting under the brand's cap and rotating take a transaction-scoped advisory lock per brand, so the count
  and the insert cannot interleave with another replica's;
- opening an approval takes one per key, so the per-key pending cap and "one live request per exact call"
  hold across replicas;
- a decision locks the request's row (`FOR UPDATE`), and consuming is one conditional `UPDATE`: PostgreSQL
  re-checks its condition on the row a concurrent consumer just committed, so exactly one caller wins.

Every operation succeeds or raises `qaqnuz.StoreError` (the kernel then refuses the call: fail closed). It
never waits longer than `Options.deadline`: the pool hands out a connection within `connect_timeout` or gives
up, and a server that stops answering mid-query is cut off client-side. When PostgreSQL comes back, the pool
reconnects and the same store object works again; nothing needs a restart.

The pool is opened lazily, in the event loop of the first operation (the kernel builds stores synchronously,
and a CLI command may run each operation in its own `asyncio.run`). Everything bound to a loop (pool,
listener) belongs to that loop and is closed when the store is, or when the loop ends (see `_guard`); an
operation in another loop opens its own. asyncio only (psycopg's async API does not run on trio).

Texts this module raises or logs carry exception type names, SQLSTATEs and fixed words, never driver
messages, SQL or the URL: libpq messages can quote parts of a connection string.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import select
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from qaqnuz import (
    APPROVAL_COLUMNS,
    CONSOLE_USER_COLUMNS,
    KEY_COLUMNS,
    ApprovalCall,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalRequest,
    ApprovalStatus,
    AuditAnchor,
    ConfigError,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    PendingCapReached,
    StoreContext,
    StoreError,
    approval_from_row,
    console_user_from_row,
    decided_request,
    key_from_row,
    key_from_rows,
    opened_request,
)

from . import dsn, migrations
from .cache import KeyCache
from .deadline import hard_deadline
from .listener import KeyListener
from .logs import guard_driver_logs
from .settings import Options, PostgresSettings, options

#: First keys of the two-key advisory locks; the second is `hashtext(brand)` or `hashtext(key_id)`.
BRAND_LOCK = 0x71717A01
KEY_LOCK = 0x71717A02
#: The most an automatic or explicit migration may take (its statements get this as their timeout).
MIGRATE_TIMEOUT = 30.0

_KEY_FIELDS = KEY_COLUMNS
_APPROVAL_FIELDS = APPROVAL_COLUMNS
#: A key by id, or else one decoy row of the same shape (a row travels and is decoded either way: see
#: `Store.get_key`'s `fresh`).
_KEY_LOOKUP = (
    f"(SELECT {_KEY_FIELDS} FROM qaqnuz_keys WHERE key_id = %s) UNION ALL "
    "(SELECT '', 'decoy', 'decoy', 'viewer', ARRAY['decoy.read']::text[], repeat('0', 64), "
    "0::double precision, NULL::double precision, 0::double precision, NULL::double precision) LIMIT 1"
)
_ACTIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %s)"
_ANCHOR_FIELDS = 'name, seq, hash, file, "offset", time'
_EXPIRED = "(status = 'pending' AND expires_at <= %(now)s) OR (status = 'approved' AND valid_until <= %(now)s)"
_PASS_THROUGH = (StoreError, PendingCapReached)  # our own answers, raised inside an operation on purpose


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached, or did not answer in time: the call is refused; retrying later may work."""


@attrs.define(eq=False)
class _Bound:
    """What belongs to one event loop: the pool, and the listener once a key was looked up."""

    loop: asyncio.AbstractEventLoop
    pool: AsyncConnectionPool[Any]
    opened: bool = False
    closed: bool = False
    listener: KeyListener | None = None
    guard: asyncio.Task[None] | None = None
    schema_lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    schema_failures: int = 0
    schema_failure: StoreError | None = None


class PostgresStore:
    """A `qaqnuz.Store` in one PostgreSQL database (no `runs_inline`: every operation waits on the network)."""

    def __init__(
        self,
        url: str,
        opts: Options | None = None,
        *,
        password: str | None = None,
        logger: logging.Logger | None = None,
        dry_run: bool = False,
    ) -> None:
        self._url = url
        self._params = dsn.parse(url)
        self._password = password
        self.options = opts or Options()
        self.log = logger or logging.getLogger("qaqnuz.store.postgresql")
        self.dry_run = dry_run
        self.target = dsn.describe(self._params)
        self.cache = (
            KeyCache(self.options.key_cache_size, self.options.key_cache_ttl)
            if self.options.cache_enabled and not dry_run
            else None
        )
        self._bound: _Bound | None = None
        self._schema_ready = False
        self._healthy = True
        #: Why the pool's last attempt to connect failed, in fixed words (None: it succeeded).
        self.last_connect_failure: str | None = None
        guard_driver_logs([p for p in (password, self._params.get("password")) if p])

    def __repr__(self) -> str:
        return f"PostgresStore({self.target!r})"

    # -- connections -------------------------------------------------------------------------------------
    def _kwargs(self, application_name: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq counts whole seconds, at least 2; the pool's own wait (`connect_timeout`) is exact
            "connect_timeout": max(2, math.ceil(self.options.connect_timeout)),
        }
        if "application_name" not in self._params:
            kwargs["application_name"] = application_name
        if self._password is not None:
            kwargs["password"] = self._password
        return kwargs

    async def _configure(self, conn: Any) -> None:
        """Every pooled connection: the statement timeout, and an idle-in-transaction limit so a client that
        vanished mid-transaction cannot hold a lock for long."""
        statement = f"{max(1, int(self.options.statement_timeout * 1000))}ms"
        idle = f"{max(1, int(self.options.deadline * 2000))}ms"
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            [statement, idle],
        )

    def _connection_class(self) -> type[psycopg.AsyncConnection[Any]]:
        """The pool's connection class, noting why the last attempt to connect failed: the pool only retries
        quietly, and "no connection within 2s" alone would not tell an operator about a wrong password."""
        store = self

        class Tracked(psycopg.AsyncConnection[Any]):
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = await super().connect(*args, **kwargs)
                except Exception as exc:
                    store.last_connect_failure = connect_failure(exc)
                    raise
                store.last_connect_failure = None
                return conn

        return Tracked

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        opts = self.options
        return AsyncConnectionPool(
            self._url,
            connection_class=self._connection_class(),
            kwargs=self._kwargs("qaqnuz-store"),
            min_size=opts.pool_min,
            max_size=opts.pool_max,
            timeout=opts.connect_timeout,
            # A slot that keeps failing to connect is given up after this, and the next request that needs a
            # connection asks for a new one at once: recovery never waits out a long backoff.
            reconnect_timeout=max(5.0, 2 * opts.connect_timeout),
            configure=self._configure,
            open=False,
            name="qaqnuz-store",
        )

    async def _listener_connection(self) -> Any:
        return await psycopg.AsyncConnection.connect(self._url, **self._kwargs("qaqnuz-store-listener"))

    def _bind(self) -> _Bound:
        """The pool (and listener) of the running event loop, created on first use in it."""
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is not None and bound.loop is loop:
            return bound
        if bound is not None:
            self._abandon(bound)
        bound = self._bound = _Bound(loop, self._new_pool())
        bound.guard = loop.create_task(self._guard(bound), name="qaqnuz-postgres-guard")
        return bound

    def _abandon(self, bound: _Bound) -> None:
        """Leave behind what another event loop owns (it may be closed: nothing of it can be awaited here)."""
        self.log.debug("store used from another event loop; opening new connections there")
        if self.cache is not None:
            self.cache.distrust()

    @contextlib.asynccontextmanager
    async def _pooled(self, within: float) -> AsyncIterator[Any]:
        """A pooled connection, and the body using it, within `within` seconds end to end (see `deadline`);
        every failure turned into a `StoreError`."""
        try:
            bound = self._bind()
            when = bound.loop.time() + within
            async with hard_deadline(when):
                if not bound.opened:
                    await bound.pool.open(wait=False)
                    bound.opened = True
                conn = await self._usable(bound.pool)
            try:
                async with hard_deadline(when):
                    yield conn
            finally:
                await bound.pool.putconn(conn)  # rolled back, or dropped if broken
        except _PASS_THROUGH:
            self._answered()  # a refusal is an answer too
            raise
        except Exception as exc:
            raise self._failure(exc, within) from None
        self._answered()

    async def _usable(self, pool: AsyncConnectionPool[Any]) -> Any:
        """A connection from the pool that is not known to be dead.

        Checking costs nothing while a connection sat idle in silence. Something to read on an idle connection
        means the server said goodbye (a restart, a terminated backend) or sent a notice: that one gets a real
        round trip, and a dead one goes back to the pool, which drops it and opens another. So the first
        operations after PostgreSQL restarts succeed instead of failing on stale connections.
        """
        for _ in range(self.options.pool_max + 1):
            conn = await pool.getconn()
            try:
                if not _suspect(conn):
                    return conn
                await AsyncConnectionPool.check_connection(conn)
                return conn
            except Exception:
                await pool.putconn(conn)
        raise PoolTimeout("every pooled connection was dead")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection for one operation: the schema migrated first (once; not in a dry run)."""
        if not self._schema_ready and not self.dry_run:
            await self._ensure_schema()
        async with self._pooled(self.options.deadline) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

    def _failure(self, exc: BaseException, timeout: float) -> StoreError:
        """A `StoreError` that says what happened without the driver's text; logged once per outage."""
        name = type(exc).__name__
        sqlstate = getattr(exc, "sqlstate", None) or ""
        code = f", SQLSTATE {sqlstate}" if sqlstate else ""
        error: StoreError
        if isinstance(exc, PoolTimeout):
            why = f"; last attempt to connect: {self.last_connect_failure}" if self.last_connect_failure else ""
            error = StoreUnavailable(
                f"PostgreSQL store unavailable: no connection within {self.options.connect_timeout:g}s ({name}{why})"
            )
        elif isinstance(exc, TimeoutError):
            error = StoreUnavailable(f"PostgreSQL store did not answer within {timeout:g}s ({name})")
        elif isinstance(exc, pg_errors.UndefinedTable):
            error = StoreError(
                "PostgreSQL store has no schema in this database yet: run `qaqnuz store migrate` or start the "
                f"server ({name}{code})"
            )
        elif isinstance(exc, pg_errors.QueryCanceled):
            error = StoreUnavailable(f"PostgreSQL store statement timed out ({name}{code})")
        elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError) or sqlstate[:2] in (
            "08",
            "53",
            "57",
            "40",
        ):
            error = StoreUnavailable(f"PostgreSQL store unavailable ({name}{code})")
        elif isinstance(exc, RuntimeError) and "event loop" in str(exc):
            error = StoreError(f"PostgreSQL store needs a running asyncio event loop ({name})")
        else:
            error = StoreError(f"PostgreSQL store operation failed ({name}{code})")
        if isinstance(error, StoreUnavailable):
            if self._healthy:
                self._healthy = False
                self.log.warning("%s at %s; refusing what needs the store until it answers", error, self.target)
        else:
            self.log.warning("%s", error)
        return error

    def _answered(self) -> None:
        if not self._healthy:
            self._healthy = True
            self.log.warning("PostgreSQL store at %s answers again", self.target)

    # -- schema --------------------------------------------------------------------------------------------
    async def migrate(self, *, wait: bool = True) -> list[str]:
        """Apply the migrations this database lacks (under the migration lock); the names applied by this call,
        empty when it was up to date. Also runs by itself on first use, unless the store is a dry run: then
        (`wait=False`) within one operation's time, so a request is refused as retryable rather than held
        while another process runs a long migration."""
        seconds = MIGRATE_TIMEOUT if wait else self.options.statement_timeout
        async with self._pooled(seconds + self.options.connect_timeout) as conn:
            done = await migrations.apply(conn, statement_seconds=seconds, logger=self.log)
        self._schema_ready = True
        return done

    async def _ensure_schema(self) -> None:
        """Migrate once per store. Operations that queued behind a failed attempt fail with it, instead of
        each trying again in turn (a burst of requests while PostgreSQL is down must not queue up)."""
        bound = self._bind_or_fail()
        failures = bound.schema_failures
        try:  # behind another request's check: no longer than an operation may take
            await asyncio.wait_for(bound.schema_lock.acquire(), self.options.deadline)
        except TimeoutError:
            raise StoreUnavailable("the store's schema is still being checked; retry shortly") from None
        try:
            if self._schema_ready:
                return
            if bound.schema_failures != failures and bound.schema_failure is not None:
                raise type(bound.schema_failure)(str(bound.schema_failure))
            try:
                await self.migrate(wait=False)
            except StoreError as exc:
                bound.schema_failures += 1
                bound.schema_failure = exc
                raise
        finally:
            bound.schema_lock.release()

    def _bind_or_fail(self) -> _Bound:
        try:
            return self._bind()
        except RuntimeError as exc:
            raise self._failure(exc, 0) from None

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def ping(self) -> None:
        """One round trip within `connect_timeout` plus a second: readiness fails fast when PostgreSQL is down."""
        async with self._pooled(self.options.connect_timeout + 1.0) as conn:
            await conn.execute("SELECT 1")

    async def aclose(self) -> None:
        """Stop the listener and close the pool. The object stays usable: a later operation opens anew."""
        bound, self._bound = self._bound, None
        if self.cache is not None:
            self.cache.distrust()
        if bound is None:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if bound.loop is not loop:
            self._abandon(bound)
            return
        await self._shut(bound)

    async def _shut(self, bound: _Bound) -> None:
        """Close what one event loop holds (once)."""
        if bound.closed:
            return
        bound.closed = True
        if self._bound is bound:
            self._bound = None
            if self.cache is not None:
                self.cache.distrust()
        if bound.guard is not None and bound.guard is not asyncio.current_task():
            bound.guard.cancel()
        if bound.listener is not None:
            await bound.listener.stop()
        if bound.opened:
            with contextlib.suppress(Exception):
                await bound.pool.close(timeout=self.options.connect_timeout)

    async def _guard(self, bound: _Bound) -> None:
        """Lives as long as the event loop. If the loop ends with the store still open (`asyncio.run` returning
        without `aclose()`), the loop cancels every task once, this one too, and this closes the pool and the
        listener. Without it `asyncio.run` could never return: a pool worker whose connection attempt is
        cancelled takes that for a failed attempt, schedules another and waits for work again."""
        try:
            await bound.loop.create_future()
        finally:
            await self._shut(bound)

    @property
    def listener(self) -> KeyListener | None:
        """The key-change listener of the current event loop's connections, if one was started."""
        return self._bound.listener if self._bound is not None else None

    def _listen(self, bound: _Bound) -> None:
        if self.cache is None or bound.listener is not None:
            return
        bound.listener = KeyListener(
            self._listener_connection, self.cache, self.log, timeout=self.options.connect_timeout + 1.0
        )
        bound.listener.start()

    def _changed(self, key_ids: Iterable[str]) -> None:
        """This instance wrote these keys: drop them now (its own listener hears of it a moment later)."""
        if self.cache is not None:
            self.cache.evict(key_ids)

    # -- keys ----------------------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord, *, max_active: int | None, now: float) -> None:
        try:
            async with self._transaction() as conn:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", [BRAND_LOCK, record.brand]
                )
                if max_active is not None:
                    cur = await conn.execute(
                        f"SELECT count(*) FROM qaqnuz_keys WHERE brand = %s AND {_ACTIVE}", [record.brand, now]
                    )
                    (active,) = await cur.fetchone()
                    if active >= max_active:
                        raise KeyCapReached(int(active), max_active)
                await _insert_key(conn, record)
        finally:
            self._changed((record.key_id,))

    async def get_key(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        """From the cache while it is trusted (see `cache` and `listener`); else, on a miss, and when `fresh`
        (see `Store.get_key`), one indexed read. Only known keys are cached, so random ids cannot fill it."""
        ticket = None
        if self.cache is not None:
            bound = self._bind_or_fail()  # first: using another event loop distrusts the cache
            hit = None if fresh else self.cache.get(key_id)
            if hit is not None:
                return hit
            self._listen(bound)
            ticket = self.cache.ticket()
        record = key_from_rows(await self._rows(_KEY_LOOKUP, [key_id]))
        if record is not None and self.cache is not None:
            self.cache.put(key_id, record, ticket)
        return record

    async def list_keys(self, brand: str | None = None) -> list[KeyRecord]:
        if brand is None:
            rows = await self._rows(f"SELECT {_KEY_FIELDS} FROM qaqnuz_keys ORDER BY brand, created_at, seq")
        else:
            rows = await self._rows(
                f"SELECT {_KEY_FIELDS} FROM qaqnuz_keys WHERE brand = %s ORDER BY created_at, seq", [brand]
            )
        return [key_from_row(r) for r in rows]

    async def revoke_key(self, key_id: str, now: float) -> bool:
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "UPDATE qaqnuz_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL", [now, key_id]
                )
                return bool(cur.rowcount == 1)
        finally:
            self._changed((key_id,))

    async def rotate_key(self, old_key_id: str, new: KeyRecord, now: float) -> None:
        try:
            async with self._transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", [BRAND_LOCK, new.brand])
                cur = await conn.execute(
                    f"UPDATE qaqnuz_keys SET revoked_at = %s WHERE key_id = %s AND {_ACTIVE}", [now, old_key_id, now]
                )
                if cur.rowcount != 1:
                    raise KeyNotActive(old_key_id)
                await _insert_key(conn, new)
        finally:
            self._changed((old_key_id, new.key_id))

    async def update_key_scopes(self, key_id: str, scopes: Sequence[str], now: float) -> None:
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    f"UPDATE qaqnuz_keys SET scopes = %s::text[] WHERE key_id = %s AND {_ACTIVE}",
                    [list(scopes), key_id, now],
                )
                if cur.rowcount != 1:
                    raise KeyNotActive(key_id)
        finally:
            self._changed((key_id,))

    async def flush_usage(self, last_used: Mapping[str, float], usage: Mapping[tuple[str, str], int]) -> None:
        """Rows are written in key and (brand, month) order, so two replicas flushing at once never deadlock."""
        if not last_used and not usage:
            return
        try:
            async with self._transaction() as conn, conn.cursor() as cur:
                if last_used:
                    await cur.executemany(
                        "UPDATE qaqnuz_keys SET last_used_at = GREATEST(last_used_at, %s) WHERE key_id = %s",
                        [(ts, key_id) for key_id, ts in sorted(last_used.items())],
                    )
                if usage:
                    await cur.executemany(
                        "INSERT INTO qaqnuz_usage (brand, month, calls) VALUES (%s, %s, %s) "
                        "ON CONFLICT (brand, month) DO UPDATE SET calls = qaqnuz_usage.calls + EXCLUDED.calls",
                        [(brand, month, n) for (brand, month), n in sorted(usage.items())],
                    )
        finally:
            self._changed(last_used)  # last_used_at is not announced to other replicas (see migrations)

    async def usage(self, brand: str, month: str) -> int:
        rows = await self._rows("SELECT calls FROM qaqnuz_usage WHERE brand = %s AND month = %s", [brand, month])
        return int(rows[0][0]) if rows else 0

    # -- approvals -------------------------------------------------------------------------------------------
    async def open_approval(
        self, call: ApprovalCall, *, new_id: str, now: float, pending_ttl: float
    ) -> ApprovalRequest:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", [KEY_LOCK, call.key_id])
            cur = await conn.execute(
                f"SELECT {_APPROVAL_FIELDS} FROM qaqnuz_approvals WHERE brand = %s AND key_id = %s AND tool = %s "
                "AND args_hash = %s AND tool_digest = %s AND NOT closed AND status <> 'consumed' "
                "ORDER BY created_at DESC, seq DESC LIMIT 1",
                [call.brand, call.key_id, call.tool, call.args_hash, call.tool_digest],
            )
            row = await cur.fetchone()
            if row is not None:
                record = approval_from_row(row)
                if record.effective_status(now) is not record.status:
                    await conn.execute(
                        "UPDATE qaqnuz_approvals SET status = 'expired', arguments = NULL WHERE approval_id = %s",
                        [record.approval_id],
                    )
                    record = attrs.evolve(record, status=ApprovalStatus.EXPIRED, arguments=None)
                return record
            cur = await conn.execute(
                "SELECT count(*) FROM qaqnuz_approvals WHERE key_id = %s AND status = 'pending' AND NOT closed "
                "AND expires_at > %s",
                [call.key_id, now],
            )
            (pending,) = await cur.fetchone()
            if pending >= call.max_pending:
                raise PendingCapReached(int(pending), call.max_pending)
            await conn.execute(
                "INSERT INTO qaqnuz_approvals (approval_id, brand, key_id, tool, args_hash, status, created_at, "
                "expires_at, tool_digest, key_name, arguments, arguments_truncated) "
                "VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s)",
                [
                    new_id,
                    call.brand,
                    call.key_id,
                    call.tool,
                    call.args_hash,
                    now,
                    now + pending_ttl,
                    call.tool_digest,
                    call.key_name,
                    # ASCII: a lone surrogate in a string argument can then never fail the encoding
                    json.dumps(call.arguments, ensure_ascii=True, separators=(",", ":")),
                    bool(call.arguments_truncated),
                ],
            )
        return opened_request(call, new_id, now, pending_ttl)

    async def get_approval(self, approval_id: str) -> ApprovalRequest | None:
        rows = await self._rows(
            f"SELECT {_APPROVAL_FIELDS} FROM qaqnuz_approvals WHERE approval_id = %s", [approval_id]
        )
        return approval_from_row(rows[0]) if rows else None

    async def list_approvals(self, brand: str | None = None, *, include_closed: bool = False) -> list[ApprovalRequest]:
        sql = f"SELECT {_APPROVAL_FIELDS} FROM qaqnuz_approvals WHERE true"
        params: list[Any] = []
        if brand is not None:
            sql += " AND brand = %s"
            params.append(brand)
        if not include_closed:
            sql += " AND NOT closed AND status IN ('pending', 'approved')"
        return [approval_from_row(r) for r in await self._rows(sql + " ORDER BY created_at, seq", params)]

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
    ) -> ApprovalRequest:
        """The row is locked for the decision, so two deciders (two replicas, a replica and the CLI) cannot both
        succeed. A pending request found past its expiry is marked expired (committed) before refusing."""
        async with self._transaction() as conn:
            cur = await conn.execute(
                f"SELECT {_APPROVAL_FIELDS} FROM qaqnuz_approvals WHERE approval_id = %s FOR UPDATE", [approval_id]
            )
            row = await cur.fetchone()
            if row is None:
                raise ApprovalNotFound(approval_id)
            record = approval_from_row(row)
            if record.status is ApprovalStatus.PENDING and record.expires_at <= now:
                await conn.execute(
                    "UPDATE qaqnuz_approvals SET status = 'expired', arguments = NULL WHERE approval_id = %s",
                    [approval_id],
                )
                decided = None
            elif record.status is not ApprovalStatus.PENDING or row[-1]:
                raise ApprovalNotPending(approval_id, record.status)
            else:
                decided = decided_request(record, approve=approve, by=by, reason=reason, now=now, valid_for=valid_for)
                await conn.execute(
                    "UPDATE qaqnuz_approvals SET status = %s, decided_at = %s, decided_by = %s, reason = %s, "
                    "valid_until = %s" + ("" if approve else ", arguments = NULL") + " WHERE approval_id = %s",
                    [str(decided.status), now, by, reason, decided.valid_until, approval_id],
                )
        if decided is None:  # raised after the commit, so the expiry is kept
            raise ApprovalNotPending(approval_id, ApprovalStatus.EXPIRED)
        return decided

    async def consume_approval(self, approval_id: str, now: float) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE qaqnuz_approvals SET status = 'consumed', consumed_at = %s, closed = true, arguments = NULL "
                "WHERE approval_id = %s AND status = 'approved' AND valid_until > %s AND NOT closed",
                [now, approval_id, now],
            )
            return bool(cur.rowcount == 1)

    async def close_approval(self, approval_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE qaqnuz_approvals SET closed = true, arguments = NULL WHERE approval_id = %s", [approval_id]
            )

    async def expire_approvals(self, now: float) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(
                f"UPDATE qaqnuz_approvals SET status = 'expired', arguments = NULL WHERE NOT closed AND ({_EXPIRED})",
                {"now": now},
            )
            return int(cur.rowcount)

    # -- console users ---------------------------------------------------------------------------------
    async def put_console_user(self, user: ConsoleUser, *, replace: bool) -> bool:
        update = (
            "DO UPDATE SET role = excluded.role, brand = excluded.brand, password_hash = excluded.password_hash, "
            "created_at = excluded.created_at, sessions_after = excluded.sessions_after"
            if replace
            else "DO NOTHING"
        )
        async with self._connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO qaqnuz_console_users ({CONSOLE_USER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (name) {update}",
                [user.name, user.role, user.brand, user.password_hash, user.created_at, user.sessions_after],
            )
            return bool(cur.rowcount == 1)

    async def get_console_user(self, name: str) -> ConsoleUser | None:
        rows = await self._rows(f"SELECT {CONSOLE_USER_COLUMNS} FROM qaqnuz_console_users WHERE name = %s", [name])
        return console_user_from_row(rows[0]) if rows else None

    async def list_console_users(self) -> list[ConsoleUser]:
        rows = await self._rows(f"SELECT {CONSOLE_USER_COLUMNS} FROM qaqnuz_console_users ORDER BY name")
        return [console_user_from_row(row) for row in rows]

    async def delete_console_user(self, name: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute("DELETE FROM qaqnuz_console_users WHERE name = %s", [name])
            return bool(cur.rowcount == 1)

    async def pending_counts(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT brand, count(*) FROM qaqnuz_approvals WHERE status = 'pending' AND NOT closed GROUP BY brand"
        )
        return {brand: int(n) for brand, n in rows}

    # -- audit anchor ----------------------------------------------------------------------------------
    async def anchor_audit(self, anchor: AuditAnchor) -> bool:
        """One conditional upsert: PostgreSQL re-checks the condition on a row another replica just wrote, so
        of two anchors racing for a chain the higher `seq` stays, whichever commits last."""
        async with self._connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO qaqnuz_audit_anchors ({_ANCHOR_FIELDS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, file = excluded.file, "
                '"offset" = excluded."offset", time = excluded.time WHERE excluded.seq > qaqnuz_audit_anchors.seq',
                [anchor.name, anchor.seq, anchor.hash, anchor.file, anchor.offset, anchor.time],
            )
            return bool(cur.rowcount == 1)

    async def audit_anchor(self, name: str) -> AuditAnchor | None:
        rows = await self._rows(f"SELECT {_ANCHOR_FIELDS} FROM qaqnuz_audit_anchors WHERE name = %s", [name])
        if not rows:
            return None
        name_, seq, hash_, file, offset, time = rows[0]
        return AuditAnchor(
            name=str(name_), seq=int(seq), hash=str(hash_), file=str(file), offset=int(offset), time=float(time)
        )


#: What a failed connection attempt was, by the words libpq and the server use (English messages); fixed texts
#: only, since the message itself names hosts, users and databases.
_CONNECT_FAILURES = (
    ("password authentication failed", "password authentication failed"),
    ("authentication failed", "authentication failed"),
    ("no password supplied", "no password supplied"),
    ("no pg_hba.conf entry", "refused by pg_hba.conf"),
    ("does not exist", "the database or role does not exist"),
    ("too many", "too many connections"),
    ("starting up", "the server is starting up"),
    ("shutting down", "the server is shutting down"),
    ("Connection refused", "connection refused"),
    ("timeout", "timed out"),
    ("could not translate host name", "unknown host"),
    ("SSL", "TLS failed"),
)


def connect_failure(exc: BaseException) -> str:
    text = str(exc)
    for marker, meaning in _CONNECT_FAILURES:
        if marker in text:
            return meaning
    return type(exc).__name__


def _suspect(conn: Any) -> bool:
    """True when an idle connection is closed, broken, or has something to read (see `_usable`)."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()  # not select.select: it refuses descriptors from 1024 up, which a busy server has
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


async def _insert_key(conn: Any, record: KeyRecord) -> None:
    await conn.execute(
        "INSERT INTO qaqnuz_keys (key_id, name, brand, role, scopes, hash, created_at, expires_at) "
        "VALUES (%s, %s, %s, %s, %s::text[], %s, %s, %s)",
        [
            record.key_id,
            record.name,
            record.brand,
            record.role,
            list(record.scopes),
            record.hash,
            record.created_at,
            record.expires_at,
        ],
    )


def build(settings: PostgresSettings, ctx: StoreContext) -> PostgresStore:
    """The provider's factory: settings and URL checked together (every problem at once), the password
    resolved from its secret reference, nothing connected yet."""
    problems: list[str] = []
    opts: Options | None = None
    params: dict[str, str] = {}
    try:
        opts = options(settings, ctx.where)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        params = dsn.parse(ctx.url)
    except ConfigError as exc:
        problems.extend(exc.problems)
    password: str | None = None
    if settings.password is not None:
        if "password" in params:
            problems.append(
                f"{ctx.where} password: the store URL carries a password too; keep this one and remove the other "
                "from [server] store"
            )
        else:
            try:
                password = ctx.secret(settings.password, f"{ctx.where} password").reveal()
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    # A password in the URL came by reference (`store = { env = ... }`): the kernel refuses one written
    # into config. Either way the kernel masks it in the logs.
    return PostgresStore(ctx.url, opts, password=password, logger=ctx.logger, dry_run=ctx.dry_run)
