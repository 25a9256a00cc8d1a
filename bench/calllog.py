"""What the console's Calls page costs to read from the audit file, as the file grows.

    uv run python bench/calllog.py [--lines N] [--json]

Writes N call records with the server's own `AuditLog` (1 in 10 for brand globex, 1 in 1000 for tool
`rare`), then times one page (50 calls) of: the newest calls; a brand filter; a rare tool; a filter that
matches nothing (the page stops at its 32 MiB scan bound and hands back a cursor); and the audit chain check
the page shows, first on the whole file and then again with nothing new. A page reads backwards from the
end, so its cost follows how far back its matches are, not the file's size; only the first chain check
reads the whole file (the console does both in a worker thread, never on the serving loop). Prints wall
milliseconds; it asserts nothing about timings and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from qaqnuz.audit import AuditLog, ChainCheck, chain_key
from qaqnuz.calllog import CallQuery, read_calls

T0 = 1_800_000_000.0
KEY = chain_key(b"bench" * 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000, help="call records in the file (default 500000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog(path, KEY)
        batch = []
        for i in range(args.lines):
            batch.append({"time": T0 + i, "brand": "globex" if i % 10 == 0 else "acme", "key_id": "k1",
                          "role": "viewer", "tool": "rare" if i % 1000 == 0 else "echo", "step": "execution",
                          "outcome": "executed", "latency_ms": 1.2, "args_hash": "a" * 64})  # fmt: skip
            if len(batch) == 5000:
                log.write_many(batch)
                batch = []
        if batch:
            log.write_many(batch)
        log.close()
        results["file_mib"] = round(path.stat().st_size / 2**20, 1)
        for name, query in [("newest", CallQuery()), ("brand_globex", CallQuery(brand="globex")),
                            ("tool_rare", CallQuery(tool="rare")), ("no_match", CallQuery(tool="none"))]:  # fmt: skip
            started = time.perf_counter()
            read_calls(path, query)
            results[f"page_{name}_ms"] = round((time.perf_counter() - started) * 1000, 2)
        check = ChainCheck(path, KEY)
        for name in ("chain_first_ms", "chain_again_ms"):
            started = time.perf_counter()
            check.check()
            results[name] = round((time.perf_counter() - started) * 1000, 2)
    if args.json:
        print(json.dumps(results))
        return
    for name, value in results.items():
        print(f"{name:>22}: {value}")


if __name__ == "__main__":
    main()
