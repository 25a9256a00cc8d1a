"""A refused key must not say whether its key id exists: a known id with a wrong secret and an unknown id take
the same time to refuse.

Both credentials are well formed (their checksums hold), so both reach the store: the attacker's case. The
two kinds are timed in interleaved pairs (the order alternating, each credential fresh) through the API-key
provider against the real SQLite store: the part of a refusal that depends on the key id (what the kernel
adds after it, the counted and audited refusal, is the same for both and only adds noise). Their medians
must differ by less than the noise measured in the same run: how far a single refusal's time typically lies
from its median (the median absolute deviation, 2 to 5 µs here).

Before the fix a known id was answered from the store's cache and an unknown id cost a SELECT: 10 to 21 µs
apart. After it both read one row past the cache (an unknown id reads a decoy row) and decode it: the
medians lie 0.3 to 0.5 µs apart (SQLite's b-trees for the two rows differ a little), a tenth of the noise.

This is the one test in the suite that measures time; it compares two figures taken in the same run, never a
figure against a fixed limit.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from kit import kit_config
from qaqnuz.keys import KEY_ID_LEN, SECRET_LEN, checksum, random_b62
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio

PAIRS = 4000
WARM_UP = 400


def _jitter(samples: list[int]) -> float:
    """How far one refusal's time typically lies from the median of its kind: the median absolute deviation."""
    middle = statistics.median(samples)
    return statistics.median(abs(sample - middle) for sample in samples)


async def test_a_known_key_id_is_refused_as_fast_as_an_unknown_one(tmp_path: Path) -> None:
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        keys = [await kernel.keys.mint(brand="acme", scopes=["orders.read"], name=f"k{i}") for i in range(5)]
        key, record = keys[3]
        prefix = key[: key.index(record.key_id)]
        assert await kernel.host.authenticate(key, transport="http") is not None

        def forged(key_id: str) -> str:
            body = f"{prefix}{key_id}_{random_b62(SECRET_LEN)}"
            return body + checksum(body)  # well formed: it reaches the store, as an attacker's would

        known = [forged(record.key_id) for _ in range(PAIRS + WARM_UP)]
        unknown = [forged(random_b62(KEY_ID_LEN)) for _ in range(PAIRS + WARM_UP)]
        known_ns: list[int] = []
        unknown_ns: list[int] = []
        clock = time.perf_counter_ns
        authenticate = kernel.runtime.auth.authenticate

        async def timed(credential: str, into: list[int]) -> None:
            start = clock()
            refused = await authenticate(credential)
            into.append(clock() - start)
            assert refused is None

        for i in range(PAIRS + WARM_UP):
            if i % 2:
                await timed(known[i], known_ns)
                await timed(unknown[i], unknown_ns)
            else:
                await timed(unknown[i], unknown_ns)
                await timed(known[i], known_ns)
        known_ns, unknown_ns = known_ns[WARM_UP:], unknown_ns[WARM_UP:]
    finally:
        await kernel.aclose()

    gap = abs(statistics.median(known_ns) - statistics.median(unknown_ns))
    noise = min(_jitter(known_ns), _jitter(unknown_ns))
    figures = (
        f"known id, wrong secret: median {statistics.median(known_ns) / 1000:.2f} µs; "
        f"unknown id: median {statistics.median(unknown_ns) / 1000:.2f} µs; "
        f"gap {gap / 1000:.2f} µs; noise (the smaller median absolute deviation) {noise / 1000:.2f} µs"
    )
    print(figures)
    assert gap < noise, figures
