"""The store contract: keys, approvals, usage and last-used times, whatever database holds them.

The server and the `qaqnuz` CLI (and several server replicas) use one store at once, so every decision that
must be exact is a single atomic operation of the store: minting under a cap, rotating, consuming an
approval once, opening approvals under the per-key pending cap. The hot path only reads (`get_key`);
last-used times and usage counts are batched by the kernel and written with `flush_usage`.

A store plugin implements `Store` and runs the shared contract tests in `qaqnuz.store_contract` against
itself. The built-in provider is `sqlite` (`[server] store = "sqlite:///qaqnuz.db"`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from qaqnuz.errors import StoreError
from qaqnuz.records import ApprovalCall, ApprovalRequest, ApprovalStatus


@attrs.frozen
class KeyRecord:
    """A stored key: everything but the secret, which is never stored (only its HMAC, `hash`)."""

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

    def state(self, now: float) -> str:
        return "revoked" if self.revoked_at else ("active" if self.active(now) else "expired")

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


#: The console's roles: everything; one brand's keys and approvals; read only.
CONSOLE_ROLES = ("admin", "brand-admin", "auditor")


@attrs.frozen
class ConsoleUser:
    """A person who signs in to the console. Never an MCP key: a separate credential with its own hash.

    `password_hash` is a memory-hard KDF's encoded hash (None for a user who signs in only through OpenID
    Connect); the console computes and checks it, the store keeps it opaque. A session issued before
    `sessions_after` is no longer honoured: signing out, or changing the password, ends every session.
    """

    name: str
    role: str
    brand: str | None
    password_hash: str | None = attrs.field(repr=False)
    created_at: float
    sessions_after: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "brand": self.brand, "created_at": self.created_at,
                "password": self.password_hash is not None}  # fmt: skip


@attrs.frozen
class AuditAnchor:
    """The newest audit record known to be on disk, kept in the store so that cutting records off the end of
    the audit log is detected: the log must still hold record `seq` with this `hash`, ending at byte `offset`
    of the file named `file` (a base name in the audit file's folder; rotated files keep their names).

    `name` says which chain: the audit file's absolute path unless `[audit] anchor` names it."""

    name: str
    seq: int
    hash: str
    file: str
    offset: int
    time: float


@runtime_checkable
class Store(Protocol):
    """Keys, approvals, usage. Every method may raise `StoreError`; the kernel treats that as a denial."""

    # -- keys --------------------------------------------------------------------------------------------
    async def insert_key(self, record: KeyRecord, *, max_active: int | None, now: float) -> None:
        """Insert under the brand's active-key cap, atomically with the count (`KeyCapReached`)."""
        ...

    async def get_key(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        """One key, or None. `fresh` reads past any cache the store keeps, and a missing row costs what a
        found one does (`key_from_rows`): authentication asks this way for a credential it has not verified
        before, so how long a refusal takes does not tell a known key id from an unknown one."""
        ...

    async def list_keys(self, brand: str | None = None) -> list[KeyRecord]:
        """Ordered by brand, then creation time."""
        ...

    async def revoke_key(self, key_id: str, now: float) -> bool:
        """True if this call revoked it (False: unknown or already revoked)."""
        ...

    async def rotate_key(self, old_key_id: str, new: KeyRecord, now: float) -> None:
        """Revoke `old_key_id` and insert `new` in one transaction; `KeyNotActive` if the old key is not
        active (then nothing changes)."""
        ...

    async def update_key_scopes(self, key_id: str, scopes: Sequence[str], now: float) -> None:
        """Replace an active key's scopes; `KeyNotActive` if it is revoked, expired or unknown."""
        ...

    async def flush_usage(self, last_used: Mapping[str, float], usage: Mapping[tuple[str, str], int]) -> None:
        """Write batched last-used times (never moving one back) and add (brand, month) call counts."""
        ...

    async def usage(self, brand: str, month: str) -> int: ...

    # -- approvals ---------------------------------------------------------------------------------------
    async def open_approval(
        self, call: ApprovalCall, *, new_id: str, now: float, pending_ttl: float
    ) -> ApprovalRequest:
        """The live approval for this exact call (brand, key, tool, args hash, tool digest), marking a stale
        one expired; else a new pending one, unless the key already has `call.max_pending` live pending
        requests (`PendingCapReached`)."""
        ...

    async def get_approval(self, approval_id: str) -> ApprovalRequest | None: ...

    async def list_approvals(self, brand: str | None = None, *, include_closed: bool = False) -> list[ApprovalRequest]:
        """Pending and approved-but-unused requests (all of them with `include_closed`), oldest first."""
        ...

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
    ) -> ApprovalRequest:
        """Approve or deny a pending, unexpired request exactly once (`ApprovalNotFound`,
        `ApprovalNotPending`). A denial deletes the kept arguments."""
        ...

    async def consume_approval(self, approval_id: str, now: float) -> bool:
        """Approved and still valid → consumed (arguments deleted), atomically; True only for the one
        caller that did it."""
        ...

    async def close_approval(self, approval_id: str) -> None:
        """A denied or expired approval was reported to its caller: the next identical call opens anew."""
        ...

    async def expire_approvals(self, now: float) -> int:
        """Mark pending requests past their expiry and approvals past their validity expired, deleting
        their arguments; returns how many."""
        ...

    async def pending_counts(self) -> dict[str, int]:
        """Live pending requests per brand."""
        ...

    # -- console users -----------------------------------------------------------------------------------
    async def put_console_user(self, user: ConsoleUser, *, replace: bool) -> bool:
        """Store a console user; returns False (storing nothing) when the name exists and not `replace`."""
        ...

    async def get_console_user(self, name: str) -> ConsoleUser | None: ...

    async def list_console_users(self) -> list[ConsoleUser]:
        """Every console user, by name."""
        ...

    async def delete_console_user(self, name: str) -> bool:
        """Whether a user of that name was there to delete."""
        ...

    # -- audit anchor ------------------------------------------------------------------------------------
    async def anchor_audit(self, anchor: AuditAnchor) -> bool:
        """Keep `anchor` as its chain's newest, atomically, only if the one stored under `anchor.name` has a
        lower `seq` (or there is none); True if it was stored. Several processes anchor the same chain."""
        ...

    async def audit_anchor(self, name: str) -> AuditAnchor | None:
        """The anchor stored under `name`, if any."""
        ...

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""
        ...

    async def aclose(self) -> None: ...


#: The columns a SQL store selects for `key_from_row` and `approval_from_row`, in their order.
KEY_COLUMNS = "key_id, name, brand, role, scopes, hash, created_at, expires_at, revoked_at, last_used_at"
APPROVAL_COLUMNS = (
    "approval_id, brand, key_id, tool, args_hash, status, created_at, expires_at, decided_at, decided_by, "
    "reason, valid_until, key_name, arguments, arguments_truncated, closed"
)


CONSOLE_USER_COLUMNS = "name, role, brand, password_hash, created_at, sessions_after"


def console_user_from_row(row: Sequence[Any]) -> ConsoleUser:
    """A console user from a row of `CONSOLE_USER_COLUMNS`."""
    name, role, brand, password_hash, created_at, sessions_after = row
    return ConsoleUser(
        name=str(name),
        role=str(role),
        brand=None if brand is None else str(brand),
        password_hash=None if password_hash is None else str(password_hash),
        created_at=float(created_at),
        sessions_after=float(sessions_after),
    )


#: The key id of the decoy row a lookup of an unknown id decodes instead (no real key id is empty).
DECOY_KEY_ID = ""
#: The decoy itself, shaped like a real row: the SQL stores select it when the id is unknown, so a lookup
#: returns and decodes one row either way (see `Store.get_key`'s `fresh`).
DECOY_KEY_ROW: tuple[Any, ...] = (
    DECOY_KEY_ID,
    "decoy",
    "decoy",
    "viewer",
    '["decoy.read"]',
    "0" * 64,
    0.0,
    None,
    0.0,
    None,
)


def key_from_rows(rows: Sequence[Sequence[Any]]) -> KeyRecord | None:
    """The key of a one-row lookup, or None when it found no key (no row, or the decoy row); a row is
    decoded either way."""
    record = key_from_row(rows[0] if rows else DECOY_KEY_ROW)
    return None if record.key_id == DECOY_KEY_ID else record


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    """A key from a row of `KEY_COLUMNS`; `scopes` as JSON text or as the database's own array."""
    scopes = row[4]
    return KeyRecord(
        key_id=row[0],
        name=row[1],
        brand=row[2],
        role=row[3],
        scopes=tuple(json.loads(scopes) if isinstance(scopes, str) else scopes),
        hash=row[5],
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        last_used_at=row[9],
    )


def approval_from_row(row: Sequence[Any]) -> ApprovalRequest:
    """An approval from a row of `APPROVAL_COLUMNS` (`arguments` as JSON text)."""
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
        key_name=row[12] or "",
        arguments=json.loads(row[13]) if row[13] is not None else None,
        arguments_truncated=bool(row[14]),
    )


def opened_request(call: ApprovalCall, new_id: str, now: float, pending_ttl: float) -> ApprovalRequest:
    """The pending request a store has just written for `call`."""
    return ApprovalRequest(
        new_id,
        call.brand,
        call.key_id,
        call.tool,
        call.args_hash,
        ApprovalStatus.PENDING,
        now,
        now + pending_ttl,
        key_name=call.key_name,
        arguments=call.arguments,
        arguments_truncated=call.arguments_truncated,
    )


def decided_request(
    record: ApprovalRequest, *, approve: bool, by: str, reason: str | None, now: float, valid_for: float
) -> ApprovalRequest:
    """A pending request as a decision leaves it: approved for `valid_for` seconds (its arguments kept to show
    until used), or denied (its arguments gone). A store writes the same fields."""
    return attrs.evolve(
        record,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED,
        decided_at=now,
        decided_by=by,
        reason=reason,
        valid_until=now + valid_for if approve else None,
        arguments=record.arguments if approve else None,
    )


class KeyCapReached(StoreError):
    def __init__(self, active: int, cap: int) -> None:
        super().__init__(f"{active} active keys, cap {cap}")
        self.active = active
        self.cap = cap


class KeyNotActive(StoreError):
    """The key is unknown, revoked or expired."""


class ApprovalNotFound(StoreError):
    pass


class ApprovalNotPending(StoreError):
    def __init__(self, approval_id: str, status: ApprovalStatus) -> None:
        super().__init__(f"{approval_id} is {status}")
        self.status = status


__all__ = [
    "CONSOLE_ROLES",
    "CONSOLE_USER_COLUMNS",
    "ApprovalNotFound",
    "ApprovalNotPending",
    "AuditAnchor",
    "ConsoleUser",
    "KeyCapReached",
    "KeyNotActive",
    "KeyRecord",
    "Store",
    "console_user_from_row",
]
