"""The store contract as tests: every store (the built-in `sqlite`, a plugin's PostgreSQL) runs these.

In a store plugin's test module::

    from qaqnuz.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(...)
            yield store
            await store.aclose()

Each test gets a fresh, empty store. The tests use only the `qaqnuz.Store` protocol, so they say what
every store must do: the exact, atomic decisions (caps, rotation, approve once, consume once) and the
lifecycle of an approval's kept arguments.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

from qaqnuz.errors import PendingCapReached
from qaqnuz.records import ApprovalCall, ApprovalStatus
from qaqnuz.store import (
    ApprovalNotFound,
    ApprovalNotPending,
    AuditAnchor,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    Store,
)

NOW = 1_800_000_000.0
DAY = 86_400.0


def key(
    key_id: str, brand: str = "acme", *, created: float = NOW, expires: float | None = NOW + DAY, **kw: Any
) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": key_id,
        "name": f"name-{key_id}",
        "brand": brand,
        "role": "viewer",
        "scopes": ("orders.read",),
        "hash": "h" * 64,
        "created_at": created,
        "expires_at": expires,
        "revoked_at": None,
        "last_used_at": None,
    }
    fields.update(kw)
    return KeyRecord(**fields)


def anchor(seq: int, name: str = "/var/log/qaqnuz/audit.jsonl") -> AuditAnchor:
    return AuditAnchor(name=name, seq=seq, hash=f"{seq:064x}", file="audit.jsonl", offset=seq * 200, time=NOW + seq)


def call(args_hash: str = "a" * 64, *, key_id: str = "k1", brand: str = "acme", digest: str = "d1", cap: int = 20,
         arguments: Any = None) -> ApprovalCall:  # fmt: skip
    return ApprovalCall(
        brand=brand,
        key_id=key_id,
        key_name="laptop",
        tool="create_order",
        args_hash=args_hash,
        tool_digest=digest,
        arguments={"sku": "A-1", "token": "***"} if arguments is None else arguments,
        max_pending=cap,
    )


class StoreContract:
    """Subclass it in a test module (named `Test...`) and provide an async `store` fixture."""

    pytestmark = pytest.mark.anyio

    # -- keys ------------------------------------------------------------------------------------------
    async def test_a_key_round_trips_without_its_secret(self, store: Store) -> None:
        record = key("k1", scopes=("orders.read", "orders.write"))
        await store.insert_key(record, max_active=None, now=NOW)
        assert await store.get_key("k1") == record
        assert await store.get_key("nope") is None

    async def test_a_fresh_lookup_finds_what_a_cached_one_does_and_never_the_decoy(self, store: Store) -> None:
        record = key("k1")
        await store.insert_key(record, max_active=None, now=NOW)
        assert await store.get_key("k1") == record  # now cached, where the store caches
        assert await store.get_key("k1", fresh=True) == record
        assert await store.get_key("nope", fresh=True) is None
        assert await store.get_key("", fresh=True) is None and await store.get_key("") is None
        assert [k.key_id for k in await store.list_keys()] == ["k1"]  # the decoy row is no key
        await store.revoke_key("k1", NOW + 1)
        fresh = await store.get_key("k1", fresh=True)
        assert fresh is not None and fresh.revoked_at == NOW + 1

    async def test_keys_are_listed_by_brand_then_creation(self, store: Store) -> None:
        await store.insert_key(key("k2", "globex", created=NOW + 1), max_active=None, now=NOW)
        await store.insert_key(key("k3", "acme", created=NOW + 2), max_active=None, now=NOW)
        await store.insert_key(key("k1", "acme", created=NOW), max_active=None, now=NOW)
        assert [k.key_id for k in await store.list_keys()] == ["k1", "k3", "k2"]
        assert [k.key_id for k in await store.list_keys("acme")] == ["k1", "k3"]
        assert await store.list_keys("initech") == []

    async def test_the_active_key_cap_counts_only_active_keys_of_the_brand(self, store: Store) -> None:
        await store.insert_key(key("k1"), max_active=2, now=NOW)
        await store.insert_key(key("k2", expires=NOW - 1), max_active=2, now=NOW)  # expired: not counted
        await store.insert_key(key("k3", "globex"), max_active=2, now=NOW)  # another brand
        await store.insert_key(key("k4"), max_active=2, now=NOW)
        with pytest.raises(KeyCapReached) as caught:
            await store.insert_key(key("k5"), max_active=2, now=NOW)
        assert (caught.value.active, caught.value.cap) == (2, 2)
        assert await store.get_key("k5") is None
        assert await store.revoke_key("k1", NOW)
        await store.insert_key(key("k5"), max_active=2, now=NOW)

    async def test_concurrent_mints_never_pass_the_cap(self, store: Store) -> None:
        results: list[bool] = []

        async def mint(i: int) -> None:
            try:
                await store.insert_key(key(f"c{i:011d}"), max_active=3, now=NOW)
                results.append(True)
            except KeyCapReached:
                results.append(False)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(mint, i)
        assert results.count(True) == 3
        assert len(await store.list_keys("acme")) == 3

    async def test_revoking_happens_once(self, store: Store) -> None:
        await store.insert_key(key("k1"), max_active=None, now=NOW)
        assert await store.revoke_key("k1", NOW + 5) is True
        assert await store.revoke_key("k1", NOW + 6) is False
        assert await store.revoke_key("nope", NOW) is False
        revoked = await store.get_key("k1")
        assert revoked is not None and revoked.revoked_at == NOW + 5 and not revoked.active(NOW + 7)

    async def test_rotation_revokes_the_old_key_and_inserts_the_new_one_together(self, store: Store) -> None:
        await store.insert_key(key("old"), max_active=1, now=NOW)
        await store.rotate_key("old", key("new"), NOW + 1)  # at the cap: rotation does not need a free slot
        old, new = await store.get_key("old"), await store.get_key("new")
        assert old is not None and old.revoked_at == NOW + 1
        assert new is not None and new.active(NOW + 2)
        with pytest.raises(KeyNotActive):
            await store.rotate_key("old", key("newer"), NOW + 2)
        assert await store.get_key("newer") is None
        await store.insert_key(key("gone", expires=NOW - 1), max_active=None, now=NOW)
        with pytest.raises(KeyNotActive):
            await store.rotate_key("gone", key("other"), NOW)
        assert await store.get_key("other") is None

    async def test_scopes_are_replaced_on_active_keys_only(self, store: Store) -> None:
        await store.insert_key(key("k1"), max_active=None, now=NOW)
        await store.update_key_scopes("k1", ("orders.read", "orders.write"), NOW)
        updated = await store.get_key("k1")
        assert updated is not None and updated.scopes == ("orders.read", "orders.write")
        await store.revoke_key("k1", NOW)
        with pytest.raises(KeyNotActive):
            await store.update_key_scopes("k1", ("orders.read",), NOW)
        with pytest.raises(KeyNotActive):
            await store.update_key_scopes("nope", ("orders.read",), NOW)

    async def test_last_used_never_moves_back_and_usage_adds_up(self, store: Store) -> None:
        await store.insert_key(key("k1"), max_active=None, now=NOW)
        await store.flush_usage({"k1": NOW + 10}, {("acme", "2027-01"): 3})
        await store.flush_usage({"k1": NOW + 5, "unknown": NOW}, {("acme", "2027-01"): 2, ("globex", "2027-01"): 1})
        used = await store.get_key("k1")
        assert used is not None and used.last_used_at == NOW + 10
        assert await store.usage("acme", "2027-01") == 5
        assert await store.usage("globex", "2027-01") == 1
        assert await store.usage("acme", "2027-02") == 0
        await store.flush_usage({}, {})

    # -- approvals -------------------------------------------------------------------------------------
    async def test_an_approval_is_opened_once_per_exact_call(self, store: Store) -> None:
        first = await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
        assert first.status is ApprovalStatus.PENDING and first.approval_id == "apr_1"
        assert (first.brand, first.key_id, first.tool, first.args_hash) == ("acme", "k1", "create_order", "a" * 64)
        assert first.arguments == {"sku": "A-1", "token": "***"} and first.key_name == "laptop"
        again = await store.open_approval(call(), new_id="apr_2", now=NOW + 1, pending_ttl=DAY)
        assert again.approval_id == "apr_1"
        other_args = await store.open_approval(call("b" * 64), new_id="apr_3", now=NOW, pending_ttl=DAY)
        other_tool = await store.open_approval(call(digest="d2"), new_id="apr_4", now=NOW, pending_ttl=DAY)
        other_key = await store.open_approval(call(key_id="k2"), new_id="apr_5", now=NOW, pending_ttl=DAY)
        other_brand = await store.open_approval(call(brand="globex"), new_id="apr_6", now=NOW, pending_ttl=DAY)
        assert [a.approval_id for a in (other_args, other_tool, other_key, other_brand)] == [
            "apr_3",
            "apr_4",
            "apr_5",
            "apr_6",
        ]
        stored = await store.get_approval("apr_1")
        assert stored is not None and stored.arguments == {"sku": "A-1", "token": "***"}
        assert [a.approval_id for a in await store.list_approvals("globex")] == ["apr_6"]
        assert await store.pending_counts() == {"acme": 4, "globex": 1}

    async def test_pending_requests_are_capped_per_key(self, store: Store) -> None:
        for i in range(3):
            await store.open_approval(call(f"{i}" * 64, cap=3), new_id=f"apr_{i}", now=NOW, pending_ttl=DAY)
        with pytest.raises(PendingCapReached):
            await store.open_approval(call("x" * 64, cap=3), new_id="apr_x", now=NOW, pending_ttl=DAY)
        assert await store.get_approval("apr_x") is None
        # the identical call still finds its own request; another key is not affected
        assert (
            await store.open_approval(call("0" * 64, cap=3), new_id="apr_y", now=NOW, pending_ttl=DAY)
        ).approval_id == "apr_0"
        await store.open_approval(call("x" * 64, key_id="k2", cap=3), new_id="apr_z", now=NOW, pending_ttl=DAY)
        # a decided request no longer counts
        await store.decide_approval("apr_0", approve=False, by="t", reason=None, now=NOW, valid_for=3600)
        await store.open_approval(call("x" * 64, cap=3), new_id="apr_x", now=NOW, pending_ttl=DAY)

    async def test_a_decision_is_made_once_and_recorded(self, store: Store) -> None:
        await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
        decided = await store.decide_approval(
            "apr_1", approve=True, by="cli:ops", reason="ok", now=NOW + 5, valid_for=60
        )
        assert decided.status is ApprovalStatus.APPROVED
        assert (decided.decided_by, decided.reason, decided.decided_at, decided.valid_until) == (
            "cli:ops",
            "ok",
            NOW + 5,
            NOW + 65,
        )
        with pytest.raises(ApprovalNotPending):
            await store.decide_approval("apr_1", approve=False, by="x", reason=None, now=NOW + 6, valid_for=60)
        with pytest.raises(ApprovalNotFound):
            await store.decide_approval("apr_nope", approve=True, by="x", reason=None, now=NOW, valid_for=60)

    async def test_an_expired_pending_request_cannot_be_decided(self, store: Store) -> None:
        await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=60)
        with pytest.raises(ApprovalNotPending) as caught:
            await store.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW + 61, valid_for=60)
        assert caught.value.status is ApprovalStatus.EXPIRED
        stored = await store.get_approval("apr_1")  # the refusal keeps what it found: expired, arguments gone
        assert stored is not None and stored.status is ApprovalStatus.EXPIRED and stored.arguments is None

    async def test_an_approval_is_consumed_exactly_once_and_its_arguments_deleted(self, store: Store) -> None:
        await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
        await store.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW, valid_for=60)
        approved = await store.get_approval("apr_1")
        assert approved is not None and approved.arguments is not None  # still shown until used
        results: list[bool] = []

        async def consume() -> None:
            results.append(await store.consume_approval("apr_1", NOW + 1))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(consume)
        assert results.count(True) == 1
        used = await store.get_approval("apr_1")
        assert used is not None and used.status is ApprovalStatus.CONSUMED and used.arguments is None
        assert await store.list_approvals() == []
        # the identical call afterwards opens a new request
        assert (await store.open_approval(call(), new_id="apr_2", now=NOW + 2, pending_ttl=DAY)).approval_id == "apr_2"

    async def test_an_approval_past_its_validity_is_not_consumed(self, store: Store) -> None:
        await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
        await store.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW, valid_for=60)
        assert await store.consume_approval("apr_1", NOW + 61) is False
        reopened = await store.open_approval(call(), new_id="apr_2", now=NOW + 62, pending_ttl=DAY)
        assert reopened.approval_id == "apr_1" and reopened.status is ApprovalStatus.EXPIRED
        assert reopened.arguments is None

    async def test_a_denial_deletes_the_arguments_and_closing_starts_afresh(self, store: Store) -> None:
        await store.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
        denied = await store.decide_approval("apr_1", approve=False, by="x", reason="no", now=NOW, valid_for=60)
        assert denied.status is ApprovalStatus.DENIED and denied.arguments is None
        stored = await store.get_approval("apr_1")
        assert stored is not None and stored.arguments is None
        seen = await store.open_approval(call(), new_id="apr_2", now=NOW + 1, pending_ttl=DAY)
        assert seen.approval_id == "apr_1" and seen.status is ApprovalStatus.DENIED
        await store.close_approval("apr_1")
        fresh = await store.open_approval(call(), new_id="apr_3", now=NOW + 2, pending_ttl=DAY)
        assert fresh.approval_id == "apr_3" and fresh.status is ApprovalStatus.PENDING

    async def test_expiry_marks_stale_requests_and_deletes_their_arguments(self, store: Store) -> None:
        await store.open_approval(call("a" * 64), new_id="apr_1", now=NOW, pending_ttl=60)
        await store.open_approval(call("b" * 64), new_id="apr_2", now=NOW, pending_ttl=DAY)
        await store.open_approval(call("c" * 64), new_id="apr_3", now=NOW, pending_ttl=DAY)
        await store.decide_approval("apr_3", approve=True, by="x", reason=None, now=NOW, valid_for=30)
        assert await store.expire_approvals(NOW + 61) == 2
        one, two, three = [await store.get_approval(f"apr_{i}") for i in (1, 2, 3)]
        assert one is not None and one.status is ApprovalStatus.EXPIRED and one.arguments is None
        assert two is not None and two.status is ApprovalStatus.PENDING and two.arguments is not None
        assert three is not None and three.status is ApprovalStatus.EXPIRED and three.arguments is None
        assert [a.approval_id for a in await store.list_approvals()] == ["apr_2"]
        assert len(await store.list_approvals(include_closed=True)) == 3
        assert await store.pending_counts() == {"acme": 1}

    async def test_arguments_keep_their_json_shape(self, store: Store) -> None:
        arguments = {"n": 1, "f": 2.5, "ok": True, "none": None, "list": [1, "two"], "nested": {"é": "ü"}}
        await store.open_approval(call(arguments=arguments), new_id="apr_1", now=NOW, pending_ttl=DAY)
        stored = await store.get_approval("apr_1")
        assert stored is not None and stored.arguments == arguments

    async def test_ping_answers(self, store: Store) -> None:
        await store.ping()

    # -- console users -----------------------------------------------------------------------------------
    async def test_console_users_are_created_once_and_replaced_on_purpose(self, store: Store) -> None:
        alice = ConsoleUser("alice", "admin", None, "$argon2id$x", NOW)
        assert await store.put_console_user(alice, replace=False) is True
        assert await store.put_console_user(attrs.evolve(alice, role="auditor"), replace=False) is False
        assert await store.get_console_user("alice") == alice
        changed = attrs.evolve(alice, role="brand-admin", brand="acme", password_hash=None, sessions_after=NOW + 5)
        assert await store.put_console_user(changed, replace=True) is True
        assert await store.get_console_user("alice") == changed
        assert await store.get_console_user("bob") is None

    async def test_console_users_list_by_name_and_delete(self, store: Store) -> None:
        for name in ("carol", "alice", "bob"):
            await store.put_console_user(ConsoleUser(name, "auditor", None, None, NOW), replace=False)
        assert [u.name for u in await store.list_console_users()] == ["alice", "bob", "carol"]
        assert await store.delete_console_user("bob") is True
        assert await store.delete_console_user("bob") is False
        assert [u.name for u in await store.list_console_users()] == ["alice", "carol"]

    # -- audit anchor ------------------------------------------------------------------------------------
    async def test_an_anchor_round_trips_and_none_is_stored_at_first(self, store: Store) -> None:
        assert await store.audit_anchor("/var/log/qaqnuz/audit.jsonl") is None
        first = attrs.evolve(anchor(7), file="audit-20270101T000000.jsonl", offset=2**40, time=NOW + 0.125)
        assert await store.anchor_audit(first) is True
        assert await store.audit_anchor(first.name) == first

    async def test_an_anchor_never_moves_back(self, store: Store) -> None:
        assert await store.anchor_audit(anchor(10)) is True
        assert await store.anchor_audit(anchor(9)) is False
        assert await store.anchor_audit(attrs.evolve(anchor(10), hash="f" * 64, offset=1)) is False
        assert await store.audit_anchor(anchor(10).name) == anchor(10)
        assert await store.anchor_audit(anchor(11)) is True
        assert await store.audit_anchor(anchor(11).name) == anchor(11)

    async def test_anchors_of_different_chains_are_independent(self, store: Store) -> None:
        assert await store.anchor_audit(anchor(5, "replica-a")) is True
        assert await store.anchor_audit(anchor(2, "replica-b")) is True
        assert await store.anchor_audit(anchor(3, "replica-a")) is False
        assert await store.audit_anchor("replica-a") == anchor(5, "replica-a")
        assert await store.audit_anchor("replica-b") == anchor(2, "replica-b")
        assert await store.audit_anchor("replica-c") is None

    async def test_concurrent_anchors_leave_the_highest(self, store: Store) -> None:
        stored: list[int] = []

        async def put(seq: int) -> None:
            if await store.anchor_audit(anchor(seq)):
                stored.append(seq)

        async with anyio.create_task_group() as tg:
            for seq in (7, 19, 3, 12, 0, 15, 1, 18, 4, 9, 2, 16, 11, 5, 14, 8, 17, 6, 13, 10):
                tg.start_soon(put, seq)
        assert await store.audit_anchor(anchor(0).name) == anchor(19)
        assert 19 in stored
