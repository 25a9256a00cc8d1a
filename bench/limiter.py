"""What a rate-limit decision costs, per limiter, side by side in one interleaved run.

    uv run python bench/limiter.py [--calls N] [--rounds R] [--keys K] [--redis-url URL] [--json]

Each limiter admits calls for K keys of one brand (limits no run reaches, so every call is a full admission)
in R rounds of N calls, the limiters taking turns; printed per limiter: median and p99 wall µs per decision
and CPU µs per decision (this process's user + system time, so Redis's own work is not in it), and the ratio
to the memory limiter. `sqlite` runs on a fresh file in a temporary folder, as the default limiter does
beside the store; `redis` (qaqnuz-redis) on a throwaway `redis-server` on loopback (or `--redis-url`), one
round trip per decision. It asserts nothing about timings and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from timing import summarise, throwaway

from qaqnuz.builtin.memory_limiter import MemoryLimiter
from qaqnuz.builtin.sqlite_limiter import SqliteLimiter
from qaqnuz.records import Limit
from qaqnuz.testservers import RedisServer

KEY_LIMIT, BRAND_LIMIT = Limit(10_000_000, 60.0), Limit(100_000_000, 60.0)


async def block(limiter: Any, calls: int, keys: int, start: int, samples: list[int]) -> float:
    """`calls` decisions; appends each one's wall ns; returns the CPU seconds they took."""
    cpu = time.process_time()
    for i in range(start, start + calls):
        began = time.perf_counter_ns()
        admission = await limiter.admit(f"key{i % keys}", KEY_LIMIT, "acme", BRAND_LIMIT)
        samples.append(time.perf_counter_ns() - began)
        if not admission.admitted:
            raise RuntimeError(f"{type(limiter).__name__} refused a call under limits no run reaches")
    return time.process_time() - cpu


def start_redis() -> tuple[RedisServer, str]:
    server = RedisServer()
    server.start()
    return server, server.url


def redis_limiter(url: str) -> Any:
    """qaqnuz-redis's limiter on `url`, with its defaults but a timeout no loaded machine trips."""
    import logging

    from qaqnuz_redis.limiter import RedisLimiter
    from qaqnuz_redis.settings import RedisSettings, check

    options, problems = check(RedisSettings(url=url, timeout="2s"), "[plugins.redis]")
    if options is None:
        raise SystemExit("\n".join(problems))
    return RedisLimiter(options, logging.getLogger("bench"))


async def measure(args: argparse.Namespace, folder: Path, redis_url: str | None) -> list[dict[str, Any]]:
    limiters = {
        "memory": MemoryLimiter(time.monotonic),
        "sqlite": SqliteLimiter(str(folder / "qaqnuz-limits.db"), time.monotonic),
    }
    if redis_url is not None:
        limiters["redis"] = redis_limiter(redis_url)
    samples: dict[str, list[int]] = {name: [] for name in limiters}
    cpu = dict.fromkeys(limiters, 0.0)
    for limiter in limiters.values():  # warm-up: the file created, caches filled
        await block(limiter, min(args.calls, 500), args.keys, 0, [])
    for r in range(args.rounds):
        order = list(limiters) if r % 2 == 0 else list(reversed(limiters))
        for name in order:
            print(f"  round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr)
            cpu[name] += await block(limiters[name], args.calls, args.keys, (r + 1) * args.calls, samples[name])
    for limiter in limiters.values():
        closer = getattr(limiter, "aclose", None)
        if closer is not None:
            await closer()
    rows = [{"limiter": name, **summarise(taken, cpu[name])} for name, taken in samples.items()]
    base = rows[0]["cpu_us"]
    for row in rows:
        row["cpu_ratio"] = row["cpu_us"] / base if base else None
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"rate-limit decisions: {args.rounds} interleaved rounds of {args.calls} per limiter, "
        f"{args.keys} keys of one brand",
        f"{'':10}{'p50 µs':>9}{'p99 µs':>9}{'CPU µs':>9}{'CPU vs memory':>15}",
    ]
    for row in rows:
        ratio = f"{row['cpu_ratio']:.1f}x" if row["cpu_ratio"] is not None else "-"
        lines.append(f"  {row['limiter']:8}{row['p50_us']:>9.1f}{row['p99_us']:>9.1f}{row['cpu_us']:>9.1f}{ratio:>15}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="decisions per limiter per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--keys", type=int, default=100, help="distinct keys the calls cycle through (default 100)")
    parser.add_argument("--redis-url", help="a Redis to measure on (default: a throwaway redis-server on loopback)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    with throwaway(args.redis_url, start_redis, "redis") as redis_url:
        with tempfile.TemporaryDirectory(prefix="qaqnuz-limiterbench-") as tmp:
            rows = anyio.run(measure, args, Path(tmp), redis_url)
    print(json.dumps(rows, indent=2) if args.json else render(rows, args))


if __name__ == "__main__":
    main()
