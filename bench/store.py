"""What a key lookup costs, per store, cached and uncached, side by side in one interleaved run.

    uv run python bench/store.py [--lookups N] [--rounds R] [--keys K] [--postgres-url URL] [--json]

Every request looks its key up (`Store.get_key`) before anything else, so this is the store's share of a
call. Each store holds K keys; R rounds of N lookups, the stores taking turns. "cached" is the hot path's
case: the key was looked up before and nothing changed since. "uncached" empties the store's key cache
before every lookup, as after a revocation elsewhere: one indexed read. `sqlite` is the embedded store on a
fresh file; `postgresql` (qaqnuz-postgres) a throwaway PostgreSQL cluster on loopback (or `--postgres-url`,
whose database must be empty). Printed per row: median and p99 wall µs per lookup and this process's CPU µs
per lookup (the database server's own work is not in it). It asserts nothing about timings and is not
collected by pytest.
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

from qaqnuz.builtin.sqlite_store import SqliteStore
from qaqnuz.store import KeyRecord
from qaqnuz.testservers import PostgresServer

NOW = time.time()


def record(i: int) -> KeyRecord:
    return KeyRecord(
        key_id=f"k{i:06d}",
        name=f"bench-{i}",
        brand="acme",
        role="viewer",
        scopes=("orders.read",),
        hash="h" * 64,
        created_at=NOW,
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
    )


def start_postgres() -> tuple[PostgresServer, str]:
    server = PostgresServer()
    server.start()
    return server, server.create_database("bench")


def drop_cache(store: Any) -> None:
    """Forget every cached key, as a change made elsewhere makes the store do."""
    if isinstance(store, SqliteStore):
        store._keys.clear()
    else:
        store.cache.clear()


async def block(store: Any, lookups: int, keys: int, start: int, cached: bool, samples: list[int]) -> float:
    if cached:  # an uncached block left the cache nearly empty: fill it first, untimed
        for i in range(keys):
            await store.get_key(f"k{i:06d}")
    cpu = time.process_time()
    for i in range(start, start + lookups):
        key_id = f"k{i % keys:06d}"
        if not cached:
            drop_cache(store)
        began = time.perf_counter_ns()
        found = await store.get_key(key_id)
        samples.append(time.perf_counter_ns() - began)
        if found is None:
            raise RuntimeError(f"{store!r} lost key {key_id}")
    return time.process_time() - cpu


async def measure(args: argparse.Namespace, folder: Path, postgres_url: str | None) -> list[dict[str, Any]]:
    stores: dict[str, Any] = {"sqlite": SqliteStore(folder / "qaqnuz.db")}
    if postgres_url is not None:
        from qaqnuz_postgres.store import PostgresStore

        stores["postgresql"] = PostgresStore(postgres_url)
    for store in stores.values():
        for i in range(args.keys):
            await store.insert_key(record(i), max_active=None, now=NOW)
        await block(store, args.keys, args.keys, 0, True, [])  # warm-up: connections open, caches filled
    cases = [(name, cached) for name in stores for cached in (True, False)]
    samples: dict[tuple[str, bool], list[int]] = {case: [] for case in cases}
    cpu = dict.fromkeys(cases, 0.0)
    for r in range(args.rounds):
        for name, cached in cases if r % 2 == 0 else list(reversed(cases)):
            print(f"  round {r + 1}/{args.rounds}: {name} {'cached' if cached else 'uncached'} ...", file=sys.stderr)
            start = (r + 1) * args.lookups
            cpu[(name, cached)] += await block(stores[name], args.lookups, args.keys, start, cached,
                                               samples[(name, cached)])  # fmt: skip
    for store in stores.values():
        await store.aclose()
    return [
        {"store": name, "case": "cached" if cached else "uncached", **summarise(taken, cpu[(name, cached)])}
        for (name, cached), taken in samples.items()
    ]


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"key lookups: {args.rounds} interleaved rounds of {args.lookups} per store and case, {args.keys} keys",
        f"{'':24}{'p50 µs':>9}{'p99 µs':>9}{'CPU µs':>9}",
    ]
    for row in rows:
        label = f"{row['store']} {row['case']}"
        lines.append(f"  {label:22}{row['p50_us']:>9.1f}{row['p99_us']:>9.1f}{row['cpu_us']:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=2000, help="lookups per store and case per round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--keys", type=int, default=100, help="keys in each store (default 100)")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    with throwaway(args.postgres_url, start_postgres, "postgresql") as url:
        with tempfile.TemporaryDirectory(prefix="qaqnuz-storebench-") as tmp:
            rows = anyio.run(measure, args, Path(tmp), url)
    print(json.dumps(rows, indent=2) if args.json else render(rows, args))


if __name__ == "__main__":
    main()
