"""Two servers sharing one Redis hold one limit between them: 200 callers at once, through two real kernels'
governed pipelines, admit exactly the brand's N, and exactly N tool executions happen."""

from __future__ import annotations

import anyio
import pytest
import redis
from redis_kit import start

pytestmark = pytest.mark.anyio

BRAND_LIMIT = 37
CALLERS = 200  # 100 per kernel: 10 keys each, 10 calls at once per key


async def test_two_kernels_with_200_concurrent_callers_admit_exactly_n(
    qaqnuz_redis, qaqnuz_kernel, qaqnuz_client, tmp_path, monkeypatch
) -> None:
    kernels = [
        await start(qaqnuz_kernel, qaqnuz_redis.url, folder=tmp_path / name, per_brand=f"{BRAND_LIMIT}/60s")
        for name in ("one", "two")  # separate stores and keys; one brand, one Redis
    ]
    keys = [
        [(await kernel.keys.mint(brand="acme", scopes=["count.run"], name=f"k{i}"))[0] for i in range(10)]
        for kernel, _ in kernels
    ]
    in_flight, most_in_flight = 0, 0

    def watched(limiter):
        async def admit(*args):
            nonlocal in_flight, most_in_flight
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            try:
                return await real(*args)
            finally:
                in_flight -= 1

        real = limiter.admit
        return admit

    for kernel, _ in kernels:  # to see that the calls really meet at the limiter, not one after another
        monkeypatch.setattr(kernel.runtime.limiter, "admit", watched(kernel.runtime.limiter))
    answers: list[dict] = []
    start_together = anyio.Event()

    async def caller(client) -> None:
        await start_together.wait()
        result = await client.call_tool("bump", {})
        answers.append(result.structured_content)

    async def clients_of(kernel, key: str) -> None:
        async with qaqnuz_client(kernel, key) as client, anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(caller, client)

    async with anyio.create_task_group() as tg:
        for (kernel, _), kernel_keys in zip(kernels, keys, strict=True):
            for key in kernel_keys:
                tg.start_soon(clients_of, kernel, key)
        await anyio.sleep(0.5)  # every session open and every caller waiting
        start_together.set()

    assert len(answers) == CALLERS
    assert most_in_flight > 32  # more at once than the pool has connections (typically all 200)
    admitted = [a for a in answers if a["ok"]]
    refused = [a for a in answers if not a["ok"]]
    assert len(admitted) == BRAND_LIMIT
    assert sum(pack.executions for _, pack in kernels) == BRAND_LIMIT
    assert {a["error_class"] for a in refused} == {"retryable"}
    assert {a["sanitized_error"] for a in refused} == {"Rate limit exceeded. Please wait before sending more requests."}
    assert all(0 < a["retry_hint"]["retry_after_ms"] <= 60_000 for a in refused)
    rejections = sum(
        kernel.metrics.registry.get_sample_value("qaqnuz_rate_limit_rejections_total", {"dimension": "brand"}) or 0
        for kernel, _ in kernels
    )
    assert rejections == CALLERS - BRAND_LIMIT
    assert all(kernel.metrics.registry.get_sample_value("qaqnuz_limiter_errors_total") == 0 for kernel, _ in kernels)
    look = redis.Redis.from_url(qaqnuz_redis.url)
    try:
        assert look.zcard("qaqnuz:{acme}:brand") == BRAND_LIMIT
    finally:
        look.close()
