"""Sequential tools/call over stdio: qaqnuz against the bare `mcp` SDK server, with a client that is not the
bottleneck.

    uv run python bench/stdio.py [--calls N] [--rounds R] [--json]

`run.py` drives stdio through the `mcp` Python client, whose own stdio streams cost more per call than either
server; here the client is a plain blocking pipe: write one JSON-RPC line, read lines until the reply with
the same id. BASELINE is `bench/baseline_server.py` as a subprocess; QAQNUZ is the real `qaqnuz-mcp`
console script with the bench pack and full governance (the key checked on every request, the memory rate
limiter, visibility, JSON Schema validation, the scope policy, one hash-chained audit line and the
Prometheus metrics per call). Both eras: a 2025-11-25 session (`initialize`, then plain requests) and
2026-07-28 (`server/discover`, then requests with the per-request `_meta`). Rounds alternate which server
goes first. Printed: calls/s, p50/p99 latency, server CPU µs per call (user + system from /proc), and the
paired ratios qaqnuz/bare. It asserts nothing about timings and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import anyio
import bench_pack
from run import BIN, CONFIG, HERE, LEGACY, MODERN, ROOT, bench_kernel, cpu_probe

from qaqnuz.testing import write_config

META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


class Peer:
    """One server subprocess and a blocking line client on its pipes."""

    def __init__(self, argv: list[str], env: dict[str, str], errlog: TextIO) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self.cpu = cpu_probe(self.proc.pid)
        self._next = 0

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next += 1
        self._in.write(json.dumps({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params}).encode())
        self._in.write(b"\n")
        self._in.flush()
        while True:
            line = self._out.readline()
            if not line:
                raise RuntimeError("the server closed stdout")
            message = json.loads(line)
            if message.get("id") == self._next:
                if "result" not in message:
                    raise RuntimeError(f"{method} failed: {message}")
                return dict(message["result"])

    def open(self, era: str) -> None:
        if era == LEGACY:
            hello = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
            self.request("initialize", hello)
            self._in.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            self._in.flush()
        else:
            self.request("server/discover", {"_meta": META})

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=20)


def echo(peer: Peer, era: str, i: int, governed: bool) -> None:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": f"message {i}"}}
    if era == MODERN:
        params["_meta"] = META
    result = peer.request("tools/call", params)
    data = result.get("structuredContent") or {}
    if governed:
        data = data.get("data") or {}
    if result.get("isError") or data.get("text") != f"message {i}":
        raise RuntimeError(f"{'qaqnuz' if governed else 'baseline'} did not echo: {result}")


def block(peer: Peer, era: str, governed: bool, calls: int, start: int, times: list[int]) -> float:
    """`calls` sequential calls; appends each latency (ns); returns the server's CPU seconds spent."""
    cpu = peer.cpu()
    for i in range(start, start + calls):
        t0 = time.perf_counter_ns()
        echo(peer, era, i, governed)
        times.append(time.perf_counter_ns() - t0)
    return peer.cpu() - cpu


def measure(era: str, base: Peer, gov: Peer, calls: int, rounds: int, warmup: int) -> dict[str, Any]:
    for peer in (base, gov):
        peer.open(era)
    for i in range(warmup):
        echo(base, era, i, False)
        echo(gov, era, i, True)
    times: dict[str, list[int]] = {"base": [], "gov": []}
    cpu = {"base": 0.0, "gov": 0.0}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        order = [("base", base, False), ("gov", gov, True)]
        for side, peer, governed in order if r % 2 == 0 else order[::-1]:
            cpu[side] += block(peer, era, governed, per_round, warmup + r * per_round, times[side])
    out: dict[str, Any] = {"era": era, "calls": per_round * rounds}
    for side in ("base", "gov"):
        samples = sorted(times[side])
        out[side] = {
            "calls_per_s": len(samples) / (sum(samples) / 1e9),
            "p50_us": statistics.median(samples) / 1000,
            "p99_us": samples[int(len(samples) * 0.99) - 1] / 1000,
            "cpu_us": cpu[side] * 1e6 / len(samples),
        }
    out["speedup"] = out["gov"]["calls_per_s"] / out["base"]["calls_per_s"]
    out["cpu_ratio"] = out["gov"]["cpu_us"] / out["base"]["cpu_us"] if out["base"]["cpu_us"] else None
    return out


async def mint(config: Path) -> str:
    kernel = bench_kernel(config, [bench_pack])
    async with kernel.running(background=False):
        key, _ = await kernel.keys.mint(brand="acme", scopes=[bench_pack.SCOPE], name="bench-stdio")
    return key


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="qaqnuz-stdiobench-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, CONFIG)
        key = anyio.run(mint, config)
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
        gov_env = {
            **base_env,
            "QAQNUZ_CONFIG": str(config),
            "QAQNUZ_API_KEY": key,
            "QAQNUZ_DISABLE_PLUGIN_AUTOLOAD": "1",
            "QAQNUZ_PLUGINS": "stdio,bench.bench_pack",
            "PYTHONPATH": pythonpath,
        }
        results = []
        with (folder / "stderr.log").open("w") as errlog:
            for era in (LEGACY, MODERN):
                print(f"  {era} ...", file=sys.stderr)
                base = Peer([sys.executable, str(HERE / "baseline_server.py")], base_env, errlog)
                gov = Peer([str(BIN / "qaqnuz-mcp")], gov_env, errlog)
                try:
                    results.append(measure(era, base, gov, args.calls, args.rounds, args.warmup))
                finally:
                    base.close()
                    gov.close()
        return results


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "sequential tools/call over stdio (a blocking pipe client; server CPU from /proc)",
        f"{'':24}{'calls/s':>10}{'p50 µs':>9}{'p99 µs':>9}{'CPU µs':>9}",
    ]
    for r in results:
        for side, name in (("base", "bare SDK"), ("gov", "qaqnuz")):
            s = r[side]
            label = f"{r['era']} {name}"
            lines.append(
                f"  {label:22}{s['calls_per_s']:>10.0f}{s['p50_us']:>9.0f}{s['p99_us']:>9.0f}{s['cpu_us']:>9.0f}"
            )
        cpu = f"{r['cpu_ratio']:.2f}x" if r["cpu_ratio"] is not None else "-"
        lines.append(f"  {r['era']} qaqnuz/bare: calls/s {r['speedup']:.2f}x, CPU per call {cpu}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per server per era (default 5000)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating blocks (default 10)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per server first (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    results = collect(args)
    print(json.dumps(results, indent=2) if args.json else render(results))


if __name__ == "__main__":
    main()
