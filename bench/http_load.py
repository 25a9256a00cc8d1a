"""Throughput of qaqnuz over Streamable HTTP against the bare `mcp` SDK server, driven by wrk.

    uv run python bench/http_load.py [--rounds R] [--seconds D] [--connections C] [--only calls|scale|rss]
                                [--tools 10,1000,10000] [--json]

BASELINE is `bench/http_baseline_server.py`: the `mcp` low-level Server with the echo tool of
`baseline_server.py`, JSON replies, stateful sessions, uvicorn. QAQNUZ is `qaqnuz serve --transport http` run
as a user runs it, on a generated config with the bench pack (`bench/bench_pack.py`) and full governance: a key
minted with `qaqnuz keys create` and checked on every request, the scope policy, the memory rate limiter (with
limits no run can reach), the hash-chained audit file and the Prometheus metrics. Each server runs pinned to
CPU 0 (`taskset -c 0`), wrk pinned to CPU 1, both on 127.0.0.1; wrk is installed from Debian when missing.

Sections (all by default; `--only` picks one):
  calls  tools/call and tools/list in the 2026-07-28 mode (self-contained POSTs) and in a 2025-11-25
         session, R interleaved rounds of D seconds per server (tools/list: D/2), alternating which server
         goes first; req/s, p50/p99, server CPU µs per request, paired ratios qaqnuz/bare; RSS.
  scale  tools/call and tools/list (2026-07-28 mode) with 10, 1,000 and 10,000 registered tools, one server at
         a time; qaqnuz's start-up time (until /readyz answers 200) and idle CPU.
  rss    RSS after a warm-up and after 100,000 tools/call on each server (or as many as --rss-max-seconds
         allows: 50 s by default, which today is fewer).

Every JSON-RPC request carries its own id (bench/mcp_post.lua), and one request of each kind is checked for the
right answer before anything is measured; wrk's answers are counted as ok, non-2xx or JSON-RPC error.

Progress goes to stderr, the table (or with `--json` one JSON document) to stdout. It asserts nothing about
timings. It stops its servers and removes its temporary folder on exit, on an error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import baseline_server
import bench_pack
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
LUA = HERE / "mcp_post.lua"
MODERN, LEGACY = "2026-07-28", "2025-11-25"
SERVER_CPU, WRK_CPU = 0, 1
TEXT = "hello"
TICK = os.sysconf("SC_CLK_TCK")

#: `[plans.bench] limits`: the memory limiter keeps one timestamp per admitted call for a window, so a 1 s
#: window keeps its memory small while a count of 10^8 per second is never reached.
QAQNUZ_CONFIG = """\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"
log_level = "warning"

[plugins]
auth = "apikey"
policies = ["scope"]
limiter = "memory"
audit = ["file"]

[plugins.http]
access_log = false
metrics = true

[plans.bench]
entitled = true
limits = {{ per_key = "100000000/1s", per_brand = "100000000/1s" }}

[brands.acme]
plan = "bench"
roles = {{ viewer = ["echo.read"] }}
{exposable}
[packs.bench]
type = "bench"
extra_tools = {extra_tools}
"""

#: Processes this run started and has not yet stopped; `stop_all` ends them whatever happens.
RUNNING: list[subprocess.Popen[bytes]] = []


STARTED = time.perf_counter()


def log(text: str, width: int = 5) -> None:
    """`text` on stderr after the seconds since the start, right-aligned in `width` characters."""
    sys.stderr.write(f"  [{time.perf_counter() - STARTED:{width}.0f} s] {text}\n")
    sys.stderr.flush()


class BenchError(RuntimeError):
    """Something a measurement needs did not work; the message says what, with the server's own output."""


# -- /proc -----------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, all its threads, in seconds (from /proc/<pid>/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        raise BenchError(f"server process {pid} is gone") from None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def steal_seconds() -> float | None:
    """CPU steal time of the whole machine so far (all CPUs), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(first[8]) / TICK
    except (OSError, IndexError, ValueError):
        return None


# -- setup -----------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    argv = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise BenchError("wrk is missing, and installing it needs root or sudo: apt-get install -y wrk")
        argv = ["sudo", *argv]
    log(f"wrk not found: installing it from Debian ({' '.join(argv)}); apt's output follows on stderr")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, env=env, check=False).returncode != 0:
        update = [*argv[: argv.index("install")], "update"]
        log(f"apt-get install failed; refreshing the package lists ({' '.join(update)}) and retrying")
        subprocess.run(update, stdout=sys.stderr, stderr=sys.stderr, env=env, check=False)
        if subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, env=env, check=False).returncode != 0:
            raise BenchError(f"could not install wrk ({' '.join(argv)} failed; see above)")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    log(f"installed {found}")
    return found


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def can_pin() -> bool:
    return bool(shutil.which("taskset")) and len(os.sched_getaffinity(0)) >= 2


def pinned(argv: list[str], cpu: int, pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if pin else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(pycache: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a server: no QAQNUZ_* from outside; bytecode cached in a private folder (written by
    the first start, read by the next ones, as after a normal first run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def qaqnuz_env(pycache: Path) -> dict[str, str]:
    return child_env(pycache, {"QAQNUZ_DISABLE_PLUGIN_AUTOLOAD": "1", "QAQNUZ_PLUGINS": "http,bench.bench_pack"})


def qaqnuz_folder(folder: Path, tools: int, pycache: Path) -> tuple[Path, str]:
    """`qaqnuz init`, the bench config with `tools` tools exposable to brand acme, and a key from
    `qaqnuz keys create`; returns the config path and the key."""
    env = qaqnuz_env(pycache)
    qaqnuz = str(BIN / "qaqnuz")
    run_command([qaqnuz, "init", "--dir", str(folder)], env)
    names = ["echo"] + [f"echo_{i}" for i in range(1, tools)]
    exposable = "".join(f"tools.{name} = {{ exposable = true }}\n" for name in names)
    config = folder / "qaqnuz.toml"
    config.write_text(QAQNUZ_CONFIG.format(exposable=exposable, extra_tools=tools - 1), encoding="utf-8")
    out = run_command(
        [
            qaqnuz,
            "keys",
            "create",
            "--config",
            str(config),
            "--brand",
            "acme",
            "--scope",
            "echo.read",
            "--name",
            "bench",
        ],
        env,
    )
    key = out.strip().splitlines()[0].strip() if out.strip() else ""
    if not key.startswith("qx_"):
        raise BenchError(f"qaqnuz keys create printed no key: {out!r}")
    return config, key


def run_command(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


# -- servers ---------------------------------------------------------------------------------------------
@dataclass
class Server:
    kind: str  # "bare" or "qaqnuz"
    tools: int
    proc: subprocess.Popen[bytes]
    port: int
    output: Path
    spawned: float
    key: str
    ready_path: str
    startup_s: float | None = None
    session: str | None = None
    home: Path | None = None  # qaqnuz: its folder (config, store, secret, audit file)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def printed(self, limit: int = 6000) -> str:
        """What the server wrote to stdout and stderr so far (the end of it)."""
        return output_tail(self.output, limit)


def output_tail(path: Path, limit: int, missing: str = "(no output file)") -> str:
    """The last `limit` characters of a process's output file (`missing` when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return missing
    text = text if len(text) <= limit else "...\n" + text[-limit:]
    return text.strip() or "(nothing)"


def spawn(kind: str, tools: int, argv: list[str], env: dict[str, str], output: Path, key: str, pin: bool) -> Server:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    handle = output.open("wb")
    try:
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            pinned(argv, SERVER_CPU, pin),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this bench only; it stops its servers itself
        )
    finally:
        handle.close()
    RUNNING.append(proc)
    return Server(kind, tools, proc, port, output, spawned, key, "/readyz" if kind == "qaqnuz" else "/healthz")


def start_bare(folder: Path, tools: int, pycache: Path, pin: bool) -> Server:
    argv = [sys.executable, "-m", "bench.http_baseline_server", "--port", "{port}", "--tools", str(tools)]
    return spawn("bare", tools, argv, child_env(pycache, {}), folder / f"bare-{tools}.log", "", pin)


def start_qaqnuz(folder: Path, tools: int, pycache: Path, pin: bool) -> Server:
    home = folder / f"qaqnuz-{tools}"
    config, key = qaqnuz_folder(home, tools, pycache)
    argv = [str(BIN / "qaqnuz"), "serve", "--transport", "http", "--port", "{port}", "--config", str(config)]
    server = spawn("qaqnuz", tools, argv, qaqnuz_env(pycache), folder / f"qaqnuz-{tools}.log", key, pin)
    server.home = home
    return server


def start_both(args: argparse.Namespace, driver: Driver, folder: Path, pycache: Path) -> tuple[Server, Server]:
    """The bare server and qaqnuz with one tool each, both answering their readiness path."""
    bare = qaqnuz = None
    try:
        bare = start_bare(folder, 1, pycache, driver.pin)
        qaqnuz = start_qaqnuz(folder, 1, pycache, driver.pin)
        for server in (bare, qaqnuz):
            if wait_ready(server, args.startup_timeout) is None:
                raise BenchError(f"{server.kind} did not answer within {args.startup_timeout} s:\n{server.printed()}")
    except BaseException:
        stop(bare)
        stop(qaqnuz)
        raise
    return bare, qaqnuz


def governance_evidence(server: Server) -> dict[str, Any]:
    """What shows the governed path ran: audit lines written, and qaqnuz_tool_calls_total by outcome."""
    audit = server.home / "qaqnuz-audit.jsonl" if server.home else None
    lines = None
    if audit is not None and audit.exists():
        with audit.open("rb") as handle:
            lines = sum(1 for _ in handle)
    outcomes: dict[str, float] = {}
    with suppress(httpx.HTTPError), httpx.Client(timeout=10) as client:
        text = client.get(f"http://127.0.0.1:{server.port}/metrics").text
        for line in text.splitlines():
            if line.startswith("qaqnuz_tool_calls_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                outcomes[outcome] = outcomes.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return {"audit_lines": lines, "tool_calls_total": outcomes}


def wait_ready(server: Server, timeout_s: float) -> float | None:
    """Seconds from spawning until the readiness path answers 200; None when `timeout_s` passed first.
    Raises if the process exits."""
    deadline = server.spawned + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if server.proc.poll() is not None:
                raise BenchError(
                    f"{server.kind} server exited with code {server.proc.returncode} before answering; "
                    f"it printed:\n{server.printed()}"
                )
            with suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{server.port}{server.ready_path}").status_code == 200:
                    server.startup_s = time.perf_counter() - server.spawned
                    return server.startup_s
            time.sleep(0.05)
    return None


def stop(server: Server | None) -> None:
    if server is not None:
        stop_process(server.proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15, *, group: bool = False) -> None:
    """SIGTERM, and SIGKILL if it has not exited `grace` seconds later (to its whole process group with
    `group`, for a process started with `start_new_session` whose children must go too)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            proc.wait(timeout=15)
    if proc in RUNNING:
        RUNNING.remove(proc)


def stop_all() -> None:
    for proc in list(RUNNING):
        with suppress(Exception):
            stop_process(proc)


# -- requests --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    era: str  # MODERN or LEGACY
    method: str  # "tools/call" or "tools/list"
    tool: str = "echo"

    @property
    def label(self) -> str:
        return f"{'2026-07-28' if self.era == MODERN else 'session'} {self.method}"

    def headers(self, server: Server) -> dict[str, str]:
        h = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            # qaqnuz needs it; the bare server ignores it (the same bytes on the wire for both)
            "Authorization": f"Bearer {server.key or 'qx_live_unused_by_the_bare_server'}",
            "MCP-Protocol-Version": self.era,
        }
        if self.era == MODERN:
            h["Mcp-Method"] = self.method
            if self.method == "tools/call":
                h["Mcp-Name"] = self.tool
        else:
            if server.session is None:
                raise BenchError(f"no session with the {server.kind} server")
            h["Mcp-Session-Id"] = server.session
        return h

    def body_parts(self) -> tuple[str, str]:
        """The JSON body before and after the id."""
        params: dict[str, Any] = {}
        if self.method == "tools/call":
            params = {"name": self.tool, "arguments": {"text": TEXT}}
        if self.era == MODERN:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        tail = json.dumps({"method": self.method, "params": params}, separators=(",", ":"))
        return '{"jsonrpc":"2.0","id":', "," + tail[1:]


def event_stream_answer(text: str) -> dict[str, Any] | None:
    """The JSON-RPC answer (a message with an id and a result or an error) in an SSE body; None if it has none."""
    for line in text.splitlines():
        if line.startswith("data:"):
            message = json.loads(line[5:])
            if "id" in message and ("result" in message or "error" in message):
                return message
    return None


def decode_answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or an SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        message = event_stream_answer(response.text)
        if message is None:
            raise BenchError(f"no JSON-RPC answer in the event stream: {response.text[:500]!r}")
        return message
    return response.json()


def open_session(server: Server, timeout_s: float) -> None:
    """initialize + notifications/initialized (2025-11-25) once; every session-era request carries the id."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {server.key or 'qx_live_unused_by_the_bare_server'}",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
    }
    with httpx.Client(timeout=timeout_s) as client:
        r = client.post(server.url, json=init, headers=headers)
        answer = decode_answer(r) if r.status_code == 200 else {}
        session = r.headers.get("mcp-session-id")
        if r.status_code != 200 or not session or answer.get("result", {}).get("protocolVersion") != LEGACY:
            raise BenchError(f"{server.kind}: initialize failed: HTTP {r.status_code} {r.text[:500]!r}")
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
        r = client.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        if r.status_code != 202:
            raise BenchError(f"{server.kind}: notifications/initialized got HTTP {r.status_code} {r.text[:500]!r}")
    server.session = session


def check_answer(server: Server, scenario: Scenario, timeout_s: float) -> None:
    """Not a timing check: one request of this kind, as wrk sends it, must get the right answer."""
    prefix, suffix = scenario.body_parts()
    with httpx.Client(timeout=timeout_s) as client:
        r = client.post(server.url, content=f"{prefix}1{suffix}".encode(), headers=scenario.headers(server))
    where = f"{server.kind} ({server.tools} tools), {scenario.label}"
    if r.status_code != 200:
        raise BenchError(f"{where}: HTTP {r.status_code} {r.text[:1000]!r}")
    answer = decode_answer(r)
    result = answer.get("result")
    if answer.get("id") != 1 or not isinstance(result, dict):
        raise BenchError(f"{where}: not a JSON-RPC result: {r.text[:1000]!r}")
    if scenario.method == "tools/call":
        content = result.get("content") or [{}]
        try:
            echoed = json.loads(content[0].get("text", ""))
        except ValueError:
            echoed = None
        if result.get("isError") or echoed != {"text": TEXT}:
            raise BenchError(f"{where}: the echo did not come back: {r.text[:1000]!r}")
    else:
        tools = result.get("tools") or []
        names = {t.get("name") for t in tools}
        expected = {"echo"} | {f"echo_{i}" for i in range(1, server.tools)}
        echo: dict[str, Any] = next((t for t in tools if t.get("name") == "echo"), {})
        if names != expected or echo.get("inputSchema") != baseline_server.ECHO_INPUT_SCHEMA:
            raise BenchError(
                f"{where}: expected {len(expected)} tools with the echo schema, got {len(names)}: {r.text[:1000]!r}"
            )


# -- wrk -------------------------------------------------------------------------------------------------
@dataclass
class Driver:
    wrk: str
    folder: Path
    pin: bool
    runs: int = 0
    #: tools/call answered per server process (warm-up included), for the governance evidence line
    calls_answered: dict[int, int] = field(default_factory=dict)

    def run(
        self,
        server: Server,
        scenario: Scenario,
        seconds: float,
        connections: int,
        timeout_s: float,
        cap: int = 0,
    ) -> dict[str, Any]:
        """One wrk run against `server`; req/s, latency, errors and the server's CPU per request."""
        self.runs += 1
        prefix, suffix = scenario.body_parts()
        settings = self.folder / f"wrk-{self.runs}.lua"
        headers = ",\n    ".join(f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in scenario.headers(server).items())
        settings.write_text(
            "return {\n"
            f"  path = {lua_string('/mcp')},\n"
            f"  headers = {{\n    {headers}\n  }},\n"
            f"  prefix = {lua_string(prefix)},\n"
            f"  suffix = {lua_string(suffix)},\n"
            f"  cap = {int(cap)},\n"
            f"  first_id = {self.runs * 10_000_000_000},\n"
            "}\n"
        )
        argv = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(LUA),
            server.url,
            "--",
            str(settings),
        ]
        cpu0 = cpu_seconds(server.pid)
        proc = subprocess.Popen(
            pinned(argv, WRK_CPU, self.pin), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        RUNNING.append(proc)
        try:
            out, _ = proc.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise BenchError(f"wrk did not finish: {out.decode(errors='replace')}") from None
        finally:
            if proc.poll() is None:  # interrupted: wrk goes too
                proc.kill()
                proc.wait()
            RUNNING.remove(proc)
        cpu = cpu_seconds(server.pid) - cpu0
        text = out.decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("@@bench ")), None)
        if proc.returncode != 0 or line is None:
            raise BenchError(f"wrk failed (exit {proc.returncode}): {' '.join(argv)}\n{text}")
        r = json.loads(line[len("@@bench ") :])
        done = r["requests"]
        if scenario.method == "tools/call":
            self.calls_answered[server.pid] = self.calls_answered.get(server.pid, 0) + r["ok"]
        seconds_run = r["duration_us"] / 1e6
        return {
            "server": server.kind,
            "scenario": scenario.label,
            "connections": connections,
            "requests": done,
            "seconds": seconds_run,
            "rps": done / seconds_run if seconds_run else 0.0,
            "p50_ms": r["p50_us"] / 1000 if done else None,
            "p99_ms": r["p99_us"] / 1000 if done else None,
            "max_ms": r["max_us"] / 1000 if done else None,
            "cpu_us": cpu * 1e6 / done if done else None,
            "cpu_s": cpu,
            "ok": r["ok"],
            "non2xx": r["non2xx"],
            "rpc_errors": r["rpc_errors"],
            "socket_errors": r["connect"] + r["read"] + r["write"],
            "timeouts": r["timeout"],
            "first_bad": r["first_bad"] or None,
        }


def lua_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def drain(server: Server, work_s: float, limit_s: float) -> None:
    """After wrk stops, let the server finish what was still in flight (`work_s`: about how long that takes):
    until its CPU use falls below 20 % of a core, or for twice `work_s` (qaqnuz's idle sync can keep a core half
    busy at 10,000 tools), whichever comes first; at most `limit_s`."""
    deadline = time.monotonic() + min(limit_s, 2 * work_s + 0.5)
    while time.monotonic() < deadline:
        before = cpu_seconds(server.pid)
        time.sleep(0.25)
        if cpu_seconds(server.pid) - before < 0.05:
            return


# -- the calls section -----------------------------------------------------------------------------------
CALL_SCENARIOS = [
    Scenario(MODERN, "tools/call"),
    Scenario(LEGACY, "tools/call"),
    Scenario(MODERN, "tools/list"),
    Scenario(LEGACY, "tools/list"),
]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def errors_of(runs: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("non2xx", "rpc_errors", "socket_errors", "timeouts")
    return {k: sum(r[k] for r in runs) for k in keys}


def first_bad(runs: list[dict[str, Any]]) -> str | None:
    return next((r["first_bad"] for r in runs if r["first_bad"]), None)


def section_calls(args: argparse.Namespace, driver: Driver, folder: Path, pycache: Path) -> dict[str, Any]:
    bare = qaqnuz = None
    try:
        log("calls: starting both servers (1 tool) ...")
        bare, qaqnuz = start_both(args, driver, folder, pycache)
        for server in (bare, qaqnuz):
            open_session(server, args.request_timeout)
            for scenario in CALL_SCENARIOS:
                check_answer(server, scenario, args.request_timeout)
        servers = {"bare": bare, "qaqnuz": qaqnuz}
        log(f"calls: warm-up, {args.warmup} s per server and kind ...")
        for scenario in CALL_SCENARIOS:
            for server in (bare, qaqnuz):
                driver.run(server, scenario, args.warmup, args.connections, args.wrk_timeout)
        time.sleep(0.5)
        rss_warm = {kind: rss_mb(server.pid) for kind, server in servers.items()}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.label: {"bare": [], "qaqnuz": []} for s in CALL_SCENARIOS}
        for r in range(args.rounds):
            order = ("bare", "qaqnuz") if r % 2 == 0 else ("qaqnuz", "bare")
            log(f"calls: round {r + 1}/{args.rounds} ({order[0]} first) ...")
            for scenario in CALL_SCENARIOS:
                seconds = args.seconds if scenario.method == "tools/call" else args.list_seconds
                for kind in order:
                    result = driver.run(servers[kind], scenario, seconds, args.connections, args.wrk_timeout)
                    result["round"] = r + 1
                    runs[scenario.label][kind].append(result)
                    time.sleep(0.2)  # what was in flight when wrk stopped finishes before the next run
        rows: list[dict[str, Any]] = []
        for scenario in CALL_SCENARIOS:
            per = runs[scenario.label]
            pairs = list(zip(per["bare"], per["qaqnuz"], strict=True))
            rows.append(
                {
                    "scenario": scenario.label,
                    **{
                        kind: {
                            "rps": median([x["rps"] for x in per[kind]]),
                            "p50_ms": median([x["p50_ms"] for x in per[kind]]),
                            "p99_ms": median([x["p99_ms"] for x in per[kind]]),
                            "cpu_us": median([x["cpu_us"] for x in per[kind]]),
                            "requests": sum(x["requests"] for x in per[kind]),
                            "errors": errors_of(per[kind]),
                            "first_bad": first_bad(per[kind]),
                        }
                        for kind in ("bare", "qaqnuz")
                    },
                    "rps_ratio": median([q["rps"] / b["rps"] if b["rps"] else None for b, q in pairs]),
                    "cpu_ratio": median(
                        [q["cpu_us"] / b["cpu_us"] if q["cpu_us"] and b["cpu_us"] else None for b, q in pairs]
                    ),
                    "rps_ratio_range": ratio_range([q["rps"] / b["rps"] if b["rps"] else None for b, q in pairs]),
                    "runs": per,
                }
            )
        return {
            "rows": rows,
            "rss_warm_mb": rss_warm,
            "rss_mb": {"bare": rss_mb(bare.pid), "qaqnuz": rss_mb(qaqnuz.pid)},
            "requests": {kind: sum(row[kind]["requests"] for row in rows) for kind in servers},
            "governance": {
                **governance_evidence(qaqnuz),
                "calls_answered": driver.calls_answered.get(qaqnuz.pid, 0) + 2,  # + the two checks
            },
            "startup_s": {"bare": bare.startup_s, "qaqnuz": qaqnuz.startup_s},
        }
    finally:
        stop(bare)
        stop(qaqnuz)


def ratio_range(values: list[float | None]) -> list[float] | None:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else None


# -- the scale section -----------------------------------------------------------------------------------
def section_scale(args: argparse.Namespace, driver: Driver, folder: Path, pycache: Path) -> dict[str, Any]:
    rows = []
    for tools in args.tools:
        for kind in ("qaqnuz", "bare"):
            log(f"scale: {kind} with {tools:,} tools ...")
            rows.append(scale_one(args, driver, folder, pycache, kind, tools))
    return {"rows": rows}


METHODS = ("tools/call", "tools/list")


def scale_one(
    args: argparse.Namespace, driver: Driver, folder: Path, pycache: Path, kind: str, tools: int
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": kind, "tools": tools, "startup_s": None, "idle_cpu_pct": None, "notes": []}
    server = None
    try:
        server = (start_qaqnuz if kind == "qaqnuz" else start_bare)(folder, tools, pycache, driver.pin)
        row["startup_s"] = wait_ready(server, args.startup_timeout)
        if row["startup_s"] is None:
            row["notes"].append(
                f"start-up timed out after {args.startup_timeout} s; it printed: {server.printed(2000)}"
            )
            log(f"scale: {kind} with {tools:,} tools did not answer within {args.startup_timeout} s")
            return row
        if kind == "qaqnuz":
            before, t0 = cpu_seconds(server.pid), time.perf_counter()
            time.sleep(args.idle_seconds)
            row["idle_cpu_pct"] = 100 * (cpu_seconds(server.pid) - before) / (time.perf_counter() - t0)
        scenarios = [Scenario(MODERN, m, tool=f"echo_{tools - 1}" if tools > 1 else "echo") for m in METHODS]
        firsts: dict[str, float] = {}
        for scenario in scenarios:  # both before any load, so nothing else is in flight
            try:
                t0 = time.perf_counter()
                check_answer(server, scenario, args.scale_timeout)
                firsts[scenario.method] = (time.perf_counter() - t0) * 1000
            except httpx.TimeoutException:
                row["notes"].append(f"{scenario.method}: one request got no answer within {args.scale_timeout} s")
                drain(server, args.scale_timeout, args.scale_timeout)
        for scenario in scenarios:
            if scenario.method not in firsts:
                row[scenario.method] = None
                continue
            results = []
            for _ in range(args.scale_rounds):
                result = driver.run(server, scenario, args.scale_seconds, args.scale_connections, args.scale_timeout)
                results.append(result)
                each_s = 1 / result["rps"] if result["rps"] else firsts[scenario.method] / 1000
                drain(server, result["connections"] * each_s, args.scale_timeout)
            row[scenario.method] = {
                "first_ms": firsts[scenario.method],
                "rps": median([x["rps"] for x in results]),
                "p50_ms": median([x["p50_ms"] for x in results]),
                "p99_ms": median([x["p99_ms"] for x in results]),
                "requests": sum(x["requests"] for x in results),
                "errors": errors_of(results),
                "first_bad": first_bad(results),
                "runs": results,
            }
        row["rss_mb"] = rss_mb(server.pid)
    except BenchError as exc:  # say so in the table, go on with the other rows
        log(f"scale: {kind} with {tools:,} tools FAILED: {exc}")
        row["notes"].append(f"FAILED: {exc}")
    finally:
        stop(server)
    return row


# -- the rss section -------------------------------------------------------------------------------------
def section_rss(args: argparse.Namespace, driver: Driver, folder: Path, pycache: Path) -> dict[str, Any]:
    bare = qaqnuz = None
    scenario = Scenario(MODERN, "tools/call")
    rows = []
    try:
        log("rss: starting both servers (1 tool) ...")
        bare, qaqnuz = start_both(args, driver, folder, pycache)
        for server in (bare, qaqnuz):
            check_answer(server, scenario, args.request_timeout)
        for server in (bare, qaqnuz):
            driver.run(server, scenario, args.warmup, args.connections, args.wrk_timeout)
            time.sleep(0.5)
            start = rss_mb(server.pid)
            log(f"rss: {args.rss_calls:,} tools/call to {server.kind} (at most {args.rss_max_seconds} s) ...")
            result = driver.run(
                server, scenario, args.rss_max_seconds, args.connections, args.wrk_timeout, cap=args.rss_calls
            )
            time.sleep(0.5)
            end = rss_mb(server.pid)
            rows.append(
                {
                    "server": server.kind,
                    "calls": result["requests"],
                    "seconds": result["seconds"],
                    "rps": result["rps"],
                    "rss_start_mb": start,
                    "rss_end_mb": end,
                    "errors": errors_of([result]),
                    "first_bad": result["first_bad"],
                }
            )
    finally:
        stop(bare)
        stop(qaqnuz)
    return {"rows": rows, "target_calls": args.rss_calls}


# -- main ------------------------------------------------------------------------------------------------
def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if baseline_server.ECHO_INPUT_SCHEMA != bench_pack.ECHO_INPUT_SCHEMA:
        raise BenchError("baseline and qaqnuz echo schemas differ; keep them equal")
    started = time.perf_counter()
    steal0 = steal_seconds()
    wrk = ensure_wrk()
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {WRK_CPU})  # this process too stays off the servers' CPU
    else:
        log("taskset missing or fewer than 2 CPUs: nothing is pinned; figures are less comparable")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qaqnuz-httpbench-") as tmp, cleanup():
        folder = Path(tmp)
        pycache = folder / "pycache"
        driver = Driver(wrk, folder, pin)
        # Every timed start, and every RSS figure, then reads cached bytecode (a process that compiled its
        # modules keeps a few MB more).
        warm_bytecode(folder / "warm", pycache, pin, args)
        sections = [
            ("calls", section_calls),
            ("scale", section_scale),
            ("rss", section_rss),
        ]
        for name, section in sections:
            if args.only not in (None, name):
                continue
            (folder / name).mkdir()
            t0 = time.perf_counter()
            try:
                report[name] = section(args, driver, folder / name, pycache)
            except BenchError as exc:  # say so loudly, keep what the other sections measured
                log(f"{name}: FAILED: {exc}")
                report[name] = {"error": str(exc)}
            report[name]["seconds"] = round(time.perf_counter() - t0, 1)
    steal1 = steal_seconds()
    report["meta"] = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "qaqnuz": package_version("qaqnuz"),
        "mcp": package_version("mcp"),
        "uvicorn": package_version("uvicorn"),
        "uvloop": package_version("uvloop"),
        "httptools": package_version("httptools"),
        "wrk": wrk_version(wrk),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "pinned": pin,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "list_seconds": args.list_seconds,
        "warmup": args.warmup,
        "connections": args.connections,
        "tools": args.tools,
        "scale_rounds": args.scale_rounds,
        "scale_seconds": args.scale_seconds,
        "scale_connections": args.scale_connections,
        "idle_seconds": args.idle_seconds,
        "rss_calls": args.rss_calls,
        "rss_max_seconds": args.rss_max_seconds,
        "only": args.only,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "steal_seconds": round(steal1 - steal0, 1) if steal0 is not None and steal1 is not None else None,
    }
    return report


def warm_bytecode(folder: Path, pycache: Path, pin: bool, args: argparse.Namespace) -> None:
    """One untimed start of each server, so the timed start-ups read cached bytecode (as after a first run)."""
    log("one untimed start of each server, to cache their bytecode ...")
    folder.mkdir(exist_ok=True)
    for start in (start_bare, start_qaqnuz):
        server = start(folder, 1, pycache, pin)
        try:
            wait_ready(server, args.startup_timeout)
        finally:
            stop(server)


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


@contextmanager
def cleanup() -> Iterator[None]:
    """Stop every process this run started, whatever ends it (an error, Ctrl-C, SIGTERM)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        sys.stderr.write("\nterminated; stopping the servers, removing the temporary folder\n")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, previous)


# -- output ----------------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'n/a':>{width}}"


def ratio(value: float | None) -> str:
    return f"{value:6.2f}x" if value is not None else f"{'n/a':>7}"


def error_note(who: str, errors: dict[str, int], bad: str | None) -> str | None:
    if not any(errors.values()):
        return None
    parts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in errors.items() if v)
    return f"{who}: {parts}" + (f"; first bad answer: {bad[:200]}" if bad else "")


def render(report: dict[str, Any]) -> str:
    m = report["meta"]
    pin = "servers on CPU 0, wrk on CPU 1" if m["pinned"] else "nothing pinned"
    steal = f"; CPU steal {m['steal_seconds']} s" if m["steal_seconds"] is not None else ""
    lines = [
        f"qaqnuz {m['qaqnuz']} `serve --transport http` vs bare mcp {m['mcp']} low-level Server over Streamable HTTP",
        f"uvicorn {m['uvicorn']}, uvloop {m['uvloop']}, httptools {m['httptools']}; {m['wrk']} -t1; Python "
        f"{m['python']}; {m['cpus']} CPUs ({m['cpu_model']}); {pin}",
        f"{m['date']}; wall time {m['wall_seconds']} s{steal}",
    ]
    for name in ("calls", "scale", "rss"):
        if "error" in report.get(name, {}):
            lines += ["", f"{name}: FAILED, no figures: {report[name]['error']}"]
    calls = report.get("calls")
    if calls and "rows" in calls:
        lines += [
            "",
            f"tools/call and tools/list, 1 tool: {m['rounds']} rounds of {m['seconds']:g} s per server (tools/list "
            f"{m['list_seconds']:g} s), {m['connections']} connections, alternating which server goes first",
            "medians over rounds; ratio = median of the per-round ratios qaqnuz/bare; latency in ms; "
            "CPU = server CPU µs per request",
            f"{'':22} {'req/s':>17} {'p50 ms':>15} {'p99 ms':>15} {'CPU µs/req':>15} {'qaqnuz/bare':>17}",
            f"{'':22} {'bare':>8} {'qaqnuz':>8} {'bare':>7} {'qaqnuz':>7} {'bare':>7} {'qaqnuz':>7} "
            f"{'bare':>7} {'qaqnuz':>7} {'req/s':>8} {'CPU':>8}",
        ]
        notes = []
        for row in calls["rows"]:
            b, q = row["bare"], row["qaqnuz"]
            lines.append(
                f"  {row['scenario']:20} {fmt(b['rps'], ',.0f', 8)} {fmt(q['rps'], ',.0f', 8)} "
                f"{fmt(b['p50_ms'], '.1f', 7)} {fmt(q['p50_ms'], '.1f', 7)} "
                f"{fmt(b['p99_ms'], '.1f', 7)} {fmt(q['p99_ms'], '.1f', 7)} "
                f"{fmt(b['cpu_us'], ',.0f', 7)} {fmt(q['cpu_us'], ',.0f', 7)} "
                f"{ratio(row['rps_ratio']):>8} {ratio(row['cpu_ratio']):>8}"
            )
            for kind in ("bare", "qaqnuz"):
                note = error_note(f"{row['scenario']}, {kind}", row[kind]["errors"], row[kind]["first_bad"])
                if note:
                    notes.append(note)
        ranges = ", ".join(
            f"{r['scenario']} {r['rps_ratio_range'][0]:.2f}-{r['rps_ratio_range'][1]:.2f}"
            for r in calls["rows"]
            if r["rps_ratio_range"]
        )
        lines.append(f"  req/s ratio per round, lowest-highest: {ranges}")
        rss, warm, done = calls["rss_mb"], calls["rss_warm_mb"], calls["requests"]
        lines.append(
            "  RSS after the warm-up -> at the end: "
            + ", ".join(
                f"{kind} {fmt(warm[kind], '.1f', 0)} -> {fmt(rss[kind], '.1f', 0)} MB ({done[kind]:,} timed requests)"
                for kind in ("bare", "qaqnuz")
            )
        )
        gov = calls["governance"]
        outcomes = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(gov["tool_calls_total"].items())) or "n/a"
        audit = f"{gov['audit_lines']:,}" if gov["audit_lines"] is not None else "n/a"
        lines.append(
            f"  qaqnuz governance: {gov['calls_answered']:,} tools/call answered, {audit} audit lines, "
            f"qaqnuz_tool_calls_total {outcomes}"
        )
        lines.append("  errors: " + ("; ".join(notes) if notes else "none (every answer 2xx and a JSON-RPC result)"))
    scale = report.get("scale")
    if scale and "rows" in scale:
        lines += [
            "",
            f"scale, 2026-07-28 mode, one server at a time: {m['scale_rounds']} round(s) of {m['scale_seconds']:g} s, "
            f"{m['scale_connections']} connections; tools/call calls the last tool listed",
            "start-up = seconds until /readyz (bare: /healthz) answers 200; idle = server CPU over "
            f"{m['idle_seconds']:g} s without requests, % of one core",
            "first = ms for the first request of its kind after start-up and the idle window (no other load)",
            f"{'':16} {'start-up':>8} {'idle':>6} {'tools/call':>35} {'tools/list':>35} {'RSS':>6}",
            f"{'':16} {'s':>8} {'CPU %':>6} {'first':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'first':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'MB':>6}",
        ]
        notes = []
        for row in scale["rows"]:
            cells = []
            for method in ("tools/call", "tools/list"):
                got = row.get(method)
                if not got:
                    cells.append(f"{'timed out' if method in row else 'n/a':>35}")
                    continue
                if not got["requests"]:
                    none = f"none answered in {m['scale_seconds']:g} s"
                    cells.append(f"{fmt(got['first_ms'], ',.1f', 8)} {none:>26}")
                    continue
                cells.append(
                    f"{fmt(got['first_ms'], ',.1f', 8)} {fmt(got['rps'], ',.1f', 8)} {fmt(got['p50_ms'], ',.1f', 8)} "
                    f"{fmt(got['p99_ms'], ',.1f', 8)}"
                )
                note = error_note(f"{row['server']} {row['tools']:,} tools {method}", got["errors"], got["first_bad"])
                if note:
                    notes.append(note)
            up = fmt(row["startup_s"], ".2f", 8) if row["startup_s"] is not None else f"{'timed out':>8}"
            lines.append(
                f"  {row['tools']:>6,} {row['server']:7} {up} {fmt(row['idle_cpu_pct'], '.1f', 6)} "
                f"{cells[0]} {cells[1]} {fmt(row.get('rss_mb'), '.0f', 6)}"
            )
            notes += [f"{row['server']} {row['tools']:,} tools: {n}" for n in row["notes"]]
        lines.append("  notes: " + ("; ".join(notes) if notes else "none (every answer 2xx and a JSON-RPC result)"))
    rss = report.get("rss")
    if rss and "rows" in rss:
        lines += [
            "",
            f"RSS over {rss['target_calls']:,} tools/call (2026-07-28 mode, {m['connections']} connections, after "
            f"{m['warmup']:g} s of warm-up)",
            f"{'':10} {'calls':>9} {'seconds':>8} {'req/s':>8} {'RSS start':>10} {'RSS end':>8} {'change':>8}",
        ]
        notes = []
        for row in rss["rows"]:
            start, end = row["rss_start_mb"], row["rss_end_mb"]
            change = f"{100 * (end - start) / start:+7.1f}%" if start and end else f"{'n/a':>8}"
            stopped = (
                "" if row["calls"] >= rss["target_calls"] else f"  (stopped at the {m['rss_max_seconds']:g} s limit)"
            )
            lines.append(
                f"  {row['server']:8} {row['calls']:9,} {row['seconds']:8.1f} {row['rps']:8,.0f} "
                f"{fmt(start, '.1f', 7)} MB {fmt(end, '.1f', 5)} MB {change}{stopped}"
            )
            note = error_note(row["server"], row["errors"], row["first_bad"])
            if note:
                notes.append(note)
        lines.append("  errors: " + ("; ".join(notes) if notes else "none (every answer 2xx and a JSON-RPC result)"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="calls: interleaved rounds (default 5)")
    p.add_argument("--seconds", type=float, default=8, help="calls: seconds per tools/call run (default 8)")
    p.add_argument("--list-seconds", type=float, help="calls: seconds per tools/list run (default: half of --seconds)")
    p.add_argument("--connections", type=int, default=32, help="calls and rss: wrk connections (default 32)")
    p.add_argument("--warmup", type=float, default=1, help="seconds of untimed load per server and kind (default 1)")
    p.add_argument("--only", choices=["calls", "scale", "rss"], help="one section only (default: all three)")
    p.add_argument("--tools", default="10,1000,10000", help="scale: tool counts (default 10,1000,10000)")
    p.add_argument("--scale-rounds", type=int, default=1, help="scale: runs per server and kind (default 1)")
    p.add_argument("--scale-seconds", type=float, default=3, help="scale: seconds per run (default 3)")
    p.add_argument("--scale-connections", type=int, default=4, help="scale: wrk connections (default 4)")
    p.add_argument(
        "--scale-timeout",
        type=float,
        default=60,
        help="scale: longest wait for one answer, and for a server to finish what is in flight (default 60 s)",
    )
    p.add_argument("--idle-seconds", type=float, default=10, help="scale: idle CPU window (default 10 s)")
    p.add_argument("--rss-calls", type=int, default=100_000, help="rss: tools/call per server (default 100000)")
    p.add_argument(
        "--rss-max-seconds", type=float, default=50, help="rss: stop a server's run after this long (default 50)"
    )
    p.add_argument("--startup-timeout", type=float, default=120, help="longest wait for a server to answer (120 s)")
    p.add_argument("--request-timeout", type=float, default=30, help="longest wait for one check request (30 s)")
    p.add_argument("--wrk-timeout", type=float, default=10, help="calls and rss: wrk --timeout (default 10 s)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    args = p.parse_args(argv)
    try:
        args.tools = [int(t.replace("_", "")) for t in args.tools.split(",") if t.strip()]
    except ValueError:
        p.error("--tools takes counts separated by commas, e.g. 10,1000,10000")
    if args.list_seconds is None:
        args.list_seconds = max(1.0, args.seconds / 2)
    if args.rounds < 1 or args.seconds < 1 or args.list_seconds < 1 or args.connections < 1 or args.warmup < 1:
        p.error("--rounds, --seconds, --list-seconds, --connections and --warmup must be at least 1")
    if not args.tools or min(args.tools) < 1 or args.scale_rounds < 1 or args.scale_seconds < 1:
        p.error("--tools counts, --scale-rounds and --scale-seconds must be at least 1")
    if args.rss_calls < 1 or args.scale_connections < 1 or args.idle_seconds <= 0:
        p.error("--rss-calls and --scale-connections must be at least 1, --idle-seconds more than 0")
    return args


def main() -> int:
    args = parse_args()
    if not Path("/proc/self/stat").exists():
        sys.stderr.write("bench/http_load.py reads server CPU and RSS from /proc: Linux only\n")
        return 2
    try:
        report = collect(args)
    except BenchError as exc:
        sys.stderr.write(f"\nbench/http_load.py: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; servers stopped, temporary folder removed\n")
        return 130
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 1 if any("error" in report.get(name, {}) for name in ("calls", "scale", "rss")) else 0


if __name__ == "__main__":
    sys.exit(main())
