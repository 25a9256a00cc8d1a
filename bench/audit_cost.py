"""What the audit log costs per call: qaqnuz with no audit sink, with the `file` sink under `fsync = "batch"`
and under `fsync = "every"`, side by side with the bare `mcp` SDK server, in one interleaved run.

    uv run python bench/audit_cost.py [--calls N] [--rounds R] [--json]

Sequential tools/call over stdio with the plain pipe client of `bench/stdio.py` (2026-07-28 requests), for
two tools: `echo`, a read (one audit record per call), and `echo_write`, the same echo declared a write (a
write-ahead `intent` record before it runs, its outcome after). Each server is a real `qaqnuz-mcp` with full
governance; only `[plugins] audit` and `[audit] fsync` differ. Rounds rotate which server goes first.
Printed: calls/s, p50 latency and server CPU µs per call (user + system from /proc: the steadiest figure on a
shared machine), and each ratio to the same server without an audit sink and to the bare SDK. `every` waits
on the disk the audit file is on (here the temporary folder's). It asserts nothing and is not collected by
pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from run import BIN, CONFIG, HERE, MODERN, ROOT
from stdio import Peer, mint

from qaqnuz.testing import write_config

VARIANTS = {
    "none": "[plugins]\naudit = []\n",
    "batch": '[audit]\nfsync = "batch"\n',
    "every": '[audit]\nfsync = "every"\n',
}
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def call(peer: Peer, tool: str, i: int, governed: bool) -> None:
    params = {"name": tool, "arguments": {"text": f"message {i}"}, "_meta": META}
    result = peer.request("tools/call", params)
    data = result.get("structuredContent") or {}
    if governed:
        data = data.get("data") or {}
    if result.get("isError") or data.get("text") != f"message {i}":
        raise RuntimeError(f"{tool} did not echo: {result}")


def measure(peers: dict[str, Peer], tool: str, calls: int, rounds: int, warmup: int) -> dict[str, Any]:
    """Interleaved blocks of sequential calls; the bare SDK only has `echo`, so it always runs that."""
    names = list(peers)
    for name, peer in peers.items():
        for i in range(warmup):
            call(peer, "echo" if name == "bare" else tool, i, name != "bare")
    times: dict[str, list[int]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            peer = peers[name]
            before = peer.cpu()
            for i in range(per_round):
                t0 = time.perf_counter_ns()
                call(peer, "echo" if name == "bare" else tool, warmup + r * per_round + i, name != "bare")
                times[name].append(time.perf_counter_ns() - t0)
            cpu[name] += peer.cpu() - before
    out: dict[str, Any] = {"tool": tool, "calls": per_round * rounds}
    for name in names:
        samples = sorted(times[name])
        out[name] = {
            "calls_per_s": len(samples) / (sum(samples) / 1e9),
            "p50_us": statistics.median(samples) / 1000,
            "cpu_us": cpu[name] * 1e6 / len(samples),
        }
    return out


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="qaqnuz-auditbench-") as tmp:
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
        envs: dict[str, dict[str, str]] = {}
        for name, extra in VARIANTS.items():
            folder = Path(tmp) / name
            text = CONFIG.replace('type = "bench"\n', 'type = "bench"\nwrite_tool = true\n')
            exposed = "tools.echo = { exposable = true }"
            text = text.replace(exposed, exposed + "\ntools.echo_write = { exposable = true }")
            config = write_config(folder, text + "\n" + extra)
            key = anyio.run(mint, config)
            envs[name] = {**base_env, "QAQNUZ_CONFIG": str(config), "QAQNUZ_API_KEY": key,
                          "QAQNUZ_DISABLE_PLUGIN_AUTOLOAD": "1", "QAQNUZ_PLUGINS": "stdio,bench.bench_pack",
                          "PYTHONPATH": pythonpath}  # fmt: skip
        with (Path(tmp) / "stderr.log").open("w") as errlog:
            for tool in ("echo", "echo_write"):
                print(f"  {tool} ...", file=sys.stderr)
                peers = {"bare": Peer([sys.executable, str(HERE / "baseline_server.py")], base_env, errlog)}
                for name in VARIANTS:
                    peers[name] = Peer([str(BIN / "qaqnuz-mcp")], envs[name], errlog)
                try:
                    for peer in peers.values():
                        peer.open(MODERN)
                    results.append(measure(peers, tool, args.calls, args.rounds, args.warmup))
                finally:
                    for peer in peers.values():
                        peer.close()
    return results


def render(results: list[dict[str, Any]]) -> str:
    lines = ["sequential tools/call over stdio, 2026-07-28 (server CPU from /proc)",
             f"{'':26}{'calls/s':>9}{'p50 µs':>8}{'CPU µs':>8}{'CPU vs none':>13}{'CPU vs bare':>13}"]  # fmt: skip
    for r in results:
        none, bare = r["none"]["cpu_us"], r["bare"]["cpu_us"]
        for name in ("bare", *VARIANTS):
            s = r[name]
            label = f"{r['tool']} {'bare SDK (echo)' if name == 'bare' else name}"
            vs_none = f"{s['cpu_us'] / none:.2f}x" if name != "bare" else "-"
            lines.append(f"  {label:24}{s['calls_per_s']:>9.0f}{s['p50_us']:>8.0f}{s['cpu_us']:>8.0f}"
                         f"{vs_none:>13}{s['cpu_us'] / bare:>12.2f}x")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000, help="timed calls per server per tool (default 4000)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved blocks (default 8)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per server first (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    results = collect(args)
    print(json.dumps(results, indent=2) if args.json else render(results))


if __name__ == "__main__":
    main()
