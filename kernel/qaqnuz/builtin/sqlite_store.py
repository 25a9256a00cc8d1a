"""The built-in store provider `sqlite`: one SQLite file in WAL mode, shared by the server and the CLI.

Selected by `[server] store = "sqlite:///path/to/qaqnuz.db"` (relative to the config file). Every exact
decision is one `BEGIN IMMEDIATE` transaction, so writers in other processes wait and readers never block.
Calls are short and run inline on the event loop (the hot path only does one indexed read per request).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from qaqnuz.builtin.walwatch import WalWatch
from qaqnuz.contexts import StoreContext
from qaqnuz.errors import ConfigError, PendingCapReached, StoreError
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import ApprovalCall, ApprovalRequest, ApprovalStatus, Provider
from qaqnuz.store import (
    APPROVAL_COLUMNS,
    CONSOLE_USER_COLUMNS,
    DECOY_KEY_ROW,
    KEY_COLUMNS,
    ApprovalNotFound,
    ApprovalNotPending,
    AuditAnchor,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    approval_from_row,
    console_user_from_row,
    decided_request,
    key_from_row,
    key_from_rows,
    opened_request,
)

SCHEME = "sqlite"

#: The columns of `keys`, and of `key_decoy`: one row of the same shape that a lookup of an unknown key id
#: reads instead (see `_KEY_LOOKUP`).
_KEY_TABLE = """(
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    brand TEXT NOT NULL,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL
)"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys KEY_TABLE;
CREATE INDEX IF NOT EXISTS keys_brand ON keys (brand);
CREATE TABLE IF NOT EXISTS key_decoy KEY_TABLE;
CREATE TABLE IF NOT EXISTS approvals (
    approval_id TEXT PRIMARY KEY,
    brand TEXT NOT NULL,
    key_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    args_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT,
    reason TEXT,
    valid_until REAL,
    consumed_at REAL,
    closed INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS approvals_brand ON approvals (brand, status);
CREATE TABLE IF NOT EXISTS console_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    brand TEXT,
    password_hash TEXT,
    created_at REAL NOT NULL,
    sessions_after REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit_anchors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    file TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    brand TEXT NOT NULL,
    month TEXT NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (brand, month)
);
""".replace("KEY_TABLE", _KEY_TABLE)

#: Columns added after the first release, with their definitions: added to older files on open.
_APPROVAL_COLUMNS = (
    ("tool_digest", "TEXT NOT NULL DEFAULT ''"),
    ("key_name", "TEXT NOT NULL DEFAULT ''"),
    ("arguments", "TEXT"),
    ("arguments_truncated", "INTEGER NOT NULL DEFAULT 0"),
)
_INDEXES = """
CREATE INDEX IF NOT EXISTS approvals_call2 ON approvals (brand, key_id, tool, args_hash, tool_digest, closed);
CREATE INDEX IF NOT EXISTS approvals_key ON approvals (key_id, status, closed);
"""
_KEY_CACHE = 10_000
#: A key by id, or else the decoy row from a table of the same shape: one index probe, one row read and one
#: row decoded whether the id is known or not (see `Store.get_key`'s `fresh`). SQLite runs a compound SELECT's
#: parts in order and LIMIT stops it at the first row; were it ever otherwise, every lookup would find the
#: decoy, which is no key: refused, never let in.
_KEY_LOOKUP = (
    f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1 "
    f"UNION ALL SELECT {KEY_COLUMNS} FROM key_decoy WHERE key_id = '' LIMIT 1"
)
_APPROVAL_FIELDS = APPROVAL_COLUMNS
_ANCHOR_COLUMNS = 'name, seq, hash, file, "offset", time'
_LIVE = "(status = 'pending' AND expires_at <= :now) OR (status = 'approved' AND valid_until <= :now)"


class SqliteStore:
    """One SQLite database file. Thread-safe through one lock; cross-process safe through SQLite."""

    #: Every operation runs to completion without awaiting: admin commands drive it without an event loop.
    runs_inline = True

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        in_memory = self.path == ":memory:"  # a throwaway store: config check of a store not created yet
        if not in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}  # see get_key
        self._data_version: int | None = None
        # The database and its -wal/-shm files hold key hashes and approvals: owner-only from birth.
        previous_umask = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(approvals)")}
            for column, definition in _APPROVAL_COLUMNS:
                if column not in present:
                    self._db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {definition}")
            self._db.executescript(_INDEXES)
            if self._db.execute("SELECT COUNT(*) FROM key_decoy").fetchone()[0] == 0:
                # OR IGNORE: several processes may open a new file at once
                self._db.execute(
                    f"INSERT OR IGNORE INTO key_decoy ({KEY_COLUMNS}) VALUES ({', '.join('?' * 10)})", DECOY_KEY_ROW
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path} ({type(exc).__name__}: {exc})") from None
        finally:
            os.umask(previous_umask)
        for suffix in ("", "-wal", "-shm") if not in_memory else ():
            try:
                Path(self.path + suffix).chmod(0o600)
            except OSError:
                pass
        self._watch = None if in_memory else WalWatch.open(self.path)
        self._stamp: bytes | None = None  # the WAL-index header when `data_version` was last asked

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()
            if self._watch is not None:  # after the connection: closing a descriptor drops SQLite's locks
                self._watch.close()
                self._watch = None

    async def ping(self) -> None:
        self._query("SELECT 1")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers from other processes wait, readers are not blocked. Any write
        of this connection drops the key cache (its own commits do not move its `data_version`)."""
        with self._lock:
            self._keys.clear()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"store transaction failed: {type(exc).__name__}") from None

    def _query(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                args = params if isinstance(params, Mapping) else tuple(params)
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store query failed: {type(exc).__name__}") from None

    # -- keys ------------------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord, *, max_active: int | None, now: float) -> None:
        with self._tx() as db:
            if max_active is not None:
                (active,) = db.execute(
                    "SELECT COUNT(*) FROM keys WHERE brand = ? AND revoked_at IS NULL "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (record.brand, now),
                ).fetchone()
                if active >= max_active:
                    raise KeyCapReached(active, max_active)
            _insert_key(db, record)

    async def get_key(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        """One key, from a cache that is dropped whenever the database may have changed: by another process
        (SQLite's `data_version` moves when another connection commits) or by this one's own key writes. So a
        revocation anywhere takes effect on the next lookup, and an unchanged database costs no SELECT.
        SQLite is asked only when the WAL-index header shows a commit since it was last asked (see walwatch).
        `fresh` always asks SQLite (see `Store.get_key`)."""
        with self._lock:
            stamp = self._watch.stamp() if self._watch is not None else None
            if stamp is None or stamp != self._stamp:
                try:
                    (version,) = self._db.execute("PRAGMA data_version").fetchone()
                except sqlite3.Error as exc:
                    raise StoreError(f"store query failed: {type(exc).__name__}") from None
                if version != self._data_version:
                    self._keys.clear()
                    self._data_version = version
                self._stamp = stamp  # read before asking: a commit in between shows on the next look
            if not fresh and key_id in self._keys:
                return self._keys[key_id]
        record = key_from_rows(self._query(_KEY_LOOKUP, (key_id,)))
        if record is not None and not fresh:  # not random ids (they would fill it), nor only one read's
            # (a fresh read's refusal would take a cache write longer than an unknown id's)
            with self._lock:
                if len(self._keys) >= _KEY_CACHE:
                    self._keys.clear()
                self._keys[key_id] = record
        return record

    async def list_keys(self, brand: str | None = None) -> list[KeyRecord]:
        if brand is None:
            rows = self._query(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY brand, created_at")
        else:
            rows = self._query(f"SELECT {KEY_COLUMNS} FROM keys WHERE brand = ? ORDER BY created_at", (brand,))
        return [key_from_row(r) for r in rows]

    async def revoke_key(self, key_id: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (now, key_id))
            return cur.rowcount == 1

    async def rotate_key(self, old_key_id: str, new: KeyRecord, now: float) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (now, old_key_id, now),
            )
            if cur.rowcount != 1:
                raise KeyNotActive(old_key_id)
            _insert_key(db, new)

    async def update_key_scopes(self, key_id: str, scopes: Sequence[str], now: float) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE keys SET scopes = ? WHERE key_id = ? AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (json.dumps(list(scopes)), key_id, now),
            )
            if cur.rowcount != 1:
                raise KeyNotActive(key_id)

    async def flush_usage(self, last_used: Mapping[str, float], usage: Mapping[tuple[str, str], int]) -> None:
        if not last_used and not usage:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE key_id = ?",
                [(ts, key_id) for key_id, ts in last_used.items()],
            )
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT (brand, month) DO UPDATE SET calls = calls + ?",
                [(brand, month, n, n) for (brand, month), n in usage.items()],
            )

    async def usage(self, brand: str, month: str) -> int:
        rows = self._query("SELECT calls FROM usage WHERE brand = ? AND month = ?", (brand, month))
        return int(rows[0][0]) if rows else 0

    # -- approvals -------------------------------------------------------------------------------------
    async def open_approval(
        self, call: ApprovalCall, *, new_id: str, now: float, pending_ttl: float
    ) -> ApprovalRequest:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_APPROVAL_FIELDS} FROM approvals WHERE brand = ? AND key_id = ? AND tool = ? "
                "AND args_hash = ? AND tool_digest = ? AND closed = 0 AND status != 'consumed' "
                "ORDER BY created_at DESC LIMIT 1",
                (call.brand, call.key_id, call.tool, call.args_hash, call.tool_digest),
            ).fetchone()
            if row is not None:
                record = approval_from_row(row)
                if record.effective_status(now) is not record.status:
                    db.execute(
                        "UPDATE approvals SET status = 'expired', arguments = NULL WHERE approval_id = ?",
                        (record.approval_id,),
                    )
                    record = attrs.evolve(record, status=ApprovalStatus.EXPIRED, arguments=None)
                return record
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM approvals WHERE key_id = ? AND status = 'pending' AND closed = 0 "
                "AND expires_at > ?",
                (call.key_id, now),
            ).fetchone()
            if pending >= call.max_pending:
                raise PendingCapReached(pending, call.max_pending)
            arguments = json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))
            db.execute(
                "INSERT INTO approvals (approval_id, brand, key_id, tool, args_hash, status, created_at, "
                "expires_at, tool_digest, key_name, arguments, arguments_truncated) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                (
                    new_id,
                    call.brand,
                    call.key_id,
                    call.tool,
                    call.args_hash,
                    now,
                    now + pending_ttl,
                    call.tool_digest,
                    call.key_name,
                    arguments,
                    int(call.arguments_truncated),
                ),
            )
            return opened_request(call, new_id, now, pending_ttl)

    async def get_approval(self, approval_id: str) -> ApprovalRequest | None:
        rows = self._query(f"SELECT {_APPROVAL_FIELDS} FROM approvals WHERE approval_id = ?", (approval_id,))
        return approval_from_row(rows[0]) if rows else None

    async def list_approvals(self, brand: str | None = None, *, include_closed: bool = False) -> list[ApprovalRequest]:
        sql = f"SELECT {_APPROVAL_FIELDS} FROM approvals WHERE 1 = 1"
        params: list[Any] = []
        if brand is not None:
            sql += " AND brand = ?"
            params.append(brand)
        if not include_closed:
            sql += " AND closed = 0 AND status IN ('pending', 'approved')"
        return [approval_from_row(r) for r in self._query(sql + " ORDER BY created_at", params)]

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
    ) -> ApprovalRequest:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_APPROVAL_FIELDS} FROM approvals WHERE approval_id = ?", (approval_id,)
            ).fetchone()
            if row is None:
                raise ApprovalNotFound(approval_id)
            record = approval_from_row(row)
            if record.status is ApprovalStatus.PENDING and record.expires_at <= now:
                db.execute(
                    "UPDATE approvals SET status = 'expired', arguments = NULL WHERE approval_id = ?", (approval_id,)
                )
                decided = None  # refused once this commits: the request stays expired, its arguments gone
            else:
                if record.status is not ApprovalStatus.PENDING or row[-1]:
                    raise ApprovalNotPending(approval_id, record.status)
                decided = decided_request(record, approve=approve, by=by, reason=reason, now=now, valid_for=valid_for)
                db.execute(
                    "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ?, valid_until = ?"
                    + ("" if approve else ", arguments = NULL")
                    + " WHERE approval_id = ? AND status = 'pending'",
                    (str(decided.status), now, by, reason, decided.valid_until, approval_id),
                )
        if decided is None:
            raise ApprovalNotPending(approval_id, ApprovalStatus.EXPIRED)
        return decided

    async def consume_approval(self, approval_id: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE approvals SET status = 'consumed', consumed_at = ?, closed = 1, arguments = NULL "
                "WHERE approval_id = ? AND status = 'approved' AND valid_until > ? AND closed = 0",
                (now, approval_id, now),
            )
            return cur.rowcount == 1

    async def close_approval(self, approval_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE approvals SET closed = 1, arguments = NULL WHERE approval_id = ?", (approval_id,))

    async def expire_approvals(self, now: float) -> int:
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE approvals SET status = 'expired', arguments = NULL WHERE closed = 0 AND ({_LIVE})",
                {"now": now},
            )
            return cur.rowcount

    # -- console users ---------------------------------------------------------------------------------
    async def put_console_user(self, user: ConsoleUser, *, replace: bool) -> bool:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._tx() as db:
            cursor = db.execute(
                f"{verb} INTO console_users ({CONSOLE_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (user.name, user.role, user.brand, user.password_hash, user.created_at, user.sessions_after),
            )
            return cursor.rowcount > 0

    async def get_console_user(self, name: str) -> ConsoleUser | None:
        rows = self._query(f"SELECT {CONSOLE_USER_COLUMNS} FROM console_users WHERE name = ?", (name,))
        return console_user_from_row(rows[0]) if rows else None

    async def list_console_users(self) -> list[ConsoleUser]:
        rows = self._query(f"SELECT {CONSOLE_USER_COLUMNS} FROM console_users ORDER BY name")
        return [console_user_from_row(row) for row in rows]

    async def delete_console_user(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM console_users WHERE name = ?", (name,)).rowcount > 0

    async def pending_counts(self) -> dict[str, int]:
        rows = self._query(
            "SELECT brand, COUNT(*) FROM approvals WHERE status = 'pending' AND closed = 0 GROUP BY brand"
        )
        return {brand: int(n) for brand, n in rows}

    # -- audit anchor ----------------------------------------------------------------------------------
    async def anchor_audit(self, anchor: AuditAnchor) -> bool:
        """One conditional upsert: SQLite applies it whole, so an older anchor written late by another
        process can never replace a newer one."""
        with self._tx() as db:
            cursor = db.execute(
                f"INSERT INTO audit_anchors ({_ANCHOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, file = excluded.file, "
                '"offset" = excluded."offset", time = excluded.time WHERE excluded.seq > audit_anchors.seq',
                (anchor.name, anchor.seq, anchor.hash, anchor.file, anchor.offset, anchor.time),
            )
            return cursor.rowcount > 0

    async def audit_anchor(self, name: str) -> AuditAnchor | None:
        rows = self._query(f"SELECT {_ANCHOR_COLUMNS} FROM audit_anchors WHERE name = ?", (name,))
        return _anchor_from_row(rows[0]) if rows else None


def _insert_key(db: sqlite3.Connection, record: KeyRecord) -> None:
    db.execute(
        "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        (
            record.key_id,
            record.name,
            record.brand,
            record.role,
            json.dumps(list(record.scopes)),
            record.hash,
            record.created_at,
            record.expires_at,
        ),
    )


def _anchor_from_row(row: Sequence[Any]) -> AuditAnchor:
    name, seq, hash_, file, offset, time = row
    return AuditAnchor(
        name=str(name), seq=int(seq), hash=str(hash_), file=str(file), offset=int(offset), time=float(time)
    )


def path_of(url: str, ctx: StoreContext) -> str:
    """The database file of a `sqlite:///relative/or/absolute.db` URL, or a located config error."""
    prefix = f"{SCHEME}:///"
    rest = url[len(prefix) :] if url.startswith(prefix) else ""
    if not rest or rest == ":memory:" or rest.startswith("file:") or "?" in rest:
        raise ConfigError(
            [f"[server] store: write sqlite:///relative/path.db or sqlite:////absolute/path.db (got {url!r})"]
        )
    return ctx.resolve(rest)


def _factory(settings: object, ctx: StoreContext) -> SqliteStore:
    path = path_of(ctx.url, ctx)
    if ctx.dry_run and not Path(path).exists():
        return SqliteStore(":memory:")  # validated, and nothing created: `serve` or `keys create` will
    return SqliteStore(path)


@hookimpl
def qaqnuz_stores() -> list[Provider]:
    return [Provider(SCHEME, _factory, "The embedded store: one SQLite file in WAL mode (sqlite:///path.db).")]
