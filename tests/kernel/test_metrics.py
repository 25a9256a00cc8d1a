"""Collectors are per kernel, updated by calls, and never labelled with keys or argument values."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kit import kit_config
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio


def _samples(kernel) -> dict[tuple[str, tuple], float]:
    text = generate_latest(kernel.metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }, text


async def test_calls_update_counters_and_labels_stay_bounded(tmp_path):
    kernel = await start_kernel(
        write_config(tmp_path / "a", kit_config(per_key="2/60s")), plugins=["testkit_pack.plugin"]
    )
    other = await start_kernel(write_config(tmp_path / "b", kit_config()), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="m")
        async with connect(kernel, key) as client:
            await client.call_tool("echo", {"message": "canary-value-123"})
            await client.call_tool("no_such_tool_xyz", {})
            await client.call_tool("echo", {"message": "again"})  # third call: rate limited
        async with connect(kernel, "qx_live_bogus") as client:
            with pytest.raises(Exception):
                await client.list_tools()
        samples, text = _samples(kernel)
        ok = (
            "qaqnuz_tool_calls_total",
            (("brand", "acme"), ("error_class", ""), ("outcome", "executed"), ("tool", "echo")),
        )
        denied = (
            "qaqnuz_tool_calls_total",
            (("brand", "acme"), ("error_class", "permission"), ("outcome", "denied"), ("tool", "(unknown)")),
        )
        assert samples[ok] == 1.0
        assert samples[denied] == 1.0
        assert samples[("qaqnuz_rate_limit_rejections_total", (("dimension", "key"),))] == 1.0
        assert samples[("qaqnuz_auth_failures_total", (("transport", "memory"),))] == 1.0
        assert samples[("qaqnuz_tools_registered", ())] == 13.0  # the testkit tools
        duration = "qaqnuz_tool_call_duration_seconds_count"
        assert samples[(duration, (("brand", "acme"), ("tool", "echo")))] == 2.0
        assert samples[(duration, (("brand", "acme"), ("tool", "(unknown)")))] == 1.0
        assert ("qaqnuz_build_info", (("version", "0.1.0"),)) in samples
        for needle in (key, "canary-value-123", "no_such_tool_xyz", "bogus"):
            assert needle not in text
        # a second kernel has its own registry: none of the first kernel's calls show there
        other_samples, _ = _samples(other)
        assert not any(name == "qaqnuz_tool_calls_total" for name, _ in other_samples)
    finally:
        await kernel.aclose()
        await other.aclose()


async def test_a_failed_audit_write_is_counted_and_logged_not_silent(tmp_path, caplog):
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="m")
        kernel.audit.close()
        audit_file = tmp_path / "qaqnuz-audit.jsonl"
        audit_file.unlink()
        audit_file.mkdir()  # the audit path is now unwritable
        async with connect(kernel, key) as client:
            result = await client.call_tool("echo", {"message": "x"})
        assert result.is_error is False
        assert kernel.metrics.registry.get_sample_value("qaqnuz_audit_errors_total") >= 1.0
        assert "AUDIT WRITE FAILED" in caplog.text
    finally:
        await kernel.aclose()


async def test_the_monthly_gauge_follows_every_process_sharing_the_store(tmp_path):
    """Two servers on one store (two stdio processes, two workers): after a flush each one's gauge counts the
    other's calls too, not its own alone."""
    path = write_config(tmp_path, kit_config())
    first = await start_kernel(path, plugins=["testkit_pack.plugin"])
    second = await start_kernel(path, plugins=["testkit_pack.plugin"])
    try:
        key, _ = await first.keys.mint(brand="acme", scopes=["orders.read"], name="m")
        async with connect(first, key) as client:
            for _ in range(3):
                assert not (await client.call_tool("echo", {"message": "a"})).is_error
        async with connect(second, key) as client:
            assert not (await client.call_tool("echo", {"message": "b"})).is_error
        gauge = ("qaqnuz_monthly_calls", (("brand", "acme"),))
        assert _samples(first)[0][gauge] == 3.0 and _samples(second)[0][gauge] == 1.0
        await first.flush()
        await second.flush()
        async with connect(second, key) as client:
            assert not (await client.call_tool("echo", {"message": "c"})).is_error
        assert _samples(second)[0][gauge] == 5.0  # 3 + 1 flushed by both, and this call
    finally:
        await first.aclose()
        await second.aclose()
