"""When Redis dies, hangs or comes back: every call is refused as retryable and none runs, a refusal costs
microseconds once the breaker is open, readiness says so, and the same server recovers on its own."""

from __future__ import annotations

import time

import anyio
import pytest
import redis.asyncio
from redis_kit import UNLIMITED, limiter, start

from qaqnuz import Limit, LimiterUnavailable
from qaqnuz_redis.breaker import Breaker

RETRYABLE_UNAVAILABLE = "Rate limiting is temporarily unavailable. Please retry shortly."


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_lets_one_probe_through_and_closes_on_its_success() -> None:
    clock = FakeClock()
    breaker = Breaker(cooldown=1.0, probe_wait=0.05, clock=clock)
    assert breaker.enter() is False  # closed: calls go to Redis as usual
    assert breaker.failed() is True  # opened: the moment to log it
    assert breaker.failed() is False  # a second failure of calls in flight is not news
    clock.now += 0.25
    with pytest.raises(LimiterUnavailable) as refused:
        breaker.enter()
    assert refused.value.retry_after_ms == 750  # the cool-off left
    clock.now += 0.75
    assert breaker.enter() is True  # cooled off: this call is the probe
    with pytest.raises(LimiterUnavailable) as meanwhile:
        breaker.enter()  # one probe at a time
    assert meanwhile.value.retry_after_ms == 50
    assert breaker.failed() is False  # the probe failed: another cool-off
    breaker.probe_done()
    with pytest.raises(LimiterUnavailable):
        breaker.enter()
    clock.now += 1.0
    assert breaker.enter() is True
    assert breaker.succeeded(probe=False) is False  # only the probe's answer closes it
    assert breaker.succeeded(probe=True) is True
    breaker.probe_done()
    assert not breaker.is_open and breaker.enter() is False


@pytest.mark.anyio
async def test_an_open_breaker_refuses_without_touching_the_network(qaqnuz_redis, monkeypatch) -> None:
    lim = limiter(qaqnuz_redis.url, breaker_cooldown="30s")
    try:
        assert (await lim.admit("k", UNLIMITED, "acme", UNLIMITED)).admitted
        qaqnuz_redis.kill()
        with pytest.raises(LimiterUnavailable) as first:
            await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
        assert 29_000 < first.value.retry_after_ms <= 30_000
        sent: list[tuple] = []

        async def spy(self, *args, **options):
            sent.append(args)
            raise AssertionError("a command reached the client while the breaker is open")

        monkeypatch.setattr(redis.asyncio.Redis, "execute_command", spy)
        started = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(LimiterUnavailable) as refused:
                await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
            assert 0 < refused.value.retry_after_ms <= 30_000
        elapsed = time.perf_counter() - started
        assert sent == []
        assert elapsed < 1.0, elapsed  # microseconds each (typically 5 to 20); 1 ms each is a loose bound
        assert not await lim.ready()
        assert sent == []
    finally:
        await lim.aclose()


async def _call(client, tool: str = "bump") -> tuple[bool, dict]:
    result = await client.call_tool(tool, {})
    return result.is_error, result.structured_content


def _errors(kernel) -> float:
    return kernel.metrics.registry.get_sample_value("qaqnuz_limiter_errors_total") or 0.0


@pytest.mark.anyio
async def test_redis_killed_mid_run_refuses_every_call_and_the_same_server_recovers_when_it_returns(
    qaqnuz_redis, qaqnuz_kernel, qaqnuz_client
) -> None:
    kernel, pack = await start(qaqnuz_kernel, qaqnuz_redis.url)
    keys = [(await kernel.keys.mint(brand="acme", scopes=["count.run"], name=f"c{i}"))[0] for i in range(4)]
    killed_at: list[float] = []
    answers: list[tuple[float, bool, dict]] = []  # (when the call was sent, is_error, structured content)

    async def caller(key: str) -> None:
        async with qaqnuz_client(kernel, key) as client:
            for _ in range(60):
                sent = time.monotonic()
                is_error, content = await _call(client)
                answers.append((sent, is_error, content))
                await anyio.sleep(0.005)

    async def killer() -> None:
        await anyio.sleep(0.15)
        qaqnuz_redis.kill()
        killed_at.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(caller, key)
        tg.start_soon(killer)

    before = [a for a in answers if a[0] < killed_at[0]]
    after = [a for a in answers if a[0] >= killed_at[0]]
    assert before and len(after) > 100  # the kill really came mid-run
    for _, is_error, content in after:
        assert is_error
        assert content["error_class"] == "retryable"
        assert content["sanitized_error"] == RETRYABLE_UNAVAILABLE
        assert 0 < content["retry_hint"]["retry_after_ms"] <= 200  # the cool-off (200 ms) left
    successes = sum(1 for _, is_error, _ in answers if not is_error)
    assert pack.executions == successes  # nothing ran that was not admitted, and nothing ran after the kill
    assert _errors(kernel) == len(answers) - successes
    assert (await kernel.readiness())["limiter"] is False

    ran_while_down = pack.executions
    qaqnuz_redis.start()  # the same port, an empty Redis; this kernel is not restarted
    async with qaqnuz_client(kernel, keys[0]) as client:
        deadline = time.monotonic() + 10
        while (await _call(client))[0]:
            assert time.monotonic() < deadline, "the limiter did not recover after Redis came back"
            await anyio.sleep(0.05)
        for _ in range(10):
            is_error, content = await _call(client)
            assert not is_error, content
    assert pack.executions == ran_while_down + 11
    assert await kernel.readiness() == {"store": True, "limiter": True, "registry": True, "audit": True}


@pytest.mark.anyio
async def test_a_hung_redis_fails_each_call_within_its_timeout(qaqnuz_redis, qaqnuz_kernel, qaqnuz_client) -> None:
    kernel, pack = await start(qaqnuz_kernel, qaqnuz_redis.url)
    key, _ = await kernel.keys.mint(brand="acme", scopes=["count.run"], name="hung")
    async with qaqnuz_client(kernel, key) as client:
        assert not (await _call(client))[0]
        qaqnuz_redis.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            timings: list[float] = []

            async def one() -> None:
                started = time.monotonic()
                is_error, content = await _call(client)
                timings.append(time.monotonic() - started)
                assert is_error and content["error_class"] == "retryable"
                assert content["sanitized_error"] == RETRYABLE_UNAVAILABLE

            for _ in range(3):  # one after another: the first waits out the timeout, the rest meet the breaker
                await one()
            await anyio.sleep(0.25)  # past the cool-off: of many calls at once, one probes (and waits it out too)
            async with anyio.create_task_group() as tg:
                for _ in range(40):
                    tg.start_soon(one)
            assert max(timings) < 1.0, timings  # a 50 ms timeout; a loose bound for a busy machine
            assert pack.executions == 1
            assert (await kernel.readiness())["limiter"] is False
        finally:
            qaqnuz_redis.resume()
        deadline = time.monotonic() + 10
        while (await _call(client))[0]:
            assert time.monotonic() < deadline, "the limiter did not recover after Redis resumed"
            await anyio.sleep(0.05)
    assert (await kernel.readiness())["limiter"] is True


@pytest.mark.anyio
async def test_readiness_probes_redis_so_a_server_out_of_rotation_finds_it_back(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url, breaker_cooldown="100ms")
    try:
        assert await lim.ready()
        qaqnuz_redis.kill()
        assert not await lim.ready()  # PING failed: the breaker is open
        qaqnuz_redis.start()
        assert not await lim.ready()  # still cooling off: no network
        await anyio.sleep(0.15)
        assert await lim.ready()  # the readiness check was the probe, with no call at all
        assert (await lim.admit("k", Limit(1, 60.0), "acme", UNLIMITED)).admitted
    finally:
        await lim.aclose()


@pytest.mark.anyio
async def test_a_closed_limiter_refuses_rather_than_reconnect(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    assert (await lim.admit("k", UNLIMITED, "acme", UNLIMITED)).admitted
    await lim.aclose()
    with pytest.raises(LimiterUnavailable):
        await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
    assert not await lim.ready()


@pytest.mark.anyio
async def test_callers_queued_for_the_pool_behind_a_hung_redis_are_refused_when_it_fails(qaqnuz_redis) -> None:
    """Four connections, 200 callers at once, Redis stopped: the four on the wire wait out the timeout,
    and the 196 waiting for a connection then meet the open breaker instead of taking their turn."""
    lim = limiter(qaqnuz_redis.url, pool_size=4, breaker_cooldown="5s")
    try:
        answers = [await lim.admit(f"warm{i}", UNLIMITED, "acme", UNLIMITED) for i in range(4)]
        assert all(a.admitted for a in answers)
        qaqnuz_redis.pause()
        outcomes: list[tuple[float, int]] = []

        async def one(i: int) -> None:
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable) as refused:
                await lim.admit(f"k{i}", UNLIMITED, "acme", UNLIMITED)
            outcomes.append((time.monotonic() - started, refused.value.retry_after_ms))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        total = time.monotonic() - started
        assert len(outcomes) == 200
        assert total < 1.0, total  # one timeout (50 ms) for everyone, not 50 turns of four
        assert all(0 < retry <= 5000 for _, retry in outcomes)
    finally:
        qaqnuz_redis.resume()
        await lim.aclose()
