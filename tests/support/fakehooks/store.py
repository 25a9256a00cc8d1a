"""A store plugin written the way a third party would: one JSON file, every operation under an exclusive
`flock` (so the CLI and a server in other processes share it), implementing `qaqnuz.Store` from the
public face only. It runs the shared store contract in tests/kernel/test_hooks.py."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from qaqnuz import (
    ApprovalCall,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalRequest,
    ApprovalStatus,
    AuditAnchor,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    PendingCapReached,
)

EMPTY: dict[str, Any] = {"keys": {}, "approvals": {}, "usage": {}}


class JsonStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.operations = 0  # how often it was used, so a test can tell it was

    @contextmanager
    def _data(self, write: bool = True) -> Iterator[dict[str, Any]]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 1 << 24)
            data = json.loads(raw) if raw else json.loads(json.dumps(EMPTY))
            yield data
            if write:
                encoded = json.dumps(data).encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, encoded)
            self.operations += 1
            marker = self.path.with_suffix(".used")
            marker.write_text(str(int(marker.read_text() or 0) + 1) if marker.exists() else "1")
        finally:
            os.close(fd)

    # -- keys ------------------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord, *, max_active: int | None, now: float) -> None:
        with self._data() as data:
            if max_active is not None:
                active = sum(1 for k in data["keys"].values() if k["brand"] == record.brand and _active(k, now))
                if active >= max_active:
                    raise KeyCapReached(active, max_active)
            data["keys"][record.key_id] = _key_row(record)

    async def get_key(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        with self._data(write=False) as data:
            row = data["keys"].get(key_id)
        return _key(row) if row else None

    async def list_keys(self, brand: str | None = None) -> list[KeyRecord]:
        with self._data(write=False) as data:
            rows = [r for r in data["keys"].values() if brand is None or r["brand"] == brand]
        return [_key(r) for r in sorted(rows, key=lambda r: (r["brand"], r["created_at"]))]

    async def revoke_key(self, key_id: str, now: float) -> bool:
        with self._data() as data:
            row = data["keys"].get(key_id)
            if row is None or row["revoked_at"] is not None:
                return False
            row["revoked_at"] = now
            return True

    async def rotate_key(self, old_key_id: str, new: KeyRecord, now: float) -> None:
        with self._data() as data:
            row = data["keys"].get(old_key_id)
            if row is None or not _active(row, now):
                raise KeyNotActive(old_key_id)
            row["revoked_at"] = now
            data["keys"][new.key_id] = _key_row(new)

    async def update_key_scopes(self, key_id: str, scopes: Sequence[str], now: float) -> None:
        with self._data() as data:
            row = data["keys"].get(key_id)
            if row is None or not _active(row, now):
                raise KeyNotActive(key_id)
            row["scopes"] = list(scopes)

    async def flush_usage(self, last_used: Mapping[str, float], usage: Mapping[tuple[str, str], int]) -> None:
        with self._data() as data:
            for key_id, ts in last_used.items():
                row = data["keys"].get(key_id)
                if row is not None:
                    row["last_used_at"] = max(row["last_used_at"] or 0, ts)
            for (brand, month), n in usage.items():
                name = f"{brand} {month}"
                data["usage"][name] = data["usage"].get(name, 0) + n

    async def usage(self, brand: str, month: str) -> int:
        with self._data(write=False) as data:
            return int(data["usage"].get(f"{brand} {month}", 0))

    # -- approvals -------------------------------------------------------------------------------------
    async def open_approval(
        self, call: ApprovalCall, *, new_id: str, now: float, pending_ttl: float
    ) -> ApprovalRequest:
        with self._data() as data:
            same = [
                r
                for r in data["approvals"].values()
                if (r["brand"], r["key_id"], r["tool"], r["args_hash"], r["tool_digest"])
                == (call.brand, call.key_id, call.tool, call.args_hash, call.tool_digest)
                and not r["closed"]
                and r["status"] != "consumed"
            ]
            if same:
                row = max(same, key=lambda r: r["created_at"])
                record = _approval(row)
                if record.effective_status(now) is not record.status:
                    row["status"], row["arguments"] = "expired", None
                    record = _approval(row)
                return record
            pending = sum(
                1
                for r in data["approvals"].values()
                if r["key_id"] == call.key_id and r["status"] == "pending" and not r["closed"] and r["expires_at"] > now
            )
            if pending >= call.max_pending:
                raise PendingCapReached(pending, call.max_pending)
            row = {
                "approval_id": new_id,
                "brand": call.brand,
                "key_id": call.key_id,
                "tool": call.tool,
                "args_hash": call.args_hash,
                "tool_digest": call.tool_digest,
                "status": "pending",
                "created_at": now,
                "expires_at": now + pending_ttl,
                "decided_at": None,
                "decided_by": None,
                "reason": None,
                "valid_until": None,
                "key_name": call.key_name,
                "arguments": call.arguments,
                "arguments_truncated": call.arguments_truncated,
                "closed": False,
            }
            data["approvals"][new_id] = row
            return _approval(row)

    async def get_approval(self, approval_id: str) -> ApprovalRequest | None:
        with self._data(write=False) as data:
            row = data["approvals"].get(approval_id)
        return _approval(row) if row else None

    async def list_approvals(self, brand: str | None = None, *, include_closed: bool = False) -> list[ApprovalRequest]:
        with self._data(write=False) as data:
            rows = [
                r
                for r in data["approvals"].values()
                if (brand is None or r["brand"] == brand)
                and (include_closed or (not r["closed"] and r["status"] in ("pending", "approved")))
            ]
        return [_approval(r) for r in sorted(rows, key=lambda r: r["created_at"])]

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
    ) -> ApprovalRequest:
        with self._data() as data:
            row = data["approvals"].get(approval_id)
            if row is None:
                raise ApprovalNotFound(approval_id)
            expired = row["status"] == "pending" and row["expires_at"] <= now
            if expired:
                row["status"], row["arguments"] = "expired", None  # kept: the refusal is raised once saved
        if expired:
            raise ApprovalNotPending(approval_id, ApprovalStatus.EXPIRED)
        with self._data() as data:
            row = data["approvals"][approval_id]
            if row["status"] != "pending" or row["closed"]:
                raise ApprovalNotPending(approval_id, ApprovalStatus(row["status"]))
            row.update(
                status="approved" if approve else "denied",
                decided_at=now,
                decided_by=by,
                reason=reason,
                valid_until=now + valid_for if approve else None,
            )
            if not approve:
                row["arguments"] = None
            return _approval(row)

    async def consume_approval(self, approval_id: str, now: float) -> bool:
        with self._data() as data:
            row = data["approvals"].get(approval_id)
            if row is None or row["status"] != "approved" or row["closed"] or (row["valid_until"] or 0) <= now:
                return False
            row.update(status="consumed", closed=True, arguments=None)
            return True

    async def close_approval(self, approval_id: str) -> None:
        with self._data() as data:
            row = data["approvals"].get(approval_id)
            if row is not None:
                row.update(closed=True, arguments=None)

    async def expire_approvals(self, now: float) -> int:
        count = 0
        with self._data() as data:
            for row in data["approvals"].values():
                if row["closed"]:
                    continue
                stale = (row["status"] == "pending" and row["expires_at"] <= now) or (
                    row["status"] == "approved" and (row["valid_until"] or 0) <= now
                )
                if stale:
                    row.update(status="expired", arguments=None)
                    count += 1
        return count

    async def put_console_user(self, user: ConsoleUser, *, replace: bool) -> bool:
        with self._data() as data:
            users = data.setdefault("console_users", {})
            if user.name in users and not replace:
                return False
            users[user.name] = attrs.asdict(user)
            return True

    async def get_console_user(self, name: str) -> ConsoleUser | None:
        with self._data(write=False) as data:
            row = data.get("console_users", {}).get(name)
        return ConsoleUser(**row) if row else None

    async def list_console_users(self) -> list[ConsoleUser]:
        with self._data(write=False) as data:
            rows = sorted(data.get("console_users", {}).values(), key=lambda r: r["name"])
        return [ConsoleUser(**row) for row in rows]

    async def delete_console_user(self, name: str) -> bool:
        with self._data() as data:
            return data.get("console_users", {}).pop(name, None) is not None

    async def anchor_audit(self, anchor: AuditAnchor) -> bool:
        with self._data() as data:
            anchors = data.setdefault("audit_anchors", {})
            stored = anchors.get(anchor.name)
            if stored is not None and stored["seq"] >= anchor.seq:
                return False
            anchors[anchor.name] = attrs.asdict(anchor)
            return True

    async def audit_anchor(self, name: str) -> AuditAnchor | None:
        with self._data(write=False) as data:
            row = data.get("audit_anchors", {}).get(name)
        return AuditAnchor(**row) if row else None

    async def pending_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._data(write=False) as data:
            for row in data["approvals"].values():
                if row["status"] == "pending" and not row["closed"]:
                    counts[row["brand"]] = counts.get(row["brand"], 0) + 1
        return counts

    async def ping(self) -> None:
        with self._data(write=False):
            pass

    async def aclose(self) -> None:
        return None


def _active(row: dict[str, Any], now: float) -> bool:
    return row["revoked_at"] is None and (row["expires_at"] is None or row["expires_at"] > now)


def _key_row(record: KeyRecord) -> dict[str, Any]:
    return {**record.public(), "hash": record.hash}


def _key(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(**{**row, "scopes": tuple(row["scopes"])})


def _approval(row: dict[str, Any]) -> ApprovalRequest:
    fields = {f.name for f in attrs.fields(ApprovalRequest)}
    return ApprovalRequest(**{**{k: v for k, v in row.items() if k in fields}, "status": ApprovalStatus(row["status"])})
