"""Which approval's message is where: a small SQLite file beside the config (`state_file`), so a restarted
server knows which pending requests were never posted and posts them, and can still update the messages it
posted before.

A post is claimed before it is sent (`INSERT OR IGNORE`), so processes sharing the file do not post the same
request twice; a claim whose post never went out (Slack down, the process stopped) can be taken again once
it is older than the retry horizon, or at once by a process started after it was made.
"""

from __future__ import annotations

import secrets
import sqlite3

import anyio

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slack_messages (
    approval_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    channel TEXT,
    ts TEXT
)
"""


class Ledger:
    def __init__(self, path: str, started: float) -> None:
        self.path = path
        self.started = started
        self.owner = secrets.token_hex(8)
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        if not self._ready:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            self._ready = True
        return db

    def _claim(self, approval_id: str, now: float, stale_before: float) -> bool:
        db = self._connect()
        try:
            inserted = db.execute(
                "INSERT OR IGNORE INTO slack_messages (approval_id, owner, claimed_at) VALUES (?, ?, ?)",
                (approval_id, self.owner, now),
            ).rowcount
            if inserted == 1:
                return True
            taken = db.execute(
                "UPDATE slack_messages SET owner = ?, claimed_at = ? WHERE approval_id = ? AND ts IS NULL"
                " AND (claimed_at < ? OR (owner != ? AND claimed_at < ?))",
                (self.owner, now, approval_id, stale_before, self.owner, self.started),
            ).rowcount
            return bool(taken == 1)
        finally:
            db.close()

    def _posted(self, approval_id: str, channel: str, ts: str) -> None:
        db = self._connect()
        try:
            db.execute(
                "UPDATE slack_messages SET channel = ?, ts = ? WHERE approval_id = ?", (channel, ts, approval_id)
            )
        finally:
            db.close()

    def _where(self, approval_id: str) -> tuple[str, str] | None:
        db = self._connect()
        try:
            row = db.execute(
                "SELECT channel, ts FROM slack_messages WHERE approval_id = ? AND ts IS NOT NULL", (approval_id,)
            ).fetchone()
        finally:
            db.close()
        return (str(row[0]), str(row[1])) if row else None

    def _forget(self, approval_id: str) -> None:
        db = self._connect()
        try:
            db.execute("DELETE FROM slack_messages WHERE approval_id = ?", (approval_id,))
        finally:
            db.close()

    async def claim(self, approval_id: str, now: float, stale_before: float) -> bool:
        """Whether this process should post `approval_id` now (nobody posted it, nobody is posting it)."""
        return await anyio.to_thread.run_sync(self._claim, approval_id, now, stale_before)

    async def posted(self, approval_id: str, channel: str, ts: str) -> None:
        await anyio.to_thread.run_sync(self._posted, approval_id, channel, ts)

    async def where(self, approval_id: str) -> tuple[str, str] | None:
        return await anyio.to_thread.run_sync(self._where, approval_id)

    async def forget(self, approval_id: str) -> None:
        await anyio.to_thread.run_sync(self._forget, approval_id)
