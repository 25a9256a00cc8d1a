"""The built-in limiters (in memory, and in a SQLite file shared by processes): never more than N admitted
calls in any rolling window, per key and per brand, both dimensions admitted or neither, and a
retry_after_ms that is exactly long enough."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit import kit_config
from qaqnuz.builtin.memory_limiter import MemoryLimiter
from qaqnuz.builtin.sqlite_limiter import SqliteLimiter
from qaqnuz.envelope import RATE_LIMITED
from qaqnuz.records import Admission, Limit
from qaqnuz.testing import connect, start_kernel, write_config


class FakeClock:
    """Seconds as a float that only the test moves."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def in_window(stamps: list[float], end: float, window: float) -> int:
    """Admissions inside the half-open rolling window (end - window, end]."""
    return sum(1 for t in stamps if end - window < t <= end)


def assert_no_window_exceeds(stamps: list[float], limit: Limit) -> None:
    # The busiest window ends at an admission, so checking those windows covers every window.
    for end in stamps:
        assert in_window(stamps, end, limit.window_s) <= limit.count, (stamps, limit)


_FOLDERS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_limiter_files():
    yield
    for folder in _FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def make(kind: str, clock: FakeClock) -> MemoryLimiter | SqliteLimiter:
    if kind == "memory":
        return MemoryLimiter(clock)
    _FOLDERS.append(tempfile.mkdtemp(prefix="qaqnuz-limits-"))  # a fresh file per example, removed at the end
    return SqliteLimiter(str(Path(_FOLDERS[-1]) / "limits.db"), clock)


KINDS = ["memory", "sqlite"]

# Times and windows are multiples of 1/8 s: exact in binary floating point, and a retry_after in whole
# milliseconds (1/8 s = 125 ms) lands exactly on the instant the oldest admission leaves the window.
eighths = st.integers(min_value=0, max_value=24).map(lambda n: n / 8)
windows = st.integers(min_value=4, max_value=40).map(lambda n: n / 8)
limits = st.builds(Limit, st.integers(min_value=1, max_value=4), windows)
events = st.lists(
    st.tuples(eighths, st.sampled_from(["k1", "k2", "k3"]), st.sampled_from(["b1", "b2"]), st.booleans()),
    max_size=60,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_limit=limits, brand_limit=limits, script=events)
def test_no_rolling_window_ever_admits_more_than_n(kind: str, key_limit: Limit, brand_limit: Limit, script) -> None:
    clock = FakeClock()
    limiter = make(kind, clock)
    admitted_by_key: dict[str, list[float]] = {}
    admitted_by_brand: dict[str, list[float]] = {}

    async def attempt(key: str, brand: str) -> Admission:
        now = clock.now
        key_log = admitted_by_key.setdefault(key, [])
        brand_log = admitted_by_brand.setdefault(brand, [])
        key_full = in_window(key_log, now, key_limit.window_s) >= key_limit.count
        brand_full = in_window(brand_log, now, brand_limit.window_s) >= brand_limit.count
        answer = await limiter.admit(key, key_limit, brand, brand_limit)
        # A reference model that appends only on admission must agree on every decision: had a refusal
        # appended to either log, a later decision would differ (all-or-nothing).
        assert answer.admitted == (not key_full and not brand_full), (now, key, brand, answer)
        if answer.admitted:
            key_log.append(now)
            brand_log.append(now)
        else:
            assert answer.retry_after_ms > 0
            assert answer.dimension in {"key", "brand"}
            assert (answer.dimension == "key" and key_full) or (answer.dimension == "brand" and brand_full)
        return answer

    async def scenario() -> None:
        for advance, key, brand, retry in script:
            clock.now += advance
            answer = await attempt(key, brand)
            if answer.admitted or not retry:
                continue
            refused_at = clock.now
            # One millisecond short of retry_after_ms: still refused (the hint is not generous)...
            clock.now = refused_at + (answer.retry_after_ms - 1) / 1000
            early = await attempt(key, brand)
            assert not early.admitted
            # ...and exactly retry_after_ms later, with nothing admitted meanwhile, the call is admitted.
            clock.now = refused_at + answer.retry_after_ms / 1000
            late = await attempt(key, brand)
            assert late.admitted, (answer, late)

    anyio.run(scenario)
    for stamps in admitted_by_key.values():
        assert_no_window_exceeds(stamps, key_limit)
    for stamps in admitted_by_brand.values():
        assert_no_window_exceeds(stamps, brand_limit)


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


@pytest.mark.parametrize("kind", KINDS)
def test_per_key_limit_and_retry_after_from_window(kind: str) -> None:
    clock = FakeClock(0.0)
    limiter = make(kind, clock)
    per_key, per_brand = Limit(5, 60.0), Limit(100, 60.0)
    for second in range(5):
        clock.now = float(second)
        assert run(limiter.admit, "k1", per_key, "acme", per_brand).admitted
    clock.now = 10.0
    refused = run(limiter.admit, "k1", per_key, "acme", per_brand)
    assert refused == Admission(False, 50_000, "key")  # the call at t=0 leaves the window at t=60
    # another key of the same brand is unaffected
    assert run(limiter.admit, "k2", per_key, "acme", per_brand).admitted
    clock.now = 59.999
    assert not run(limiter.admit, "k1", per_key, "acme", per_brand).admitted
    clock.now = 60.0
    assert run(limiter.admit, "k1", per_key, "acme", per_brand).admitted
    assert not run(limiter.admit, "k1", per_key, "acme", per_brand).admitted  # t=1 still inside


@pytest.mark.parametrize("kind", KINDS)
def test_per_brand_limit_holds_across_keys_and_refusals_count_nowhere(kind: str) -> None:
    clock = FakeClock(0.0)
    limiter = make(kind, clock)
    per_key, per_brand = Limit(2, 60.0), Limit(3, 60.0)
    assert run(limiter.admit, "a", per_key, "acme", per_brand).admitted
    assert run(limiter.admit, "a", per_key, "acme", per_brand).admitted
    clock.now = 5.0
    assert run(limiter.admit, "b", per_key, "acme", per_brand).admitted
    refused = run(limiter.admit, "b", per_key, "acme", per_brand)
    assert refused == Admission(False, 55_000, "brand")
    # other brands are separate
    assert run(limiter.admit, "c", per_key, "globex", per_brand).admitted
    # key b was refused by its brand, which must not have used up b's own budget of 2:
    # under a brand with room, b still gets its second call.
    assert run(limiter.admit, "b", per_key, "globex", per_brand).admitted
    assert not run(limiter.admit, "b", per_key, "globex", per_brand).admitted  # now b's own limit


@pytest.mark.parametrize("kind", KINDS)
def test_key_refusal_does_not_use_brand_budget(kind: str) -> None:
    clock = FakeClock(0.0)
    limiter = make(kind, clock)
    per_key, per_brand = Limit(1, 60.0), Limit(2, 60.0)
    assert run(limiter.admit, "a", per_key, "acme", per_brand).admitted
    for _ in range(5):
        assert run(limiter.admit, "a", per_key, "acme", per_brand).dimension == "key"
    assert run(limiter.admit, "b", per_key, "acme", per_brand).admitted  # the brand's second slot is free


# -- through a kernel: the governed path maps a refusal to the documented envelope -------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sixth_call_in_window_is_retryable(tmp_path, mode) -> None:
    cfg = write_config(tmp_path, kit_config(per_key="5/60s", per_brand="300/60s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
        async with connect(kernel, key, mode=mode) as client:
            for i in range(5):
                ok = await client.call_tool("echo", {"message": f"m{i}"})
                assert not ok.is_error
            sixth = await client.call_tool("echo", {"message": "m5"})
        assert sixth.is_error
        assert sixth.content[0].text == RATE_LIMITED
        sc = sixth.structured_content
        assert sc["ok"] is False
        assert sc["error_class"] == "retryable"
        assert sc["sanitized_error"] == RATE_LIMITED
        assert 0 < sc["retry_hint"]["retry_after_ms"] <= 60_000
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_brand_limit_holds_across_two_keys(tmp_path) -> None:
    cfg = write_config(tmp_path, kit_config(per_key="5/60s", per_brand="3/60s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        key_a, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="a")
        key_b, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="b")
        key_g, _ = await kernel.keys.mint(brand="globex", scopes=["orders.read"], name="g")
        async with connect(kernel, key_a) as a, connect(kernel, key_b) as b, connect(kernel, key_g) as g:
            assert not (await a.call_tool("echo", {"message": "1"})).is_error
            assert not (await a.call_tool("echo", {"message": "2"})).is_error
            assert not (await b.call_tool("echo", {"message": "3"})).is_error
            refused = await b.call_tool("echo", {"message": "4"})
            other_brand = await g.call_tool("echo", {"message": "5"})
        assert refused.is_error
        assert refused.structured_content["error_class"] == "retryable"
        assert refused.structured_content["retry_hint"]["retry_after_ms"] > 0
        assert not other_brand.is_error
        rejections = kernel.metrics.registry.get_sample_value(
            "qaqnuz_rate_limit_rejections_total", {"dimension": "brand"}
        )
        assert rejections == 1
    finally:
        await kernel.aclose()


# -- the sqlite limiter's file ----------------------------------------------------------------------------
def test_the_limiter_file_sits_beside_the_store_unless_set(tmp_path) -> None:
    from qaqnuz.config import load_config

    def path_for(name: str, server: str) -> str:
        text = kit_config().replace('store = "sqlite:///qaqnuz.db"\n', server)
        return load_config(write_config(tmp_path / name, text)).limiter_path()

    assert path_for("default", 'store = "sqlite:///qaqnuz.db"\n') == str(tmp_path / "default" / "qaqnuz-limits.db")
    assert path_for("nested", 'store = "sqlite:///data/main.db"\n') == str(tmp_path / "nested/data/main-limits.db")
    assert path_for("other", 'store = "postgresql://db.internal/qaqnuz"\n') == str(tmp_path / "other/qaqnuz-limits.db")
    explicit = 'store = "sqlite:///qaqnuz.db"\nlimiter_file = "state/limits.db"\n'
    assert path_for("explicit", explicit) == str(tmp_path / "explicit/state/limits.db")


@pytest.mark.anyio
async def test_the_default_limiter_keeps_its_windows_in_a_private_file_beside_the_store(tmp_path) -> None:
    cfg = write_config(tmp_path, kit_config(per_key="2/60s", per_brand="300/60s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        assert type(kernel.runtime.limiter).__name__ == "SqliteLimiter"
        limits = tmp_path / "qaqnuz-limits.db"
        assert not limits.exists()  # opened by the first call, so `config check` creates nothing
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="f")
        async with connect(kernel, key) as client:
            assert not (await client.call_tool("echo", {"message": "1"})).is_error
        assert limits.exists() and limits.stat().st_mode & 0o777 == 0o600
        assert await kernel.readiness() == {"store": True, "limiter": True, "registry": True, "audit": True}
    finally:
        await kernel.aclose()
    # a second kernel on the same files (a restart, another process) sees the same window
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        async with connect(kernel, key) as client:
            assert not (await client.call_tool("echo", {"message": "2"})).is_error
            assert (await client.call_tool("echo", {"message": "3"})).is_error  # the key's third in 60 s
    finally:
        await kernel.aclose()


# -- the sqlite limiter's file, shared and damaged ---------------------------------------------------------
def test_a_sweep_never_cuts_another_buckets_longer_window(tmp_path, monkeypatch) -> None:
    import qaqnuz.builtin.sqlite_limiter as module

    monkeypatch.setattr(module, "SWEEP_EVERY", 8)
    clock = FakeClock(0.0)
    path = str(tmp_path / "limits.db")
    hourly, brief = SqliteLimiter(path, clock), SqliteLimiter(path, clock)  # two processes, in effect
    key, hour = Limit(100, 3600.0), Limit(5, 3600.0)
    assert [run(hourly.admit, "h1", key, "hourly", hour).admitted for _ in range(6)] == [True] * 5 + [False]
    short = Limit(100, 0.01)
    for i in range(40):  # the other process sweeps five times over, on windows of 10 ms
        clock.now += 0.02
        assert run(brief.admit, f"k{i}", short, "brief", short).admitted
    clock.now += 60
    assert not run(hourly.admit, "h2", key, "hourly", hour).admitted  # the hour's five still count
    clock.now += 3600
    assert run(hourly.admit, "h2", key, "hourly", hour).admitted


def test_a_damaged_file_is_set_aside_and_a_new_one_serves(tmp_path, caplog) -> None:
    path = tmp_path / "limits.db"
    path.write_bytes(b"this is not a database file at all" * 200)
    limiter = SqliteLimiter(str(path), FakeClock())
    assert run(limiter.admit, "k", Limit(1, 60.0), "acme", Limit(5, 60.0)).admitted
    assert "damaged" in caplog.text and list(tmp_path.glob("limits.db.damaged-*"))
    assert not run(limiter.admit, "k", Limit(1, 60.0), "acme", Limit(5, 60.0)).admitted


def test_the_file_and_its_wal_are_private_and_a_new_boot_forgets_old_windows(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "limits.db"
    limiter = SqliteLimiter(str(path), FakeClock())
    assert run(limiter.admit, "k", Limit(1, 60.0), "acme", Limit(5, 60.0)).admitted
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"limits.db": 0o600, "limits.db-wal": 0o600, "limits.db-shm": 0o600}, modes
    run(limiter.aclose)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'an earlier boot' WHERE name = 'boot'")
    again = SqliteLimiter(str(path), FakeClock())
    assert run(again.admit, "k", Limit(1, 60.0), "acme", Limit(5, 60.0)).admitted  # the old window is gone


@pytest.mark.anyio
async def test_a_file_another_process_holds_is_waited_for_without_blocking_the_loop(tmp_path) -> None:
    import sqlite3
    import threading
    import time

    path = tmp_path / "limits.db"
    limiter = SqliteLimiter(str(path), FakeClock())
    assert (await limiter.admit("k", Limit(9, 60.0), "acme", Limit(9, 60.0))).admitted
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        started = time.monotonic()
        admitted = await limiter.admit("k", Limit(9, 60.0), "acme", Limit(9, 60.0))
        waited = time.monotonic() - started
        tg.cancel_scope.cancel()
    holder.close()
    assert admitted.admitted and waited >= 0.25
    assert ticks >= 10  # the loop ran meanwhile
