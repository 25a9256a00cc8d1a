"""Per-call latency of qaqnuz against a bare `mcp` low-level Server serving the same echo tool.

    uv run python bench/run.py [--calls N] [--rounds R] [--json]

BASELINE is `bench/baseline_server.py`: one `echo` tool, no governance. QAQNUZ is the same tool from
`bench/bench_pack.py` served through the full governed path: a real minted API key checked against the
SQLite store on every request, the memory rate limiter, visibility, JSON Schema validation, the scope
policy, one hash-chained audit line and the Prometheus metrics per call.

Rows (a)-(d) are tools/call over the in-memory `mcp.Client` and over stdio subprocesses, in the legacy
handshake era (2025-11-25) and in the default mode (2026-07-28); then tools/list over the same
connections; then the governed path called directly, without MCP; then a diagnostic breakdown of the
steps inside it. Baseline and qaqnuz run in alternating blocks (A B, B A, ...) so drift on a shared
machine hits both sides alike. This is a tool for people: it asserts nothing about timings and is not
collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

import anyio
import baseline_server
import bench_pack
import mcp.types as mt
from mcp import Client, StdioServerParameters, stdio_client

from qaqnuz import envelope as env
from qaqnuz.kernel import Kernel
from qaqnuz.keys import hash_matches, parse_key
from qaqnuz.pipeline import args_digest, visibility
from qaqnuz.records import CallRequest
from qaqnuz.server import Binding
from qaqnuz.testing import start_kernel, write_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
LEGACY, MODERN = "2025-11-25", "2026-07-28"

CONFIG = """\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"
sync_interval = "1h"
last_used_flush = "1h"
log_level = "warning"

[plans.bench]
entitled = true
limits = { per_key = "1000000/60s", per_brand = "1000000/60s" }

[brands.acme]
plan = "bench"
roles = { viewer = ["echo.read"] }
tools.echo = { exposable = true }

[packs.bench]
type = "bench"
"""

Call = Callable[[int], Awaitable[Any]]


# -- statistics ------------------------------------------------------------------------------------------
def summary(samples_ns: list[int]) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    deciles = statistics.quantiles(us, n=10, method="inclusive")
    return {"median_us": statistics.median(us), "p90_us": deciles[8], "n": len(us)}


def row(section: str, label: str, base: list[int] | None, gov: list[int]) -> dict[str, Any]:
    b = summary(base) if base else None
    g = summary(gov)
    return {
        "section": section,
        "scenario": label,
        "baseline": b,
        "qaqnuz": g,
        "ratio": g["median_us"] / b["median_us"] if b else None,
        "overhead_us": g["median_us"] - b["median_us"] if b else None,
    }


async def timed(call: Call, count: int, out: list[int], start: int = 0) -> None:
    gc.collect()
    clock = time.perf_counter_ns
    for i in range(start, start + count):
        t0 = clock()
        await call(i)
        out.append(clock() - t0)


async def compare(base: Call, gov: Call, calls: int, rounds: int, warmup: int) -> tuple[list[int], list[int]]:
    """`calls` timed calls per side, in `rounds` blocks alternating which side goes first."""
    for i in range(warmup):
        await base(i)
        await gov(i)
    samples: dict[str, list[int]] = {"base": [], "gov": []}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        order = [("base", base), ("gov", gov)] if r % 2 == 0 else [("gov", gov), ("base", base)]
        for side, call in order:
            await timed(call, per_round, samples[side], start=r * per_round)
    return samples["base"], samples["gov"]


# -- the two servers -------------------------------------------------------------------------------------
def check_echo(result: mt.CallToolResult, text: str, governed: bool) -> None:
    """Not a timing check: make sure both sides answer the call, not an error path."""
    data = result.structured_content or {}
    if governed:
        data = data.get("data") or {}
    if result.is_error or data.get("text") != text:
        side = "qaqnuz" if governed else "baseline"
        raise RuntimeError(f"{side} did not echo: is_error={result.is_error} content={result.content!r}")


def echo_call(client: Client) -> Call:
    def call(i: int) -> Awaitable[mt.CallToolResult]:
        return client.call_tool("echo", {"text": f"message {i}"})

    return call


def list_call(client: Client) -> Call:
    def call(i: int) -> Awaitable[mt.ListToolsResult]:
        return client.list_tools()

    return call


async def sanity(base: Client, gov: Client, expected_version: str) -> None:
    for client, governed in ((base, False), (gov, True)):
        if client.protocol_version != expected_version:
            raise RuntimeError(f"negotiated {client.protocol_version}, expected {expected_version}")
        check_echo(await client.call_tool("echo", {"text": "hello"}), "hello", governed)
        listed = await client.list_tools()
        if [t.name for t in listed.tools] != ["echo"] or listed.tools[0].input_schema != bench_pack.ECHO_INPUT_SCHEMA:
            raise RuntimeError(f"unexpected tools/list answer: {listed.tools!r}")


@asynccontextmanager
async def memory_pair(kernel: Kernel, key: str, mode: str) -> AsyncIterator[tuple[Client, Client]]:
    binding = Binding(kernel, lambda ctx: key, transport="memory")
    try:
        async with (
            Client(baseline_server.server, mode=mode, cache=None) as base,
            Client(binding.server, mode=mode, cache=None) as gov,
        ):
            yield base, gov
    finally:
        binding.close()


@asynccontextmanager
async def stdio_pair(config: Path, key: str, mode: str, errlog: TextIO) -> AsyncIterator[tuple[Client, Client]]:
    base_params = StdioServerParameters(command=sys.executable, args=[str(HERE / "baseline_server.py")])
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    gov_params = StdioServerParameters(
        command=str(BIN / "qaqnuz-mcp"),
        args=[],
        env={
            "QAQNUZ_CONFIG": str(config),
            "QAQNUZ_API_KEY": key,
            "QAQNUZ_DISABLE_PLUGIN_AUTOLOAD": "1",
            "QAQNUZ_PLUGINS": "stdio,bench.bench_pack",
            "PYTHONPATH": pythonpath,
        },
    )
    async with AsyncExitStack() as stack:
        base = await stack.enter_async_context(Client(stdio_client(base_params, errlog=errlog), mode=mode, cache=None))
        gov = await stack.enter_async_context(Client(stdio_client(gov_params, errlog=errlog), mode=mode, cache=None))
        yield base, gov


# -- the direct path -------------------------------------------------------------------------------------
async def direct_rows(kernel: Kernel, key: str, calls: int, rounds: int, warmup: int) -> list[dict[str, Any]]:
    section = "governed path called directly (no MCP); baseline = the bare server's handler"
    pipeline = kernel.pipeline
    principal = await kernel.authenticate(key, transport="bench")
    if principal is None:
        raise RuntimeError("the minted key did not authenticate")
    params = [mt.CallToolRequestParams(name="echo", arguments={"text": f"message {i}"}) for i in range(calls + warmup)]

    def base_call(i: int) -> Awaitable[mt.CallToolResult]:
        return baseline_server.call_tool(None, params[i % len(params)])  # type: ignore[arg-type]

    def pipeline_call(i: int) -> Awaitable[mt.CallToolResult]:
        return pipeline.call_tool(principal, "echo", {"text": f"message {i}"}, transport="bench")

    async def auth_and_pipeline(i: int) -> mt.CallToolResult:  # what Binding._call_tool runs per call
        who = await kernel.authenticate(key, transport="bench")
        return await pipeline.call_tool(who, "echo", {"text": f"message {i}"}, transport="bench")  # type: ignore[arg-type]

    def auth_only(i: int) -> Awaitable[Any]:
        return kernel.authenticate(key, transport="bench")

    async def base_list(i: int) -> mt.ListToolsResult:
        return await baseline_server.list_tools(None, None)  # type: ignore[arg-type]

    async def gov_list(i: int) -> mt.ListToolsResult:  # what Binding._list_tools runs per call
        who = await kernel.authenticate(key, transport="bench")
        return mt.ListToolsResult(tools=pipeline.list_tools(who))  # type: ignore[arg-type]

    check_echo(await pipeline_call(0), "message 0", governed=True)
    rows = []
    for label, gov in (
        ("Pipeline.call_tool (principal given)", pipeline_call),
        ("authenticate + Pipeline.call_tool", auth_and_pipeline),
    ):
        b, g = await compare(base_call, gov, calls, rounds, warmup)
        rows.append(row(section, label, b, g))
    b, g = await compare(base_list, gov_list, calls, rounds, warmup)
    rows.append(row(section, "authenticate + Pipeline.list_tools", b, g))
    g = []
    await timed(auth_only, calls, g)
    rows.append(row(section, "Kernel.authenticate alone", None, g))
    return rows


async def step_rows(kernel: Kernel, key: str, calls: int) -> list[dict[str, Any]]:
    """Diagnostic: each step of the governed call timed alone (internal APIs; sums roughly to the above)."""
    section = "steps inside one governed tools/call (diagnostic, no baseline)"
    runtime, entry = kernel.runtime, kernel.registry.snapshot.tools["echo"]
    principal = await kernel.authenticate(key, transport="bench")
    assert principal is not None
    prefix = runtime.config.server.key_prefix
    args = {"text": "message"}
    digest = args_digest(args)
    key_limit, brand_limit = runtime.limits(principal.brand)
    settings = runtime.tool_settings(principal.brand, "echo")
    brand_cfg = runtime.config.brands[principal.brand]
    request = CallRequest(
        principal, entry.tool, args, digest, settings, frozenset(brand_cfg.roles.get(principal.role, ()))
    )
    policy = runtime.policies[0]
    data = {"text": "message"}
    _, success = env.success(data, entry.tool.max_result_bytes)
    record = kernel.store.get_key(principal.key_id)
    assert record is not None

    async def handler_with_timeout() -> Any:
        with anyio.fail_after(entry.tool.timeout_s):
            return await entry.tool.handler(args)

    def make_request() -> CallRequest:
        return CallRequest(
            principal, entry.tool, args, digest, settings, frozenset(brand_cfg.roles.get(principal.role, ()))
        )

    async def run(fn: Callable[[], Any]) -> Any:
        result = fn()
        if hasattr(result, "__await__"):
            result = await result
        return result

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("auth: parse_key (format + CRC)", lambda: parse_key(key, prefix)),
        ("auth: Store.get_key (SQLite read)", lambda: kernel.store.get_key(principal.key_id)),
        ("auth: HMAC compare", lambda: hash_matches(kernel.secret, key, record.hash)),
        ("args_digest (SHA-256 of canonical JSON)", lambda: args_digest(args)),
        (
            "rate limit: MemoryLimiter.admit",
            lambda: runtime.limiter.admit(principal.key_id, key_limit, "acme", brand_limit),
        ),
        ("visibility: cached per-key lookup", lambda: entry.tool.name in kernel.pipeline._visible(principal)[0]),
        ("visibility(): one uncached evaluation", lambda: visibility(runtime, entry, principal)),
        ("JSON Schema: iter_errors (compiled)", lambda: sorted(entry.validator.iter_errors(args), key=str)),
        ("Runtime.tool_settings", lambda: runtime.tool_settings(principal.brand, "echo")),
        ("CallRequest + role ceiling frozenset", lambda: make_request()),
        ("policy: ScopePolicy.decide", lambda: policy.decide(request)),
        ("tool handler (bare)", lambda: entry.tool.handler(args)),
        ("tool handler inside anyio.fail_after", lambda: handler_with_timeout()),
        ("envelope: success + to_builtins", lambda: env.to_builtins(env.success(data, entry.tool.max_result_bytes)[1])),
        ("Kernel.executed (usage counters)", lambda: kernel.executed(principal.brand)),
        ("Metrics.call", lambda: kernel.metrics.call("acme", "echo", "executed", "", 0.0001)),
        ("Kernel.record (one audit line)", lambda: kernel.record(brand="acme", key_id=principal.key_id, step="bench")),
        (
            "CallToolResult(...) construction",
            lambda: mt.CallToolResult(
                content=[mt.TextContent(type="text", text="{}")], structured_content=env.to_builtins(success)
            ),
        ),
    ]
    rows = []
    for label, fn in steps:
        try:
            for _ in range(50):
                await run(fn)
        except Exception as exc:  # an internal API moved: skip the diagnostic, keep the bench running
            sys.stderr.write(f"  step {label!r} skipped ({type(exc).__name__}: {exc})\n")
            continue
        samples: list[int] = []

        async def call(i: int, fn: Callable[[], Any] = fn) -> None:
            await run(fn)

        await timed(call, calls, samples)
        rows.append(row(section, label, None, samples))
    return rows


# -- main ------------------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> dict[str, Any]:
    if baseline_server.ECHO_INPUT_SCHEMA != bench_pack.ECHO_INPUT_SCHEMA:
        raise RuntimeError("baseline and qaqnuz echo schemas differ; keep them equal")
    calls, rounds, warmup = args.calls, args.rounds, args.warmup
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qaqnuz-bench-") as tmp:
        folder = Path(tmp)
        errlog = (folder / "stderr.log").open("w")
        try:
            # In-process kernel for the in-memory and direct rows.
            kernel = await start_kernel(write_config(folder / "inproc", CONFIG), plugins=[bench_pack])
            key, _ = await kernel.keys.mint(brand="acme", scopes=[bench_pack.SCOPE], name="bench")
            # Its own folder (store, secret, audit file) for the stdio subprocesses; mint the key there.
            stdio_config = write_config(folder / "stdio", CONFIG)
            minting = await start_kernel(stdio_config, plugins=[bench_pack])
            stdio_key, _ = minting.mint_key(brand="acme", scopes=[bench_pack.SCOPE], name="bench-stdio")
            await minting.aclose()

            list_rows: list[dict[str, Any]] = []
            scenarios: list[tuple[str, str, Callable[[], Any]]] = [
                ("(a) in-memory, legacy", LEGACY, lambda: memory_pair(kernel, key, "legacy")),
                ("(b) in-memory, 2026-07-28", MODERN, lambda: memory_pair(kernel, key, "auto")),
                ("(c) stdio, legacy", LEGACY, lambda: stdio_pair(stdio_config, stdio_key, "legacy", errlog)),
                ("(d) stdio, 2026-07-28", MODERN, lambda: stdio_pair(stdio_config, stdio_key, "auto", errlog)),
            ]
            for label, expected, make in scenarios:
                progress(args, f"{label} ...")
                async with make() as (base, gov):
                    await sanity(base, gov, expected)
                    b, g = await compare(echo_call(base), echo_call(gov), calls, rounds, warmup)
                    rows.append(row("tools/call over MCP", label, b, g))
                    b, g = await compare(list_call(base), list_call(gov), calls // 2, rounds, warmup)
                    list_rows.append(row("tools/list over MCP", label, b, g))
            rows.extend(list_rows)
            progress(args, "direct ...")
            rows.extend(await direct_rows(kernel, key, calls, rounds, warmup))
            progress(args, "steps ...")
            rows.extend(await step_rows(kernel, key, min(calls, 2000)))
            await kernel.aclose()
        except BaseException:
            errlog.flush()
            sys.stderr.write((folder / "stderr.log").read_text())
            raise
        finally:
            errlog.close()
    return {
        "meta": {
            "python": platform.python_version(),
            "mcp": version("mcp"),
            "qaqnuz": version("qaqnuz"),
            "cpus": os.cpu_count(),
            "calls": calls,
            "rounds": rounds,
            "warmup": warmup,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "date": time.strftime("%Y-%m-%d"),
        },
        "rows": rows,
    }


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        sys.stderr.write(f"  {text}\n")


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"qaqnuz {meta['qaqnuz']} vs bare mcp {meta['mcp']} low-level Server; Python {meta['python']}, "
        f"{meta['cpus']} CPUs, {meta['date']}",
        f"{meta['calls']} timed calls per side per tools/call row (tools/list: half), {meta['rounds']} alternating "
        f"rounds, {meta['warmup']} warm-up calls; wall time {meta['wall_seconds']} s",
        "per-call latency in microseconds; ratio = qaqnuz median / baseline median; overhead = difference of medians",
    ]
    header = f"{'':42} {'baseline':>17} {'qaqnuz':>17} {'ratio':>7} {'overhead':>9}"
    sub = f"{'':42} {'median':>8} {'p90':>8} {'median':>8} {'p90':>8}"
    section = None
    for r in report["rows"]:
        if r["section"] != section:
            section = r["section"]
            lines += ["", section, header, sub]
        b, g = r["baseline"], r["qaqnuz"]
        base = f"{b['median_us']:8.1f} {b['p90_us']:8.1f}" if b else f"{'-':>8} {'-':>8}"
        ratio = f"{r['ratio']:6.2f}x" if r["ratio"] is not None else f"{'-':>7}"
        over = f"{r['overhead_us']:+9.1f}" if r["overhead_us"] is not None else f"{'-':>9}"
        lines.append(f"  {r['scenario']:40} {base} {g['median_us']:8.1f} {g['p90_us']:8.1f} {ratio} {over}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000, help="timed calls per side per row (default 3000)")
    p.add_argument("--rounds", type=int, default=10, help="alternating baseline/qaqnuz blocks (default 10)")
    p.add_argument("--warmup", type=int, default=100, help="untimed calls per side before each row (default 100)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = p.parse_args(argv)
    if args.calls < 20 or args.rounds < 1 or args.warmup < 1:
        p.error("--calls must be at least 20, --rounds and --warmup at least 1")
    return args


def cli() -> None:
    args = parse_args()
    report = anyio.run(main, args)
    print(json.dumps(report, indent=2) if args.json else render(report))


if __name__ == "__main__":
    cli()
