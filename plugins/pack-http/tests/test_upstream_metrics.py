"""Upstream latency and failures reach the kernel's metrics, labelled by the pack's config name and a fixed
kind of failure: never a URL, a status text, a header or an argument."""

from __future__ import annotations

import pytest
from httppack_kit import SECRET_BODY, config, echo_pack
from prometheus_client import generate_latest

import qaqnuz_pack_http

pytestmark = pytest.mark.anyio

PACK = """
[[packs.api.tools]]
name = "status"
description = "Answers with the status asked for."
scope = "api.read"
path = "/status/{{ code }}"
input = { code = { type = "integer" } }

[[packs.api.tools]]
name = "slow"
description = "Answers after 1.5s."
scope = "api.read"
path = "/slow"
"""


async def test_each_upstream_request_is_timed_and_failures_counted_by_kind(
    qaqnuz_kernel, qaqnuz_client, upstream, closed_port
):
    pack = echo_pack(upstream.url, extra='timeout = "300ms"\nretries = 0') + PACK
    kernel = await qaqnuz_kernel(config(pack, ["echo", "status", "slow"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        assert not (await client.call_tool("echo", {"q": "canary-arg-77"})).is_error
        assert not (await client.call_tool("echo", {"q": "again"})).is_error
        assert (await client.call_tool("status", {"code": 404})).is_error
        assert (await client.call_tool("status", {"code": 500})).is_error
        assert (await client.call_tool("slow", {})).is_error
    sample = kernel.metrics.registry.get_sample_value
    assert sample("qaqnuz_upstream_duration_seconds_count", {"pack": "api"}) == 5.0
    assert sample("qaqnuz_upstream_errors_total", {"pack": "api", "error": "status"}) == 2.0
    assert sample("qaqnuz_upstream_errors_total", {"pack": "api", "error": "timeout"}) == 1.0
    assert sample("qaqnuz_upstream_duration_seconds_sum", {"pack": "api"}) >= 0.3  # the timed-out one waited
    text = generate_latest(kernel.metrics.registry).decode()
    for needle in ("canary-arg-77", "127.0.0.1", SECRET_BODY, "/status/", "Not Found"):
        assert needle not in text


async def test_a_refused_connection_is_counted_as_connect(qaqnuz_kernel, qaqnuz_client, closed_port):
    pack = echo_pack(f"http://127.0.0.1:{closed_port}", extra="retries = 0")
    kernel = await qaqnuz_kernel(config(pack, ["echo"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        assert (await client.call_tool("echo", {"q": "x"})).is_error
    sample = kernel.metrics.registry.get_sample_value
    assert sample("qaqnuz_upstream_errors_total", {"pack": "api", "error": "connect"}) == 1.0
    assert sample("qaqnuz_upstream_duration_seconds_count", {"pack": "api"}) == 1.0
