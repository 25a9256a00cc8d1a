"""Exact decisions with two store instances on one database, as two replicas (or a replica and the CLI) have."""

from __future__ import annotations

import anyio
import pytest

from qaqnuz import ApprovalNotPending, KeyCapReached, PendingCapReached
from qaqnuz.store_contract import DAY, NOW, call, key

pytestmark = pytest.mark.anyio


async def test_an_approval_is_consumed_by_exactly_one_of_many_consumers_on_two_replicas(make_store) -> None:
    a, b = make_store(), make_store()
    for round_ in range(5):
        approval_id = f"apr_{round_}"
        await a.open_approval(call(f"{round_}" * 64), new_id=approval_id, now=NOW, pending_ttl=DAY)
        await b.decide_approval(approval_id, approve=True, by="cli:ops", reason=None, now=NOW, valid_for=60)
        results: list[bool] = []

        async def consume(store, approval_id=approval_id) -> None:
            results.append(await store.consume_approval(approval_id, NOW + 1))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(consume, (a, b)[i % 2])
        assert len(results) == 20 and results.count(True) == 1
        used = await a.get_approval(approval_id)
        assert used is not None and used.status == "consumed" and used.arguments is None


async def test_concurrent_mints_on_two_replicas_never_pass_the_cap(make_store) -> None:
    a, b = make_store(), make_store()
    outcomes: list[bool] = []

    async def mint(i: int) -> None:
        try:
            await (a, b)[i % 2].insert_key(key(f"c{i:03d}"), max_active=3, now=NOW)
            outcomes.append(True)
        except KeyCapReached:
            outcomes.append(False)

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(mint, i)
    assert outcomes.count(True) == 3
    assert len(await a.list_keys("acme")) == 3


async def test_the_pending_cap_and_one_request_per_call_hold_across_replicas(make_store) -> None:
    a, b = make_store(), make_store()
    opened: list[str] = []
    refused: list[int] = []

    async def open_(i: int) -> None:
        try:
            request = await (a, b)[i % 2].open_approval(
                call(f"{i:02d}" * 32, cap=4), new_id=f"apr_{i}", now=NOW, pending_ttl=DAY
            )
            opened.append(request.approval_id)
        except PendingCapReached:
            refused.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(open_, i)
    assert len(opened) == 4 and len(refused) == 6

    same: list[str] = []

    async def open_same(i: int) -> None:
        request = await (a, b)[i % 2].open_approval(
            call("z" * 64, key_id="k2"), new_id=f"apr_same_{i}", now=NOW, pending_ttl=DAY
        )
        same.append(request.approval_id)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(open_same, i)
    assert len(set(same)) == 1  # one request for the identical call, whichever replica opened it
    assert (await a.pending_counts()) == {"acme": 5}


async def test_a_request_is_decided_once_across_replicas(make_store) -> None:
    a, b = make_store(), make_store()
    await a.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=DAY)
    decided: list[str] = []
    refused: list[str] = []

    async def decide(store, approve: bool) -> None:
        try:
            await store.decide_approval("apr_1", approve=approve, by="x", reason=None, now=NOW, valid_for=60)
            decided.append("approve" if approve else "deny")
        except ApprovalNotPending:
            refused.append("approve" if approve else "deny")

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(decide, (a, b)[i % 2], i % 2 == 0)
    assert len(decided) == 1 and len(refused) == 5
    stored = await b.get_approval("apr_1")
    assert stored is not None and stored.status == ("approved" if decided == ["approve"] else "denied")


async def test_concurrent_flushes_from_two_replicas_add_up_without_deadlock(make_store) -> None:
    a, b = make_store(), make_store()
    names = [f"k{i:02d}" for i in range(20)]
    for name in names:
        await a.insert_key(key(name), max_active=None, now=NOW)

    async def flush(store, order: list[str], at: float) -> None:
        for _ in range(5):
            await store.flush_usage({n: at for n in order}, {("acme", "2027-01"): 1, ("globex", "2027-01"): 2})

    async with anyio.create_task_group() as tg:
        tg.start_soon(flush, a, names, NOW + 5)
        tg.start_soon(flush, b, names[::-1], NOW + 7)
    assert await a.usage("acme", "2027-01") == 10
    assert await b.usage("globex", "2027-01") == 20
    assert {k.last_used_at for k in await a.list_keys()} == {NOW + 7}


async def test_an_expired_request_found_by_a_decision_stays_expired(make_store) -> None:
    """A decision that finds a pending request past its expiry refuses it and records the expiry."""
    a = make_store()
    await a.open_approval(call(), new_id="apr_1", now=NOW, pending_ttl=60)
    with pytest.raises(ApprovalNotPending):
        await a.decide_approval("apr_1", approve=True, by="x", reason=None, now=NOW + 61, valid_for=60)
    stored = await a.get_approval("apr_1")
    assert stored is not None and stored.status == "expired" and stored.arguments is None
    assert await a.list_approvals() == []
