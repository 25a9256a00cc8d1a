"""Per-call latency of qaqnuz against a bare `mcp` low-level Server serving the same echo tool, and the
start-up time of the `qaqnuz` command.

    uv run python bench/run.py [--calls N] [--rounds R] [--only calls|cli] [--json]

BASELINE is `bench/baseline_server.py`: one `echo` tool, no governance. QAQNUZ is the same tool from
`bench/bench_pack.py` served through the full governed path: a real minted API key checked against the
SQLite store on every request, the memory rate limiter, visibility, JSON Schema validation, the scope
policy, one hash-chained audit line and the Prometheus metrics per call.

Rows (a)-(d) are tools/call over the in-memory `mcp.Client` and over stdio subprocesses, in the legacy
handshake era (2025-11-25) and in the default mode (2026-07-28); then tools/list over the same
connections; then the governed path called directly, without MCP (with the binding's conversion to wire
types, as the bare handler returns wire types too); then a diagnostic breakdown of the steps inside it.
Baseline and qaqnuz run in alternating blocks (A B, B A, ...) so drift on a shared machine hits both
sides alike. Last, the wall-clock time of `qaqnuz keys list` (and, for context, of the interpreter, of
`import qaqnuz` and of `qaqnuz --version`) run as subprocesses through the environment's console script.
This is a tool for people: it asserts nothing about timings and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
from qaqnuz.callcontext import CallContext
from qaqnuz.config import load_config
from qaqnuz.kernel import Kernel
from qaqnuz.keys import hash_matches, parse_key
from qaqnuz.pipeline import args_digest, visibility
from qaqnuz.plugins import Plugins
from qaqnuz.records import Caller, CallRequest, Host
from qaqnuz.server import Binding, wire_result, wire_tools
from qaqnuz.testing import write_config

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

#: The config `qaqnuz keys list` reads in the start-up figure: two brands, no tool packs (an admin
#: command opens only the store and the audit sinks). `CLI_KEYS` keys are minted into it first.
CLI_CONFIG = """\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"

[plans.standard]
entitled = true

[brands.acme]
plan = "standard"
roles = { viewer = ["orders.read"], operator = ["orders.read", "orders.write"] }

[brands.globex]
plan = "standard"
roles = { viewer = ["orders.read"] }
"""
CLI_KEYS = [
    ("acme", "viewer", ["orders.read"], "support-bot"),
    ("acme", "viewer", ["orders.read"], "reporting"),
    ("acme", "operator", ["orders.read", "orders.write"], "fulfilment-agent"),
    ("globex", "viewer", ["orders.read"], "assistant"),
    ("globex", "viewer", ["orders.read"], "nightly-export"),
]
#: Stated by the project for `qaqnuz keys list` on the bench machine; printed next to the figure, never asserted.
CLI_TARGET_MS = 250

Call = Callable[[int], Awaitable[Any]]
#: Cumulative CPU seconds (user + system) of one server process, read from Linux /proc.
Probe = Callable[[], float]


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


async def timed(call: Call, count: int, out: list[int], start: int = 0, probe: Probe | None = None) -> float:
    """Time `count` calls one by one into `out`; returns the CPU seconds `probe` saw meanwhile (0 without)."""
    gc.collect()
    clock = time.perf_counter_ns
    cpu0 = probe() if probe else 0.0
    for i in range(start, start + count):
        t0 = clock()
        await call(i)
        out.append(clock() - t0)
    return (probe() - cpu0) if probe else 0.0


async def compare(
    base: Call,
    gov: Call,
    calls: int,
    rounds: int,
    warmup: int,
    probes: tuple[Probe, Probe] | None = None,
    cpu_out: dict[str, float] | None = None,
) -> tuple[list[int], list[int]]:
    """`calls` timed calls per side, in `rounds` blocks alternating which side goes first.

    With `probes` (one per side's server process), `cpu_out` receives each side's server CPU microseconds
    per timed call: only the timed blocks count, and the other side's server is idle meanwhile."""
    for i in range(warmup):
        await base(i)
        await gov(i)
    samples: dict[str, list[int]] = {"base": [], "gov": []}
    cpu = {"base": 0.0, "gov": 0.0}
    probe = dict(zip(("base", "gov"), probes, strict=True)) if probes else {}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        order = [("base", base), ("gov", gov)] if r % 2 == 0 else [("gov", gov), ("base", base)]
        for side, call in order:
            cpu[side] += await timed(call, per_round, samples[side], start=r * per_round, probe=probe.get(side))
    if probes and cpu_out is not None:
        cpu_out.update({side: cpu[side] * 1e6 / len(samples[side]) for side in cpu})
    return samples["base"], samples["gov"]


def cpu_row(label: str, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "scenario": label,
        "baseline_us": cpu["base"],
        "qaqnuz_us": cpu["gov"],
        "ratio": cpu["gov"] / cpu["base"] if cpu["base"] else None,
        "overhead_us": cpu["gov"] - cpu["base"],
    }


# -- server processes (Linux /proc) ----------------------------------------------------------------------
def child_pids() -> set[int]:
    """This process's live children, from /proc (empty where there is no /proc)."""
    me, found = os.getpid(), set[int]()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None and fields[1] == str(me) and fields[0] != "Z":
                found.add(int(entry))
    return found


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_probe(pid: int) -> Probe:
    """Cumulative user + system CPU seconds of `pid`, all its threads (those that ended included)."""
    tick = os.sysconf("SC_CLK_TCK")

    def probe() -> float:
        fields = _proc_stat(pid)
        if fields is None:
            raise RuntimeError(f"server process {pid} is gone")
        return (int(fields[11]) + int(fields[12])) / tick

    return probe


# -- the two servers -------------------------------------------------------------------------------------
def bench_kernel(config: Path, plugins: Iterable[object] = ()) -> Kernel:
    """A kernel on the built-ins plus `plugins`, no autoloading (start it with `kernel.running()`)."""
    return Kernel(load_config(config), plugins=Plugins(autoload=False, explicit=list(plugins)))


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


Pair = tuple[Client, Client, tuple[Probe, Probe] | None]


@asynccontextmanager
async def memory_pair(host: Host, key: str, mode: str) -> AsyncIterator[Pair]:
    binding = Binding(host, lambda ctx: key, transport="memory")
    try:
        async with (
            Client(baseline_server.server, mode=mode, cache=None) as base,
            Client(binding.server, mode=mode, cache=None) as gov,
        ):
            yield base, gov, None  # both servers run in this process: no CPU of their own to read
    finally:
        binding.close()


@asynccontextmanager
async def stdio_pair(config: Path, key: str, mode: str, errlog: TextIO) -> AsyncIterator[Pair]:
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
        before = child_pids()
        base = await stack.enter_async_context(Client(stdio_client(base_params, errlog=errlog), mode=mode, cache=None))
        base_pids = child_pids() - before
        gov = await stack.enter_async_context(Client(stdio_client(gov_params, errlog=errlog), mode=mode, cache=None))
        gov_pids = child_pids() - before - base_pids
        probes = None
        if len(base_pids) == 1 and len(gov_pids) == 1:  # else (no /proc, or unclear): no CPU figures
            probes = (cpu_probe(base_pids.pop()), cpu_probe(gov_pids.pop()))
        yield base, gov, probes


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

    def outcome_only(i: int) -> Awaitable[env.Outcome]:
        return pipeline.call_tool(principal, "echo", {"text": f"message {i}"}, transport="bench")

    async def pipeline_call(i: int) -> mt.CallToolResult:  # the baseline returns wire types: so do we
        return wire_result(await pipeline.call_tool(principal, "echo", {"text": f"message {i}"}, transport="bench"))

    async def auth_and_pipeline(i: int) -> mt.CallToolResult:  # what Binding._call_tool runs per call
        who = await kernel.authenticate(key, transport="bench")
        return wire_result(await pipeline.call_tool(who, "echo", {"text": f"message {i}"}, transport="bench"))  # type: ignore[arg-type]

    def auth_only(i: int) -> Awaitable[Any]:
        return kernel.authenticate(key, transport="bench")

    async def base_list(i: int) -> mt.ListToolsResult:
        return await baseline_server.list_tools(None, None)  # type: ignore[arg-type]

    async def gov_list(i: int) -> mt.ListToolsResult:  # what Binding._list_tools runs per call
        who = await kernel.authenticate(key, transport="bench")
        return mt.ListToolsResult(tools=wire_tools(pipeline.list_tools(who)))  # type: ignore[arg-type]

    check_echo(await pipeline_call(0), "message 0", governed=True)
    rows = []
    for label, gov in (
        ("Pipeline.call_tool + wire_result", pipeline_call),
        ("authenticate + call_tool + wire_result", auth_and_pipeline),
    ):
        b, g = await compare(base_call, gov, calls, rounds, warmup)
        rows.append(row(section, label, b, g))
    b, g = await compare(base_list, gov_list, calls, rounds, warmup)
    rows.append(row(section, "authenticate + list_tools + wire_tools", b, g))
    for label, alone in (
        ("Pipeline.call_tool alone (domain Outcome)", outcome_only),
        ("Kernel.authenticate alone", auth_only),
    ):
        g = []
        await timed(alone, calls, g)
        rows.append(row(section, label, None, g))
    return rows


async def step_rows(kernel: Kernel, key: str, calls: int) -> list[dict[str, Any]]:
    """Diagnostic: each step of the governed call timed alone (internal APIs; sums roughly to the above)."""
    section = "steps inside one governed tools/call (diagnostic, no baseline)"
    runtime, snapshot = kernel.runtime, kernel.registry.snapshot
    entry = snapshot.tools["echo"]
    principal = await kernel.authenticate(key, transport="bench")
    assert principal is not None
    prefix = runtime.config.server.key_prefix
    args = {"text": "message"}
    digest = args_digest(args)
    key_limit, brand_limit = runtime.limits(principal.brand)
    settings = runtime.tool_settings(principal.brand, "echo")
    request = CallRequest(
        principal, entry.tool, args, digest, settings, runtime.ceiling(principal.brand, principal.role)
    )
    policy = runtime.policies[0]
    data = {"text": "message"}
    text, success = env.success(data, entry.tool.max_result_bytes)
    outcome = env.Outcome("execution", "executed", success, text)
    record = await kernel.store.get_key(principal.key_id)
    assert record is not None

    async def handler_with_timeout() -> Any:
        with anyio.fail_after(entry.tool.timeout_s):
            return await entry.tool.handler(args)

    def make_request() -> CallRequest:
        return CallRequest(
            principal, entry.tool, args, digest, settings, runtime.ceiling(principal.brand, principal.role)
        )

    def call_context() -> None:
        CallContext._deactivate(CallContext(Caller.of(principal), None)._activate())

    def audit_line() -> None:  # the fields the pipeline's own audit line carries
        kernel.sink.record(
            brand=principal.brand,
            key_id=principal.key_id,
            role=principal.role,
            tool="echo",
            args_hash=digest,
            step="execution",
            outcome="executed",
            error_class=None,
            latency_ms=0.05,
            approval_id=None,
            incident_id=None,
            transport="bench",
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
        (
            "visibility: cached per-key lookup",
            lambda: entry.tool.name in kernel.pipeline.visible(principal, runtime, snapshot).names,
        ),
        ("visibility(): one uncached evaluation", lambda: visibility(runtime, snapshot, entry, principal)),
        ("JSON Schema: ArgumentsValidator.problem (compiled)", lambda: entry.validator.problem(args)),
        ("Runtime.tool_settings", lambda: runtime.tool_settings(principal.brand, "echo")),
        ("CallRequest + Runtime.ceiling", make_request),
        ("policy: ScopePolicy.decide", lambda: policy.decide(request)),
        ("CallContext activate + reset", call_context),
        ("tool handler (bare)", lambda: entry.tool.handler(args)),
        ("tool handler inside anyio.fail_after", handler_with_timeout),
        ("envelope: env.success (encode, size)", lambda: env.success(data, entry.tool.max_result_bytes)),
        ("Bookkeeper.executed (usage counters)", lambda: kernel.sink.executed(principal.brand)),
        ("Metrics.call", lambda: kernel.metrics.call("acme", "echo", "executed", "", 0.0001)),
        ("Bookkeeper.record (one audit line)", audit_line),
        ("wire_result (Outcome -> CallToolResult)", lambda: wire_result(outcome)),
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


async def measure_calls(
    args: argparse.Namespace, folder: Path, server_cpu: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if baseline_server.ECHO_INPUT_SCHEMA != bench_pack.ECHO_INPUT_SCHEMA:
        raise RuntimeError("baseline and qaqnuz echo schemas differ; keep them equal")
    calls, rounds, warmup = args.calls, args.rounds, args.warmup
    rows: list[dict[str, Any]] = []
    errlog = (folder / "stderr.log").open("w")
    try:
        # Its own folder (store, secret, audit file) for the stdio subprocesses; mint the key there.
        stdio_config = write_config(folder / "stdio", CONFIG)
        minting = bench_kernel(stdio_config, [bench_pack])
        async with minting.running(background=False):
            stdio_key, _ = await minting.keys.mint(brand="acme", scopes=[bench_pack.SCOPE], name="bench-stdio")
        # In-process kernel for the in-memory and direct rows.
        kernel = bench_kernel(write_config(folder / "inproc", CONFIG), [bench_pack])
        async with kernel.running(background=False) as host:
            key, _ = await kernel.keys.mint(brand="acme", scopes=[bench_pack.SCOPE], name="bench")
            list_rows: list[dict[str, Any]] = []
            call_cpu: list[dict[str, Any]] = []
            list_cpu: list[dict[str, Any]] = []
            scenarios: list[tuple[str, str, Callable[[], Any]]] = [
                ("(a) in-memory, legacy", LEGACY, lambda: memory_pair(host, key, "legacy")),
                ("(b) in-memory, 2026-07-28", MODERN, lambda: memory_pair(host, key, "auto")),
                ("(c) stdio, legacy", LEGACY, lambda: stdio_pair(stdio_config, stdio_key, "legacy", errlog)),
                ("(d) stdio, 2026-07-28", MODERN, lambda: stdio_pair(stdio_config, stdio_key, "auto", errlog)),
            ]
            for label, expected, make in scenarios:
                progress(args, f"{label} ...")
                async with make() as (base, gov, probes):
                    await sanity(base, gov, expected)
                    cpu: dict[str, float] = {}
                    b, g = await compare(echo_call(base), echo_call(gov), calls, rounds, warmup, probes, cpu)
                    rows.append(row("tools/call over MCP", label, b, g))
                    if cpu:
                        call_cpu.append(cpu_row(f"{label}: tools/call", cpu))
                    cpu = {}
                    b, g = await compare(list_call(base), list_call(gov), calls // 2, rounds, warmup, probes, cpu)
                    list_rows.append(row("tools/list over MCP", label, b, g))
                    if cpu:
                        list_cpu.append(cpu_row(f"{label}: tools/list", cpu))
            rows.extend(list_rows)
            server_cpu.extend(call_cpu + list_cpu)
            progress(args, "direct ...")
            rows.extend(await direct_rows(kernel, key, calls, rounds, warmup))
            progress(args, "steps ...")
            rows.extend(await step_rows(kernel, key, min(calls, 2000)))
    except BaseException:
        errlog.flush()
        sys.stderr.write((folder / "stderr.log").read_text())
        raise
    finally:
        errlog.close()
    return rows


# -- command start-up ------------------------------------------------------------------------------------
async def mint_cli_keys(config: Path) -> list[str]:
    """Mint `CLI_KEYS` into the store of `config`; returns their key ids."""
    kernel = bench_kernel(config)
    async with kernel.running(background=False):
        minted = [
            (await kernel.keys.mint(brand=brand, role=role, scopes=scopes, name=name))[1].key_id
            for brand, role, scopes, name in CLI_KEYS
        ]
    return minted


def measure_cli(folder: Path, runs: int, warmup: int, args: argparse.Namespace) -> dict[str, Any]:
    """Wall-clock milliseconds of a few commands run as subprocesses, `runs` timed runs each after `warmup`
    untimed ones (which write the bytecode cache); the commands take turns run by run, so
    drift on a shared machine hits them alike."""
    config = write_config(folder, CLI_CONFIG)
    key_ids = anyio.run(mint_cli_keys, config)
    python, qaqnuz = str(BIN / "python"), str(BIN / "qaqnuz")
    # Bytecode as after a normal first run, whatever this environment has cached or forbids: the warm-up
    # runs compile every module into a private cache folder, the timed runs read it from there.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_") and k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")

    def lists_keys(out: str) -> bool:
        return all(key_id in out for key_id in key_ids)

    commands: list[tuple[str, list[str], Callable[[str], bool]]] = [
        ("python -c pass (the interpreter alone)", [python, "-c", "pass"], lambda out: True),
        ('python -c "import qaqnuz"', [python, "-c", "import qaqnuz"], lambda out: True),
        ("qaqnuz --version", [qaqnuz, "--version"], lambda out: out.strip() == f"qaqnuz {version('qaqnuz')}"),
        (f"qaqnuz keys list ({len(key_ids)} keys)", [qaqnuz, "keys", "list", "--config", str(config)], lists_keys),
    ]

    def once(argv: list[str], check: Callable[[str], bool]) -> int:
        t0 = time.perf_counter_ns()
        proc = subprocess.run(argv, cwd=folder, env=environ, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter_ns() - t0
        if proc.returncode != 0 or not check(proc.stdout):  # not a timing check: the command must work
            raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
        return elapsed

    progress(args, f"command start-up ({warmup} warm-up + {runs} timed runs per command) ...")
    for _ in range(warmup):
        for _label, argv, check in commands:
            once(argv, check)
    samples: dict[str, list[int]] = {label: [] for label, _, _ in commands}
    for _ in range(runs):
        for label, argv, check in commands:
            samples[label].append(once(argv, check))
    rows = []
    for label, _, _ in commands:
        ms = [s / 1e6 for s in samples[label]]
        rows.append({"command": label, "median_ms": statistics.median(ms), "min_ms": min(ms), "n": len(ms)})
    return {"runs": runs, "warmup": warmup, "target_ms": CLI_TARGET_MS, "console_script": qaqnuz, "rows": rows}


# -- main ------------------------------------------------------------------------------------------------
def collect(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    server_cpu: list[dict[str, Any]] = []
    cli: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="qaqnuz-bench-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "calls"):
            rows = anyio.run(measure_calls, args, folder, server_cpu)
        if args.only in (None, "cli"):
            cli = measure_cli(folder / "cli", args.cli_runs, args.cli_warmup, args)
    return {
        "meta": {
            "python": platform.python_version(),
            "mcp": version("mcp"),
            "qaqnuz": version("qaqnuz"),
            "cpus": os.cpu_count(),
            "calls": args.calls,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "only": args.only,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "date": time.strftime("%Y-%m-%d"),
        },
        "rows": rows,
        "server_cpu": server_cpu,
        "cli": cli,
    }


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        sys.stderr.write(f"  {text}\n")


LABEL = 44


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"qaqnuz {meta['qaqnuz']} vs bare mcp {meta['mcp']} low-level Server; Python {meta['python']}, "
        f"{meta['cpus']} CPUs, {meta['date']}; wall time {meta['wall_seconds']} s",
    ]
    if report["rows"]:
        lines += [
            f"{meta['calls']} timed calls per side per tools/call row (tools/list: half), {meta['rounds']} "
            f"alternating rounds, {meta['warmup']} warm-up calls",
            "per-call latency in microseconds; ratio = qaqnuz median / baseline median; "
            "overhead = difference of medians",
        ]
    header = f"{'':{LABEL}} {'baseline':>17} {'qaqnuz':>17} {'ratio':>7} {'overhead':>9}"
    sub = f"{'':{LABEL}} {'median':>8} {'p90':>8} {'median':>8} {'p90':>8}"
    section = None
    for r in report["rows"]:
        if r["section"] != section:
            section = r["section"]
            lines += ["", section, header, sub]
        b, g = r["baseline"], r["qaqnuz"]
        base = f"{b['median_us']:8.1f} {b['p90_us']:8.1f}" if b else f"{'-':>8} {'-':>8}"
        ratio = f"{r['ratio']:6.2f}x" if r["ratio"] is not None else f"{'-':>7}"
        over = f"{r['overhead_us']:+9.1f}" if r["overhead_us"] is not None else f"{'-':>9}"
        lines.append(f"  {r['scenario']:{LABEL - 2}} {base} {g['median_us']:8.1f} {g['p90_us']:8.1f} {ratio} {over}")
    if report["server_cpu"]:
        lines += [
            "",
            "server process CPU per call over stdio (user + system time from /proc, timed calls only)",
            f"{'':{LABEL}} {'baseline':>8} {'qaqnuz':>8} {'ratio':>7} {'overhead':>9}",
        ]
        for r in report["server_cpu"]:
            ratio = f"{r['ratio']:6.2f}x" if r["ratio"] is not None else f"{'-':>7}"
            lines.append(
                f"  {r['scenario']:{LABEL - 2}} {r['baseline_us']:8.1f} {r['qaqnuz_us']:8.1f} {ratio} "
                f"{r['overhead_us']:+9.1f}"
            )
    cli = report["cli"]
    if cli:
        lines += [
            "",
            f"command start-up: wall-clock ms per subprocess, {cli['warmup']} warm-up + {cli['runs']} timed runs "
            f"each, through {cli['console_script']}; bytecode cached by the warm-up runs",
            f"target stated by the project: `qaqnuz keys list` under {cli['target_ms']} ms (shown, never asserted)",
            f"{'':{LABEL}} {'median':>8} {'min':>8}",
        ]
        for r in cli["rows"]:
            lines.append(f"  {r['command']:{LABEL - 2}} {r['median_ms']:8.1f} {r['min_ms']:8.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000, help="timed calls per side per row (default 3000)")
    p.add_argument("--rounds", type=int, default=10, help="alternating baseline/qaqnuz blocks (default 10)")
    p.add_argument("--warmup", type=int, default=100, help="untimed calls per side before each row (default 100)")
    p.add_argument(
        "--only",
        choices=["calls", "cli"],
        help="only the per-call rows (calls), or only the command start-up figure (cli); default: both",
    )
    p.add_argument("--cli-runs", type=int, default=15, help="timed runs per command for start-up (default 15)")
    p.add_argument("--cli-warmup", type=int, default=2, help="untimed runs per command before those (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = p.parse_args(argv)
    if args.calls < 20 or args.rounds < 1 or args.warmup < 1:
        p.error("--calls must be at least 20, --rounds and --warmup at least 1")
    if args.cli_runs < 1 or args.cli_warmup < 1:
        p.error("--cli-runs and --cli-warmup must be at least 1 (a warm-up run writes the bytecode cache)")
    return args


def cli() -> None:
    args = parse_args()
    report = collect(args)
    print(json.dumps(report, indent=2) if args.json else render(report))


if __name__ == "__main__":
    cli()
