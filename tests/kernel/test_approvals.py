"""Approval details the stdio suite does not reach: wait_seconds, single use under concurrency, metrics."""

from __future__ import annotations

import anyio
import pytest

from kit import kit_config
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio


def _config(wait: float) -> str:
    return kit_config().replace("[approvals]\n", f"[approvals]\nwait_seconds = {wait}\n")


async def test_wait_seconds_holds_the_call_until_a_decision(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, _config(5)), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.write"], name="w")
        results = []
        async with connect(kernel, key, mode="legacy") as client, anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await client.call_tool("create_order", {"sku": "A", "qty": 1}))

            tg.start_soon(call)
            with anyio.fail_after(4):
                while not await kernel.store.list_approvals("acme"):
                    await anyio.sleep(0.05)
            pending = (await kernel.store.list_approvals("acme"))[0]
            await kernel.store.decide_approval(
                pending.approval_id, approve=True, by="test", reason=None, now=kernel.clock(), valid_for=60
            )
        assert results[0].is_error is False, results[0].structured_content
        assert (tmp_path / "testkit-executions.txt").read_text() == "A:1\n"
        samples = kernel.metrics.registry.get_sample_value
        assert samples("qaqnuz_approval_decisions_total", {"decision": "approved"}) == 1.0
        assert samples("qaqnuz_approvals_pending", {"brand": "acme"}) == 0.0
    finally:
        await kernel.aclose()


async def test_an_approval_executes_once_under_concurrent_reissues(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, _config(0)), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.write"], name="c")
        async with connect(kernel, key, mode="legacy") as client:
            first = await client.call_tool("create_order", {"sku": "B", "qty": 2})
            approval_id = first.structured_content["approval_id"]
            assert kernel.metrics.registry.get_sample_value("qaqnuz_approvals_pending", {"brand": "acme"}) == 1.0
            await kernel.store.decide_approval(
                approval_id, approve=True, by="test", reason=None, now=kernel.clock(), valid_for=60
            )
            results = []
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(lambda: _append(results, client.call_tool("create_order", {"sku": "B", "qty": 2})))
        executed = [r for r in results if not r.is_error]
        assert len(executed) == 1
        assert (tmp_path / "testkit-executions.txt").read_text() == "B:2\n"
        others = {r.structured_content["approval_id"] for r in results if r.is_error}
        assert approval_id not in others  # the consumed approval is never reported again
    finally:
        await kernel.aclose()


async def _append(results: list, awaitable) -> None:
    results.append(await awaitable)
