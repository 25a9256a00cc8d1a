"""What the micro-benches (`limiter.py`, `store.py`) share: per-operation figures from timed samples, and a
throwaway server to measure against when the user names none."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qaqnuz.testservers import ServerMissing


def summarise(samples_ns: list[int], cpu_seconds: float) -> dict[str, Any]:
    """Median and p99 wall µs per operation, and CPU µs per operation."""
    taken = sorted(samples_ns)
    return {
        "count": len(taken),
        "p50_us": statistics.median(taken) / 1000,
        "p99_us": taken[int(len(taken) * 0.99) - 1] / 1000,
        "cpu_us": cpu_seconds * 1e6 / len(taken),
    }


@contextmanager
def throwaway(given: str | None, start: Callable[[], tuple[Any, str]], what: str) -> Iterator[str | None]:
    """`given` if the user named a server; else one `start()` makes (server, address), closed after; None
    (with a note) when this machine has no such server."""
    if given is not None:
        yield given
        return
    try:
        server, address = start()
    except ServerMissing as exc:
        print(f"  no {what} rows: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield address
    finally:
        server.close()
