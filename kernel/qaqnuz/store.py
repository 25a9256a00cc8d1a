"""The embedded store: SQLite in WAL mode for keys, approvals, last-used times and usage counts.

The server and the `qaqnuz` CLI open the same file from different processes, so every decision that
must be exact (minting under a cap, consuming an approval once) is a single transaction. The hot path
only reads here; last-used times and usage counts are batched in memory and flushed periodically.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from qaqnuz.errors import StoreError
from qaqnuz.records import ApprovalRequest, ApprovalStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
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
);
CREATE INDEX IF NOT EXISTS keys_brand ON keys (brand);
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
CREATE INDEX IF NOT EXISTS approvals_call ON approvals (brand, key_id, tool, args_hash, closed);
CREATE INDEX IF NOT EXISTS approvals_brand ON approvals (brand, status);
CREATE TABLE IF NOT EXISTS usage (
    brand TEXT NOT NULL,
    month TEXT NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (brand, month)
);
"""


@attrs.frozen
class KeyRecord:
    """A stored key: everything but the secret, which is never stored."""

    key_id: str
    name: str
    brand: str
    role: str
    scopes: tuple[str, ...]
    hash: str = attrs.field(repr=False)
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def public(self) -> dict[str, Any]:
        """The fields safe to print (no hash)."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "brand": self.brand,
            "role": self.role,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


class Store:
    """One SQLite database file. Thread-safe through one lock; cross-process safe through SQLite."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # The database and its -wal/-shm files hold key hashes and approvals: owner-only from birth.
        previous_umask = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None
        finally:
            os.umask(previous_umask)
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(self.path + suffix).chmod(0o600)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers from other processes wait, readers are not blocked."""
        with self._lock:
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

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store query failed: {type(exc).__name__}") from None

    # -- keys ------------------------------------------------------------------------------------------
    def insert_key(self, record: KeyRecord, *, max_active: int | None, now: float) -> None:
        """Insert under the brand's active-key cap, atomically with the count."""
        with self._tx() as db:
            if max_active is not None:
                (active,) = db.execute(
                    "SELECT COUNT(*) FROM keys WHERE brand = ? AND revoked_at IS NULL "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (record.brand, now),
                ).fetchone()
                if active >= max_active:
                    raise KeyCapReached(active, max_active)
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

    def get_key(self, key_id: str) -> KeyRecord | None:
        rows = self._query("SELECT * FROM keys WHERE key_id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self, brand: str | None = None) -> list[KeyRecord]:
        if brand is None:
            rows = self._query("SELECT * FROM keys ORDER BY brand, created_at")
        else:
            rows = self._query("SELECT * FROM keys WHERE brand = ? ORDER BY created_at", (brand,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (now, key_id))
            return cur.rowcount == 1

    def flush_last_used(self, last_used: Mapping[str, float], usage: Mapping[tuple[str, str], int]) -> None:
        """Write batched last-used times and usage counts in one transaction."""
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

    def usage(self, brand: str, month: str) -> int:
        rows = self._query("SELECT calls FROM usage WHERE brand = ? AND month = ?", (brand, month))
        return int(rows[0][0]) if rows else 0

    # -- approvals -------------------------------------------------------------------------------------
    def open_approval(
        self,
        *,
        new_id: str,
        brand: str,
        key_id: str,
        tool: str,
        args_hash: str,
        now: float,
        pending_ttl: float,
        summary: Mapping[str, Any],
    ) -> ApprovalRequest:
        """The live approval for this exact call, expiring stale ones; a new pending one if none is live."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM approvals WHERE brand = ? AND key_id = ? AND tool = ? AND args_hash = ? "
                "AND closed = 0 AND status != 'consumed' ORDER BY created_at DESC LIMIT 1",
                (brand, key_id, tool, args_hash),
            ).fetchone()
            if row is not None:
                record = _approval(row)
                expired = (record.status == ApprovalStatus.PENDING and record.expires_at <= now) or (
                    record.status == ApprovalStatus.APPROVED
                    and record.valid_until is not None
                    and record.valid_until <= now
                )
                if expired:
                    db.execute("UPDATE approvals SET status = 'expired' WHERE approval_id = ?", (record.approval_id,))
                    record = attrs.evolve(record, status=ApprovalStatus.EXPIRED)
                return record
            db.execute(
                "INSERT INTO approvals (approval_id, brand, key_id, tool, args_hash, status, created_at, "
                "expires_at, summary) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (new_id, brand, key_id, tool, args_hash, now, now + pending_ttl, json.dumps(dict(summary))),
            )
            return ApprovalRequest(
                new_id, brand, key_id, tool, args_hash, ApprovalStatus.PENDING, now, now + pending_ttl
            )

    def get_approval(self, approval_id: str) -> ApprovalRequest | None:
        rows = self._query("SELECT * FROM approvals WHERE approval_id = ?", (approval_id,))
        return _approval(rows[0]) if rows else None

    def list_approvals(self, brand: str | None = None, *, include_closed: bool = False) -> list[ApprovalRequest]:
        sql = "SELECT * FROM approvals WHERE 1 = 1"
        params: list[Any] = []
        if brand is not None:
            sql += " AND brand = ?"
            params.append(brand)
        if not include_closed:
            sql += " AND closed = 0 AND status IN ('pending', 'approved')"
        return [_approval(r) for r in self._query(sql + " ORDER BY created_at", params)]

    def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
    ) -> ApprovalRequest:
        """Approve or deny a pending, unexpired request, exactly once."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM approvals WHERE approval_id = ?", (approval_id,)).fetchone()
            if row is None:
                raise ApprovalNotFound(approval_id)
            record = _approval(row)
            if record.status == ApprovalStatus.PENDING and record.expires_at <= now:
                db.execute("UPDATE approvals SET status = 'expired' WHERE approval_id = ?", (approval_id,))
                raise ApprovalNotPending(approval_id, ApprovalStatus.EXPIRED)
            if record.status != ApprovalStatus.PENDING or row[13]:
                raise ApprovalNotPending(approval_id, record.status)
            status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
            valid_until = now + valid_for if approve else None
            db.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ?, valid_until = ? "
                "WHERE approval_id = ? AND status = 'pending'",
                (str(status), now, by, reason, valid_until, approval_id),
            )
            return attrs.evolve(
                record, status=status, decided_at=now, decided_by=by, reason=reason, valid_until=valid_until
            )

    def consume_approval(self, approval_id: str, now: float) -> bool:
        """Approved and still valid → consumed, atomically; True only for the one caller that did it."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE approvals SET status = 'consumed', consumed_at = ?, closed = 1 "
                "WHERE approval_id = ? AND status = 'approved' AND valid_until > ? AND closed = 0",
                (now, approval_id, now),
            )
            return cur.rowcount == 1

    def close_approval(self, approval_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE approvals SET closed = 1 WHERE approval_id = ?", (approval_id,))

    def pending_counts(self) -> dict[str, int]:
        rows = self._query(
            "SELECT brand, COUNT(*) FROM approvals WHERE status = 'pending' AND closed = 0 GROUP BY brand"
        )
        return {brand: int(n) for brand, n in rows}


class KeyCapReached(StoreError):
    def __init__(self, active: int, cap: int) -> None:
        super().__init__(f"{active} active keys, cap {cap}")
        self.active = active
        self.cap = cap


class ApprovalNotFound(StoreError):
    pass


class ApprovalNotPending(StoreError):
    def __init__(self, approval_id: str, status: ApprovalStatus) -> None:
        super().__init__(f"{approval_id} is {status}")
        self.status = status


def _key(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        key_id=row[0],
        name=row[1],
        brand=row[2],
        role=row[3],
        scopes=tuple(json.loads(row[4])),
        hash=row[5],
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        last_used_at=row[9],
    )


def _approval(row: tuple[Any, ...]) -> ApprovalRequest:
    return ApprovalRequest(
        approval_id=row[0],
        brand=row[1],
        key_id=row[2],
        tool=row[3],
        args_hash=row[4],
        status=ApprovalStatus(row[5]),
        created_at=row[6],
        expires_at=row[7],
        decided_at=row[8],
        decided_by=row[9],
        reason=row[10],
        valid_until=row[11],
    )
