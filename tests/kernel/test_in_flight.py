"""Calls in flight are capped per key (`[server] max_in_flight_per_key`) and in total (`max_in_flight`): a call
beyond either is refused at once, retryable, with a message naming the limit, and audited; the calls already
running are untouched, another key is still served, and the slot is free again when a call ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from kit import kit_config
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio


async def _kernel(tmp_path: Path, per_key: int, total: int) -> Any:
    config = kit_config(per_key="1000/60s", per_brand="1000/60s").replace(
        "[server]\n", f"[server]\nmax_in_flight_per_key = {per_key}\nmax_in_flight = {total}\n", 1
    )
    return await start_kernel(write_config(tmp_path, config), plugins=["testkit_pack.plugin"])


async def _principal(kernel: Any, brand: str = "acme") -> Any:
    key, _ = await kernel.keys.mint(brand=brand, scopes=["orders.read"], name=f"k-{brand}")
    principal = await kernel.host.authenticate(key, transport="memory")
    assert principal is not None
    return principal


SLOW: tuple[str, dict[str, Any]] = ("slow", {})  # in flight for half a second (its timeout)
ECHO: tuple[str, dict[str, Any]] = ("echo", {"message": "hi"})  # the one tool every brand here has


async def _together(kernel: Any, calls: list[tuple[Any, tuple[str, dict[str, Any]]]]) -> list[Any]:
    """Start the calls in this order (each reaches the gate before the next starts) and collect them."""
    outcomes: list[Any] = [None] * len(calls)

    async def one(i: int, principal: Any, tool: str, arguments: dict[str, Any]) -> None:
        outcomes[i] = await kernel.pipeline.call_tool(principal, tool, arguments, transport="memory")

    async with anyio.create_task_group() as tg:
        for i, (principal, (tool, arguments)) in enumerate(calls):
            tg.start_soon(one, i, principal, tool, arguments)
            await anyio.sleep(0)  # let it reach the gate (and its first await) first
    return outcomes


async def test_a_key_past_its_in_flight_cap_is_refused_and_another_key_is_served(tmp_path: Path) -> None:
    kernel = await _kernel(tmp_path, per_key=2, total=10)
    try:
        acme, globex = await _principal(kernel), await _principal(kernel, "globex")
        outcomes = await _together(kernel, [(acme, SLOW), (acme, SLOW), (acme, SLOW), (globex, ECHO)])
        steps = [o.step for o in outcomes]
        assert steps == ["execution", "execution", "concurrency", "execution"], steps
        refused = outcomes[2].result
        assert refused.error_class == "retryable" and refused.retry_hint.retry_after_ms > 0
        assert "max_in_flight_per_key" in refused.sanitized_error and "at most 2" in refused.sanitized_error
        # the slots are free again once the calls ended
        again = await _together(kernel, [(acme, SLOW), (acme, SLOW)])
        assert [o.step for o in again] == ["execution", "execution"]
        assert kernel.pipeline._running == 0 and kernel.pipeline._running_by_key == {}
    finally:
        await kernel.aclose()
    audited = [line for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines() if '"concurrency"' in line]
    assert len(audited) == 1 and '"denied"' in audited[0]


async def test_the_server_past_its_total_in_flight_cap_refuses_any_key(tmp_path: Path) -> None:
    kernel = await _kernel(tmp_path, per_key=5, total=2)  # acme may run 5, the server only 2
    try:
        acme, globex = await _principal(kernel), await _principal(kernel, "globex")
        outcomes = await _together(kernel, [(acme, SLOW), (acme, SLOW), (globex, ECHO)])
        assert [o.step for o in outcomes] == ["execution", "execution", "concurrency"]
        assert "max_in_flight" in outcomes[2].result.sanitized_error
        assert "max_in_flight_per_key" not in outcomes[2].result.sanitized_error
    finally:
        await kernel.aclose()


async def test_a_cancelled_call_gives_its_slot_back(tmp_path: Path) -> None:
    kernel = await _kernel(tmp_path, per_key=1, total=1)
    try:
        acme = await _principal(kernel)
        with anyio.move_on_after(0.1):
            await kernel.pipeline.call_tool(acme, "slow", {}, transport="memory")
        assert kernel.pipeline._running == 0 and kernel.pipeline._running_by_key == {}
        echoed = await kernel.pipeline.call_tool(acme, "echo", {"message": "hi"}, transport="memory")
        assert echoed.step == "execution" and not echoed.is_error
    finally:
        await kernel.aclose()


def test_the_caps_must_be_positive(tmp_path: Path) -> None:
    from qaqnuz import ConfigError
    from qaqnuz.config import load_config

    config = kit_config().replace("[server]\n", "[server]\nmax_in_flight = 0\nmax_in_flight_per_key = -1\n", 1)
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, config))
    assert "[server] max_in_flight: must be at least 1" in str(raised.value)
    assert "[server] max_in_flight_per_key: must be at least 1" in str(raised.value)
