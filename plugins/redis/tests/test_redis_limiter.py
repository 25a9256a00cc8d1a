"""The Redis limiter decides exactly as the memory limiter does, against a real redis-server: never more than
N per rolling window per key and per brand, a refusal by either dimension counted in neither, a lowered
limit trimmed, a retry hint long enough, and all of it in one script call per admission."""

from __future__ import annotations

import uuid

import anyio
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot
from redis_kit import UNLIMITED, limiter

from qaqnuz import Limit
from qaqnuz.builtin.memory_limiter import MemoryLimiter


def inspect(url: str) -> redis.Redis:
    """A plain client of the test's own, to look at what the limiter wrote."""
    return redis.Redis.from_url(url, decode_responses=True)


@pytest.mark.anyio
async def test_per_key_limit_with_a_retry_hint_from_the_oldest_entry(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    try:
        per_key, per_brand = Limit(5, 60.0), Limit(100, 60.0)
        assert [(await lim.admit("k1", per_key, "acme", per_brand)).admitted for _ in range(5)] == [True] * 5
        refused = await lim.admit("k1", per_key, "acme", per_brand)
        assert not refused.admitted and refused.dimension == "key"
        assert 55_000 < refused.retry_after_ms <= 60_000  # the first call leaves the window 60 s after it came
        assert (await lim.admit("k2", per_key, "acme", per_brand)).admitted  # another key is unaffected
    finally:
        await lim.aclose()


@pytest.mark.anyio
async def test_a_brand_refusal_uses_none_of_the_keys_budget(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    look = inspect(qaqnuz_redis.url)
    try:
        per_key, per_brand = Limit(2, 60.0), Limit(3, 60.0)
        assert (await lim.admit("a", per_key, "acme", per_brand)).admitted
        assert (await lim.admit("a", per_key, "acme", per_brand)).admitted
        assert (await lim.admit("b", per_key, "acme", per_brand)).admitted
        for _ in range(4):
            refused = await lim.admit("b", per_key, "acme", per_brand)
            assert not refused.admitted and refused.dimension == "brand"
        assert look.zcard("qaqnuz:{acme}:key:b") == 1  # only its admitted call
        assert look.zcard("qaqnuz:{acme}:brand") == 3
        # a reload gives the brand room: b still has the second call of its own budget of 2, and no third
        roomy = Limit(10, 60.0)
        assert (await lim.admit("b", per_key, "acme", roomy)).admitted
        assert (await lim.admit("b", per_key, "acme", roomy)).dimension == "key"
    finally:
        await lim.aclose()
        look.close()


@pytest.mark.anyio
async def test_a_key_refusal_uses_none_of_the_brands_budget(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    look = inspect(qaqnuz_redis.url)
    try:
        per_key, per_brand = Limit(1, 60.0), Limit(2, 60.0)
        assert (await lim.admit("a", per_key, "acme", per_brand)).admitted
        for _ in range(5):
            assert (await lim.admit("a", per_key, "acme", per_brand)).dimension == "key"
        assert look.zcard("qaqnuz:{acme}:brand") == 1
        assert (await lim.admit("b", per_key, "acme", per_brand)).admitted  # the brand's second slot is free
        assert (await lim.admit("c", per_key, "acme", per_brand)).dimension == "brand"
    finally:
        await lim.aclose()
        look.close()


# -- against the memory limiter, as the reference model --------------------------------------------------
# Redis's clock is real time, so the model test stays inside one window: windows of minutes, a run of a
# fraction of a second. There nothing expires and a log is just its length, so the reference is small (and
# the memory limiter, with a clock that does not move, must agree with it too). Limits change between calls
# as a config reload would change them, so a lowered limit's trim is compared as well. Real time in windows
# is the business of the tests after this one.
WINDOWS = (60.0, 120.0, 300.0)
limits = st.builds(Limit, st.integers(min_value=1, max_value=4), st.sampled_from(WINDOWS))
# A key belongs to one brand for its whole life (its brand is part of the key's record), and its log lives
# in its brand's hash slot: so each key here has one brand.
callers = st.sampled_from([("k1", "b1"), ("k2", "b1"), ("k3", "b1"), ("k4", "b2"), ("k5", "b2")])
steps = st.lists(st.tuples(callers, limits, limits), min_size=1, max_size=40)


class OneWindow:
    """Sliding logs inside one window: an admission appends to both, a refusal to neither, a lowered limit
    keeps only that many."""

    def __init__(self) -> None:
        self.lengths: dict[tuple[str, str], int] = {}

    def admit(self, key: str, key_limit: Limit, brand: str, brand_limit: Limit) -> set[str]:
        """The dimensions that are full (none: admitted, and both logs grow)."""
        full = set()
        for log, limit in ((("key", key), key_limit), (("brand", brand), brand_limit)):
            self.lengths[log] = min(self.lengths.get(log, 0), limit.count)
            if self.lengths[log] >= limit.count:
                full.add(log[0])
        if not full:
            self.lengths[("key", key)] += 1
            self.lengths[("brand", brand)] += 1
        return full


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_every_decision_matches_the_reference_and_the_memory_limiter(qaqnuz_redis, script) -> None:
    async def scenario() -> None:
        model, memory = OneWindow(), MemoryLimiter(lambda: 1000.0)
        lim = limiter(qaqnuz_redis.url, key_prefix=f"model-{uuid.uuid4().hex}:")  # a fresh space per example
        try:
            for (key, brand), key_limit, brand_limit in script:
                full = model.admit(key, key_limit, brand, brand_limit)
                answer = await lim.admit(key, key_limit, brand, brand_limit)
                expected = await memory.admit(key, key_limit, brand, brand_limit)
                context = (key, brand, key_limit, brand_limit, answer, full)
                assert answer.admitted == expected.admitted == (not full), context
                if answer.admitted:
                    continue
                assert answer.dimension in full, context
                if full == {"key", "brand"} and key_limit.window_s != brand_limit.window_s:
                    assert answer.dimension == expected.dimension, context  # the longer wait names it
                window = key_limit.window_s if answer.dimension == "key" else brand_limit.window_s
                assert window * 1000 - 30_000 < answer.retry_after_ms <= window * 1000, context  # seconds old
        finally:
            await lim.aclose()

    anyio.run(scenario)


@pytest.mark.anyio
async def test_a_retry_hint_is_long_enough_in_real_time(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    try:
        short = Limit(2, 0.3)
        assert (await lim.admit("k", short, "acme", UNLIMITED)).admitted
        assert (await lim.admit("k", short, "acme", UNLIMITED)).admitted
        refused = await lim.admit("k", short, "acme", UNLIMITED)
        assert not refused.admitted and 0 < refused.retry_after_ms <= 300
        # The hint, plus 2 ms: Redis's clock is the wall clock, which NTP may slew against this process's
        # monotonic sleep (exactness to the millisecond is the kernel's fake-clock test's business).
        await anyio.sleep((refused.retry_after_ms + 2) / 1000)
        assert (await lim.admit("k", short, "acme", UNLIMITED)).admitted
    finally:
        await lim.aclose()


@pytest.mark.anyio
async def test_a_lowered_limit_keeps_only_the_newest_entries(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    look = inspect(qaqnuz_redis.url)
    try:
        for _ in range(4):
            assert (await lim.admit("k", Limit(4, 60.0), "acme", UNLIMITED)).admitted
        assert (await lim.admit("k", Limit(2, 60.0), "acme", UNLIMITED)).dimension == "key"  # a reload lowered it
        assert look.zcard("qaqnuz:{acme}:key:k") == 2
        assert (await lim.admit("k", Limit(4, 60.0), "acme", UNLIMITED)).admitted  # raised again: room for two
        assert (await lim.admit("k", Limit(4, 60.0), "acme", UNLIMITED)).admitted
        assert not (await lim.admit("k", Limit(4, 60.0), "acme", UNLIMITED)).admitted
    finally:
        await lim.aclose()
        look.close()


# -- what it writes, and how it talks to Redis -------------------------------------------------------------
@pytest.mark.anyio
async def test_both_logs_share_the_brands_slot_and_expire_with_their_window(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url, key_prefix="app1:")
    look = inspect(qaqnuz_redis.url)
    try:
        assert (await lim.admit("key_7", Limit(5, 30.0), "acme", Limit(9, 90.0))).admitted
        assert sorted(look.keys("*")) == ["app1:{acme}:brand", "app1:{acme}:key:key_7"]
        assert key_slot(b"app1:{acme}:brand") == key_slot(b"app1:{acme}:key:key_7")
        assert key_slot(b"app1:{acme}:brand") != key_slot(b"app1:{globex}:brand")
        assert 25_000 < look.pttl("app1:{acme}:key:key_7") <= 30_000
        assert 85_000 < look.pttl("app1:{acme}:brand") <= 90_000
        assert look.zcard("app1:{acme}:brand") == 1
    finally:
        await lim.aclose()
        look.close()


SCRIPT_COMMANDS = {"time", "zremrangebyscore", "zremrangebyrank", "zcard", "zrange", "zadd", "pttl", "pexpire"}


@pytest.mark.anyio
async def test_each_admission_is_exactly_one_script_call(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    look = inspect(qaqnuz_redis.url)
    try:
        assert (await lim.admit("warm", UNLIMITED, "acme", UNLIMITED)).admitted  # connected, script cached
        look.config_resetstat()
        answers = [await lim.admit("k", Limit(10, 60.0), "acme", UNLIMITED) for _ in range(25)]
        assert [a.admitted for a in answers] == [True] * 10 + [False] * 15
        calls = {name.removeprefix("cmdstat_"): v["calls"] for name, v in look.info("commandstats").items()}
        assert calls.pop("evalsha") == 25
        # everything else Redis counted ran inside the script (and this test's own CONFIG and INFO)
        assert set(calls) <= SCRIPT_COMMANDS | {"config|resetstat", "info"}, calls
    finally:
        await lim.aclose()
        look.close()


@pytest.mark.anyio
async def test_a_flushed_script_cache_is_survived(qaqnuz_redis) -> None:
    lim = limiter(qaqnuz_redis.url)
    look = inspect(qaqnuz_redis.url)
    try:
        assert (await lim.admit("k", Limit(3, 60.0), "acme", UNLIMITED)).admitted
        look.script_flush()  # as a restarted Redis, or an operator, would leave it
        look.config_resetstat()
        assert (await lim.admit("k", Limit(3, 60.0), "acme", UNLIMITED)).admitted  # NOSCRIPT: sent whole, once
        assert (await lim.admit("k", Limit(3, 60.0), "acme", UNLIMITED)).admitted
        assert (await lim.admit("k", Limit(3, 60.0), "acme", UNLIMITED)).dimension == "key"
        stats = look.info("commandstats")
        assert stats["cmdstat_eval"]["calls"] == 1
        assert stats["cmdstat_evalsha"] == {**stats["cmdstat_evalsha"], "calls": 3, "failed_calls": 1}
        assert look.zcard("qaqnuz:{acme}:key:k") == 3
    finally:
        await lim.aclose()
        look.close()
