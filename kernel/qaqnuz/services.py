"""Key and approval operations, shared by the CLI, the kernel, web routes (the console, Slack) and tests.

Each operation validates against the current config, does its one atomic store operation and writes its
audit record. Errors are `UsageError`s that say what was wrong and how to fix it, and never repeat a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from qaqnuz import requestid
from qaqnuz.config import SCOPE_RE, AuditConfig, Config, parse_duration
from qaqnuz.errors import UsageError
from qaqnuz.keys import KEY_ID_RE, hash_matches, key_hash, new_key, parse_key
from qaqnuz.records import ApprovalRequest, ApprovalStatus, AuditSink
from qaqnuz.store import (
    CONSOLE_ROLES,
    ApprovalNotFound,
    ApprovalNotPending,
    AuditAnchor,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    Store,
)

log = logging.getLogger("qaqnuz.audit")
#: Compared against when a key id is unknown, so an unknown id costs the same HMAC as a known one.
_NO_HASH = "0" * 64


class Auditor:
    """Writes each audit record to every configured sink. A failed write is counted and logged loudly,
    never silently dropped, and never stops the others.

    On the serving loop, once a transport asks for it (`hold_on`), the records of one pass of the loop are
    written together at the end of it (or earlier: the transport calls `settle` before any answer leaves
    the process): each write to a file costs a lock, a size check and a system call, and under load several
    calls finish in the same pass, so they share one. Records made anywhere else (the CLI, another thread,
    another loop, a transport that did not ask) are written at once, and so is a call's `intent`
    (`write_now`): it must be in the file before the tool runs.

    While the last write to some sink failed, `refusing` is True under `[audit] on_error = "fail"`: the
    governed path then refuses calls (retryable), and each refused call's own record is the next attempt.
    """

    def __init__(
        self,
        sinks: Sequence[tuple[str, AuditSink]],
        clock: Callable[[], float],
        on_error: Callable[[], None] | None = None,
        settings: AuditConfig | None = None,
    ) -> None:
        settings = settings or AuditConfig()
        self.sinks = tuple(sinks)
        self.clock = clock
        self.on_error = on_error
        #: Whether writes wait for the disk (`fsync = "every"`): then an intent is written off the loop.
        self.blocking = settings.fsync == "every"
        self._refuse_on_error = settings.on_error == "fail"
        self._failing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: list[dict[str, Any]] = []

    @property
    def refusing(self) -> bool:
        """Whether calls must be refused: the last write failed and `on_error = "fail"`."""
        return self._failing and self._refuse_on_error

    def hold_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hold the records made on `loop` until the end of its current pass (None: write each at once)."""
        self.settle()
        self._loop = loop

    def _stamp(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        record = {k: v for k, v in fields.items() if v is not None}
        record["time"] = round(self.clock(), 6)
        request_id = requestid.current()
        if request_id is not None:
            record["request_id"] = request_id
        return record

    def record(self, **fields: Any) -> None:
        """One record, without its empty fields, to every sink."""
        record = self._stamp(fields)
        loop = self._loop
        if loop is not None and asyncio._get_running_loop() is loop:
            if not self._held:
                loop.call_soon(self.settle)
            self._held.append(record)
            return
        self._write([record])

    def write_now(self, fields: Mapping[str, Any], *, settle: bool = True) -> bool:
        """Write one record at once, after what is held (`settle=False` from another thread, which must not
        touch the loop's held records). False when a sink could not take it and calls must not go on."""
        record = self._stamp(fields)
        records = [record]
        if settle and self._held:  # what is held goes first, in the same write
            records, self._held = [*self._held, record], []
        failed = self._write(records)
        return not (failed and self._refuse_on_error)

    def settle(self) -> None:
        """Write the records held so far (a transport calls it before an answer leaves the process, so no
        answer is ever seen before its audit line)."""
        if self._held:
            held, self._held = self._held, []
            self._write(held)

    def _write(self, records: list[dict[str, Any]]) -> bool:
        """Every record to every sink; True if some sink lost some of them."""
        any_failed = False
        for name, sink in self.sinks:
            write_many = getattr(sink, "write_many", None)
            if write_many is not None and len(records) > 1:
                # all of them or none, in one write; if not, one by one (a record the sink cannot take must
                # not cost the others)
                with contextlib.suppress(Exception):
                    write_many(records)
                    continue
            lost: list[dict[str, Any]] = []
            failure: Exception | None = None
            for record in records:
                try:
                    sink.write(record)
                except Exception as exc:
                    lost.append(record)
                    failure = exc
            if failure is not None:
                any_failed = True
                self._failed(name, failure, lost)
        if any_failed != self._failing:
            self._failing = any_failed
            if any_failed and self._refuse_on_error:
                log.error("AUDIT LOG UNWRITABLE: refusing every call until a record can be written again "
                          '([audit] on_error = "fail")')  # fmt: skip
            elif not any_failed:
                log.warning("audit records are written again")
        return any_failed

    def _failed(self, sink: str, exc: Exception, records: list[dict[str, Any]]) -> None:
        if self.on_error is not None:
            for _ in records:
                self.on_error()
        steps = ", ".join(sorted({str(r.get("step")) for r in records}))
        log.error("AUDIT WRITE FAILED to sink %s (%s): %d record(s) lost (%s)", sink, type(exc).__name__,
                  len(records), steps)  # fmt: skip

    def probe(self) -> None:
        """Try each sink that can be tried without writing (`probe()`): a server that cannot write its audit
        log says so at start, and under `on_error = "fail"` refuses calls from the first one."""
        for name, sink in self.sinks:
            probe = getattr(sink, "probe", None)
            if probe is None:
                continue
            try:
                probe()
            except Exception as exc:
                log.error("AUDIT SINK %s CANNOT BE WRITTEN (%s: %s)", name, type(exc).__name__,
                          getattr(exc, "strerror", None) or "see the sink's settings")  # fmt: skip
                if not self._failing:
                    self._failing = True
                    if self._refuse_on_error:
                        log.error('AUDIT LOG UNWRITABLE: refusing every call until a record can be written '
                                  '([audit] on_error = "fail")')  # fmt: skip

    def flush(self) -> list[AuditAnchor]:
        """Make what the sinks hold durable (`flush()` of each sink that has one) and return the newest
        position of each that reports one, to anchor in the store. Runs off the loop: it waits on the disk."""
        anchors: list[AuditAnchor] = []
        for name, sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is None:
                continue
            try:
                anchor = flush()
            except Exception as exc:
                if self.on_error is not None:
                    self.on_error()
                log.error("AUDIT FLUSH FAILED for sink %s (%s): records may not be on disk", name,
                          type(exc).__name__)  # fmt: skip
                self._failing = True  # as for a failed write: nothing is anchored that may not be on disk
                return []
            if isinstance(anchor, AuditAnchor):
                anchors.append(anchor)
        return anchors

    def resume(self) -> None:
        """While refusing, try to write again (a record saying so): calls are what make records, and a
        refusing server gets none once its readiness takes it out of rotation."""
        if self._failing:
            self._write([self._stamp({"step": "audit", "outcome": "resumed"})])

    async def anchor(self, store: Store, *, in_thread: bool = True) -> bool:
        """Flush (in a thread, unless the caller runs without an event loop: a command on an inline store) and
        anchor each sink's newest record in the store; False (and logged) when the store refused one."""
        anchors = await anyio.to_thread.run_sync(self.flush) if in_thread else self.flush()
        stored = True
        for anchor in anchors:
            try:
                await store.anchor_audit(anchor)
            except Exception as exc:
                stored = False
                log.error("anchoring the audit log in the store failed (%s); a cut tail may go unnoticed until "
                          "the next anchor", type(exc).__name__)  # fmt: skip
        return stored

    def close(self) -> None:
        """Write what is held and close the sinks; anything recorded after this is written at once (a loop
        that is ending may never run another pass)."""
        self.settle()
        self._loop = None
        for name, sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.warning("closing audit sink %s failed (%s)", name, type(exc).__name__)


class KeyService:
    """Mint, list, revoke, rotate and re-scope keys. `config` is read on every call (it may reload)."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        store: Store,
        secret: bytes,
        audit: Auditor,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self.store = store
        self._secret = secret
        self.audit = audit
        self.clock = clock

    def __repr__(self) -> str:
        return "KeyService()"

    # -- checks ----------------------------------------------------------------------------------------
    def _scopes(self, brand: str, role: str, scopes: Iterable[str]) -> tuple[str, ...]:
        """The scopes, sorted and unique, once each is well formed and inside the role's ceiling."""
        config = self._config()
        brand_cfg = config.brands.get(brand)
        if brand_cfg is None:
            known = ", ".join(sorted(config.brands)) or "none"
            raise UsageError(f"unknown brand {brand!r}; configured brands: {known}")
        if role not in brand_cfg.roles:
            raise UsageError(
                f"brand {brand!r} has no role {role!r}; its roles: {', '.join(sorted(brand_cfg.roles)) or 'none'} "
                f"(define roles under [brands.{brand}] roles)"
            )
        ceiling = set(brand_cfg.roles[role])
        wanted = list(scopes)
        if not wanted:
            raise UsageError("give at least one --scope; a key without scopes can call nothing")
        for scope in wanted:
            if not SCOPE_RE.match(scope):
                raise UsageError(
                    f"invalid scope {_shown(scope)}: scopes are '<resource>.<action>' in lower case, e.g. "
                    f"orders.read; wildcards are not allowed"
                )
            if scope not in ceiling:
                raise UsageError(
                    f"scope {scope!r} is outside role {role!r}'s ceiling for brand {brand!r} "
                    f"({', '.join(sorted(ceiling)) or 'empty'})"
                )
        return tuple(sorted(set(wanted)))

    # -- operations ------------------------------------------------------------------------------------
    async def mint(
        self,
        *,
        brand: str,
        scopes: Iterable[str],
        name: str,
        role: str = "viewer",
        expires_in: float | None = None,
        actor: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """Validate and store a new key; returns (raw key, record). The raw key is never stored."""
        config = self._config()
        if not name.strip():
            raise UsageError("--name is required: name the key after who or what uses it")
        checked = self._scopes(brand, role, scopes)
        max_lifetime = parse_duration(config.server.max_key_lifetime)
        if expires_in is not None and (expires_in <= 0 or expires_in > max_lifetime):
            raise UsageError(
                f"--expires-in must be more than 0 and at most {config.server.max_key_lifetime} "
                f"([server] max_key_lifetime)"
            )
        brand_cfg = config.brands[brand]
        plan = config.plans[brand_cfg.plan]
        if not plan.entitled:
            raise UsageError(f"brand {brand!r} is on plan {brand_cfg.plan!r}, which is not entitled to MCP access")
        now = self.clock()
        raw, record = self._new(config, brand, role, checked, name, now, now + (expires_in or max_lifetime))
        try:
            await self.store.insert_key(record, max_active=plan.max_keys, now=now)
        except KeyCapReached as exc:
            raise UsageError(
                f"brand {brand!r} already has {exc.active} active keys, the cap of plan {brand_cfg.plan!r} "
                f"({exc.cap}); revoke one with `qaqnuz keys revoke KEY_ID` or move the brand to a larger plan"
            ) from None
        self.audit.record(step="key", outcome="minted", brand=brand, key_id=record.key_id, role=role, actor=actor)
        return raw, record

    def _new(
        self,
        config: Config,
        brand: str,
        role: str,
        scopes: tuple[str, ...],
        name: str,
        now: float,
        expires: float | None,
    ) -> tuple[str, KeyRecord]:
        parsed = new_key(config.server.key_prefix)
        record = KeyRecord(
            key_id=parsed.key_id,
            name=name,
            brand=brand,
            role=role,
            scopes=scopes,
            hash=key_hash(self._secret, parsed.raw),
            created_at=now,
            expires_at=expires,
            revoked_at=None,
            last_used_at=None,
        )
        return parsed.raw, record

    async def list(self, brand: str | None = None) -> list[KeyRecord]:
        return await self.store.list_keys(brand)

    async def find(self, ref: str, brand: str | None = None) -> KeyRecord:
        """The key named by a key id or by a whole key (of `brand`, when given); never repeats what it was
        given unless it is an id."""
        config = self._config()
        ref = ref.strip()
        parsed = parse_key(ref, config.server.key_prefix)
        if parsed is not None:
            record = await self.store.get_key(parsed.key_id)
            matched = hash_matches(self._secret, parsed.raw, record.hash if record else _NO_HASH)
            if record is None or not matched or (brand is not None and record.brand != brand):
                raise UsageError("no key matches the key given; list keys with `qaqnuz keys list`")
            return record
        if not KEY_ID_RE.fullmatch(ref):
            raise UsageError(
                "that is neither a key id (12 letters and digits, shown by `qaqnuz keys list`) nor a whole key"
            )
        record = await self.store.get_key(ref)
        if record is None or (brand is not None and record.brand != brand):
            where = f" for brand {brand}" if brand is not None else ""
            raise UsageError(f"no key with id {ref!r}{where}; list them with `qaqnuz keys list`")
        return record

    async def check(self, raw: str) -> KeyRecord | None:
        """The active key this raw key is, or None (no audit line: for tools that hold their own key)."""
        parsed = parse_key(raw, self._config().server.key_prefix)
        if parsed is None:
            return None
        record = await self.store.get_key(parsed.key_id)
        matched = hash_matches(self._secret, parsed.raw, record.hash if record else _NO_HASH)
        if record is None or not matched:
            return None
        return record if record.active(self.clock()) else None

    async def revoke(self, ref: str, brand: str | None = None, *, actor: str | None = None) -> tuple[KeyRecord, bool]:
        """(the key, whether this call revoked it: False if it already was)."""
        record = await self.find(ref, brand)
        revoked = await self.store.revoke_key(record.key_id, self.clock())
        if revoked:
            self.audit.record(step="key", outcome="revoked", brand=record.brand, key_id=record.key_id, actor=actor)
        return record, revoked

    async def rotate(
        self, ref: str, brand: str | None = None, *, actor: str | None = None
    ) -> tuple[str, KeyRecord, KeyRecord]:
        """A new secret with the old key's brand, role, scopes, name and expiry; the old key revoked in the
        same transaction. Returns (new raw key, new record, old record)."""
        old = await self.find(ref, brand)
        now = self.clock()
        if not old.active(now):
            raise UsageError(f"key {old.key_id} is {old.state(now)}; only an active key can be rotated")
        raw, record = self._new(self._config(), old.brand, old.role, old.scopes, old.name, now, old.expires_at)
        try:
            await self.store.rotate_key(old.key_id, record, now)
        except KeyNotActive:
            raise UsageError(f"key {old.key_id} was revoked or expired meanwhile; nothing rotated") from None
        self.audit.record(
            step="key",
            outcome="rotated",
            brand=old.brand,
            key_id=record.key_id,
            role=old.role,
            replaces=old.key_id,
            actor=actor,
        )
        return raw, record, old

    async def update_scopes(
        self, ref: str, scopes: Iterable[str], brand: str | None = None, *, actor: str | None = None
    ) -> KeyRecord:
        """Replace an active key's scopes with `scopes`, which must lie within its role's ceiling."""
        record = await self.find(ref, brand)
        now = self.clock()
        if not record.active(now):
            raise UsageError(f"key {record.key_id} is {record.state(now)}; only an active key can be updated")
        checked = self._scopes(record.brand, record.role, scopes)
        try:
            await self.store.update_key_scopes(record.key_id, checked, now)
        except KeyNotActive:
            raise UsageError(f"key {record.key_id} was revoked or expired meanwhile; nothing changed") from None
        self.audit.record(
            step="key",
            outcome="scopes_updated",
            brand=record.brand,
            key_id=record.key_id,
            role=record.role,
            scopes=list(checked),
            actor=actor,
        )
        return attrs.evolve(record, scopes=checked)


class _StoreService:
    """A service over the store that checks against the config in force and audits what it does."""

    def __init__(
        self, *, config: Callable[[], Config], store: Store, audit: Auditor, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self.store = store
        self.audit = audit
        self.clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ApprovalService(_StoreService):
    """List, show and decide approval requests (the built-in queue's human side)."""

    async def list(self, brand: str | None = None) -> list[ApprovalRequest]:
        """Pending and approved-but-unused requests (expired ones are marked first, their arguments gone)."""
        await self.store.expire_approvals(self.clock())
        return await self.store.list_approvals(brand)

    async def get(self, approval_id: str, brand: str | None = None) -> ApprovalRequest:
        await self.store.expire_approvals(self.clock())
        record = await self.store.get_approval(approval_id)
        if record is None or (brand is not None and record.brand != brand):
            raise UsageError(f"no approval {_shown(approval_id)}{f' for brand {brand}' if brand else ''}")
        return record

    async def decide(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None = None, brand: str | None = None
    ) -> ApprovalRequest:
        """Approve or deny a pending request, exactly once; audited with who, when and why."""
        await self.get(approval_id, brand)
        try:
            record = await self.store.decide_approval(
                approval_id,
                approve=approve,
                by=by,
                reason=reason,
                now=self.clock(),
                valid_for=parse_duration(self._config().approvals.valid_for),
            )
        except ApprovalNotFound:
            raise UsageError(f"no approval {_shown(approval_id)}") from None
        except ApprovalNotPending as exc:
            raise UsageError(f"approval {approval_id} is {exc.status}, not pending; nothing to decide") from None
        self.audit.record(
            step="approval",
            outcome=str(record.status),
            brand=record.brand,
            key_id=record.key_id,
            tool=record.tool,
            args_hash=record.args_hash,
            approval_id=record.approval_id,
            decided_by=by,
            reason=reason,
        )
        return record


#: A console user's name: letters, digits and `._@-`, as an e-mail address or a login would be.
USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


class ConsoleUserService(_StoreService):
    """Who may sign in to the console, with which role and for which brand. The console hashes passwords
    (a memory-hard KDF); this service only checks names, roles and brands against the config and stores."""

    def check(self, name: str, role: str, brand: str | None) -> None:
        """Raise `UsageError` unless `name`, `role` and `brand` make a valid user for the current config."""
        if not USER_NAME_RE.fullmatch(name):
            raise UsageError(
                f"invalid user name {_shown(name)}: use letters, digits and . _ @ + - (at most 128), "
                "starting with a letter or digit"
            )
        if role not in CONSOLE_ROLES:
            raise UsageError(f"unknown console role {_shown(role)}; the roles are {', '.join(CONSOLE_ROLES)}")
        brands = self._config().brands
        if role == "brand-admin" and brand is None:
            raise UsageError("a brand-admin manages one brand: give --brand BRAND")
        if role == "admin" and brand is not None:
            raise UsageError("an admin manages every brand: leave out --brand, or use --role brand-admin")
        if brand is not None and brand not in brands:
            raise UsageError(f"unknown brand {_shown(brand)}; configured brands: {', '.join(sorted(brands)) or 'none'}")

    async def add(
        self,
        name: str,
        *,
        role: str,
        brand: str | None = None,
        password_hash: str | None,
        replace: bool = False,
        actor: str | None = None,
    ) -> ConsoleUser:
        """Create a user (or, with `replace`, set its role, brand and password, ending its sessions)."""
        self.check(name, role, brand)
        now = self.clock()
        # A new user of a name that existed before must not inherit its sessions: none issued until now count.
        user = ConsoleUser(name, role, brand, password_hash, now, sessions_after=now)
        if replace:  # a changed user keeps when it was made; its sessions end
            existing = await self.store.get_console_user(name)
            if existing is not None:
                user = attrs.evolve(user, created_at=existing.created_at)
        if not await self.store.put_console_user(user, replace=replace):
            raise UsageError(f"console user {name!r} exists already; add --replace to change it")
        self.audit.record(step="console_user", outcome="replaced" if replace else "added", user=name, role=role,
                          brand=brand, actor=actor)  # fmt: skip
        return user

    async def get(self, name: str) -> ConsoleUser | None:
        return await self.store.get_console_user(name) if USER_NAME_RE.fullmatch(name) else None

    async def list(self) -> list[ConsoleUser]:
        return await self.store.list_console_users()

    async def remove(self, name: str, *, actor: str | None = None) -> bool:
        removed = await self.store.delete_console_user(name)
        if removed:
            self.audit.record(step="console_user", outcome="removed", user=name, actor=actor)
        return removed

    async def rehashed(self, user: ConsoleUser, password_hash: str) -> None:
        """The same password under stronger KDF parameters: its sessions stay (nothing about who may sign in
        changed), and nothing is audited."""
        await self.store.put_console_user(attrs.evolve(user, password_hash=password_hash), replace=True)

    async def end_sessions(self, name: str) -> None:
        """Every session of `name` issued until now stops being honoured (sign-out everywhere)."""
        user = await self.store.get_console_user(name)
        if user is not None:
            await self.store.put_console_user(attrs.evolve(user, sessions_after=self.clock()), replace=True)


def approval_view(record: ApprovalRequest, now: float) -> dict[str, Any]:
    """An approval as JSON for people and programs: its effective status and the arguments kept for it."""
    status = record.effective_status(now)
    return {
        "approval_id": record.approval_id,
        "brand": record.brand,
        "key_id": record.key_id,
        "key_name": record.key_name,
        "tool": record.tool,
        "args_hash": record.args_hash,
        "status": str(status),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "decided_at": record.decided_at,
        "decided_by": record.decided_by,
        "reason": record.reason,
        "valid_until": record.valid_until,
        "arguments": record.arguments if status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) else None,
        "arguments_truncated": record.arguments_truncated,
    }


def _shown(text: str) -> str:
    """A user-given value quoted for an error message, unless it could be a key (then withheld)."""
    if len(text) > 64 or not text.isprintable() or parse_key_like(text):
        return "(withheld)"
    return repr(text)


def parse_key_like(text: str) -> bool:
    """Whether `text` could hold a whole API key (an id, `_`, a long secret), so it must not be echoed."""
    return bool(re.search(r"[0-9A-Za-z]{12}_[0-9A-Za-z]{20,}", text))
