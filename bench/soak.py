"""A bounded soak: mixed traffic for a fixed time against `qaqnuz serve --transport http` on PostgreSQL and Redis.

    uv run python bench/soak.py [--minutes 10] [--clients 8] [--warm-up 60s] [--workers N] ...

Starts its own throwaway servers on 127.0.0.1 (`redis-server` and a PostgreSQL cluster, through
`qaqnuz.testservers`), writes a config with the Redis limiter (`[plugins] limiter = "redis"`) and the PostgreSQL
store (`[server] store = "postgresql://..."`), the bench pack (`echo`, and `echo_write` declared a write), three
brands (acme: reads and writes; globex: writes need approval; tiny: a small per-key limit), runs
`qaqnuz store migrate` and `qaqnuz keys create` as an operator would, then `qaqnuz serve --transport http` as a
subprocess, and drives it from several concurrent clients (asyncio + httpx, raw sockets for the slow ones):

  read      2026-07-28 era POSTs: tools/call echo, now and then tools/list (brand acme)
  session   2025-11-25 sessions: initialize + notifications/initialized, 5-30 calls and lists, then DELETE;
            one session in five is abandoned instead (the server's session_idle_timeout reaps it)
  write     2026-07-28 tools/call echo_write (a write: an intent and an outcome audit line each)
  approval  2026-07-28 tools/call echo_write for brand globex, where it needs approval: each new call gets
            `permission` with an approval id; an approver task approves pending requests with
            `qaqnuz approvals approve` every --approve-every; the client re-issues its calls until they run
  burst     a key of brand tiny (per-key limit --burst-limit) hit with --burst-size concurrent calls every
            --burst-every: the excess must come back as `retryable` envelopes (rate limited, or the key's
            calls in flight past [server] max_in_flight_per_key), and no burst may be admitted beyond the limit
  badkey    unknown well-formed keys, a real key id with a wrong secret, bad checksums, malformed strings,
            a revoked key, no key, a bad ?token=, a Basic credential: 401, or 429 once the address is past
            auth_failures_per_minute. 127.0.0.1 is a trusted proxy in the config, and each request names its
            address in X-Forwarded-For: half of them one address (soon throttled: 429), half a new random
            10.x address each (401, so the key checks themselves run, and the throttle's table of addresses
            keeps growing and must be pruned)
  slow      raw sockets: headers dribbled in over ~2 s, a body dribbled in over ~2 s (both must be
            answered), a body that stalls half way (the server's request_timeout must answer 408), and
            sockets that connect and send nothing for --slow-hold (counted as closed by the server or held)

Clients take kinds in the order read, session, write, approval, burst, badkey, slow, then again from read;
--clients below 7 leaves the later kinds out. Every request has a timeout: nothing here can hang.

Every outcome is classified: `ok`; `envelope:<error_class>[/detail]` from the result's structuredContent;
`http:<status>`; `jsonrpc:<code>`; `timeout`; `transport:<exception>`. Each kind of operation has the outcomes
it expects (a rate-limited envelope is expected from the burst client, a 401 from the bad-key client); anything
else, and every ERROR line in the server's log, is UNEXPECTED and makes the exit code 1.

RSS (VmRSS from /proc, summed over the server process and its children, so `--workers` counts every worker)
is read once the warm-up is over and again when the traffic stops. Progress every --progress-every on stderr;
the summary on stdout: calls, calls/s, per operation kind the count and p50/p99 latency, outcomes by class,
RSS at start and end and the change. Exit 0 when nothing unexpected happened and RSS grew by at most
--rss-limit (10 %); 1 otherwise; 2 when it could not start (missing redis-server or PostgreSQL binaries, a
command that failed); 130 on Ctrl-C. Servers, Redis, PostgreSQL and the temporary folder are removed on every
exit. Linux only (/proc). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import http_load
import httpx
from http_load import BIN, LEGACY, MODERN, child_env, event_stream_answer, output_tail, stop_process

from qaqnuz.config import parse_duration, parse_rate
from qaqnuz.envelope import LIMITER_UNAVAILABLE, RATE_LIMITED
from qaqnuz.keys import CHECKSUM_LEN, checksum, new_key, random_b62
from qaqnuz.testservers import PostgresServer, RedisServer, ServerMissing, free_port

META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
ACCEPT = "application/json, text/event-stream"
KINDS = ["read", "session", "write", "approval", "burst", "badkey", "slow"]

CONFIG = """\
[server]
store = "{dsn}"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"
log_level = "warning"

[plugins]
auth = "apikey"
policies = ["scope"]
limiter = "redis"
audit = ["file"]

[plugins.redis]
url = "{redis_url}"
timeout = "1s"

[plugins.http]
access_log = false
metrics = true
request_timeout = "{request_timeout}s"
session_idle_timeout = "{session_idle}s"
auth_failures_per_minute = 30
trusted_proxies = ["127.0.0.1"]

[plans.soak]
entitled = true
limits = {{ per_key = "100000000/1s", per_brand = "100000000/1s" }}

[plans.tight]
entitled = true
limits = {{ per_key = "{burst_limit}", per_brand = "100000000/1s" }}

[brands.acme]
plan = "soak"
roles = {{ viewer = ["echo.read"] }}
tools.echo = {{ exposable = true }}
tools.echo_write = {{ exposable = true }}

[brands.globex]
plan = "soak"
roles = {{ viewer = ["echo.read"] }}
tools.echo = {{ exposable = true }}
tools.echo_write = {{ exposable = true, approval = true }}

[brands.tiny]
plan = "tight"
roles = {{ viewer = ["echo.read"] }}
tools.echo = {{ exposable = true }}

[packs.bench]
type = "bench"
write_tool = true
shared = true
"""

#: The outcomes each kind of operation expects; anything else is unexpected.
EXPECTED: dict[str, set[str]] = {
    "read": {"ok"},
    "list": {"ok"},
    "write": {"ok"},
    "session_open": {"ok"},
    "session_call": {"ok"},
    "session_list": {"ok"},
    "session_close": {"ok"},
    "approval_ask": {"envelope:permission/approval_required"},
    "approval_retry": {"ok", "envelope:permission/approval_required"},
    "approve_cli": {"ok"},
    "burst": {"ok", "envelope:retryable/rate_limited", "envelope:retryable/key_busy"},
    "bad_key": {"http:401", "http:429"},
    "slow_headers": {"ok"},
    "slow_body": {"ok"},
    "slow_stall": {"http:408"},
    "slow_idle": {"closed_by_server", "held_open"},
}

log = partial(http_load.log, width=6)


class SoakError(RuntimeError):
    """Setting up failed; the message says what (with the command's or the server's output)."""


T = TypeVar("T")


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` from one of the config's parsers: its ValueError becomes argparse's error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


duration = argument_type(parse_duration)  # `60s`, `2m`, `500ms`, `1h` or a bare number of seconds
rate = argument_type(parse_rate)  # `10/5s`: (count, window seconds)


# -- /proc -----------------------------------------------------------------------------------------------
def tree_pids(root: int) -> list[int]:
    """`root` and every descendant (the workers of `serve --workers`)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children[ppid].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mb(root: int) -> tuple[float, int]:
    """Summed VmRSS (MB) of `root` and its descendants, and how many processes that is."""
    found = [mb for mb in map(http_load.rss_mb, tree_pids(root)) if mb is not None]
    return sum(found), len(found)


# -- statistics ------------------------------------------------------------------------------------------
@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: list[str] = field(default_factory=list)

    def calls(self) -> int:
        return sum(sum(c.values()) for c in self.outcomes.values())

    def unexpected_count(self) -> int:
        return sum(n for kind, c in self.outcomes.items() for o, n in c.items() if o not in EXPECTED[kind])


class Recorder:
    """Where every outcome goes; the warm-up's and the measured period's figures are kept apart."""

    def __init__(self, expected: dict[str, set[str]]) -> None:
        self.expected = expected
        self.warm = Stats()
        self.current = self.warm
        self.measured: Stats | None = None
        self.examples: dict[tuple[str, str], str] = {}
        self.burst_overadmitted = 0

    def start_measuring(self) -> None:
        self.measured = Stats()
        self.current = self.measured

    def record(self, kind: str, outcome: str, seconds: float, detail: str = "") -> None:
        self.current.outcomes[kind][outcome] += 1
        self.current.latencies[kind].append(seconds)
        if outcome not in self.expected[kind] and (kind, outcome) not in self.examples:
            self.examples[(kind, outcome)] = detail[:400]
            log(f"UNEXPECTED {kind}: {outcome} {detail[:300]}")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# -- answers ---------------------------------------------------------------------------------------------
def decode_answer(text: str, content_type: str) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or an SSE answer."""
    if content_type.startswith("text/event-stream"):
        message = event_stream_answer(text)
        if message is None:
            raise ValueError("no JSON-RPC answer in the event stream")
        return message
    return json.loads(text)


def classify_message(message: dict[str, Any], method: str) -> str:
    if "error" in message:
        return f"jsonrpc:{message['error'].get('code')}"
    result = message.get("result")
    if not isinstance(result, dict):
        return "bad_answer"
    if method == "initialize":
        return "ok" if result.get("protocolVersion") == LEGACY else "bad_answer"
    if method == "tools/list":
        return "ok" if isinstance(result.get("tools"), list) and result["tools"] else "bad_answer"
    structured = result.get("structuredContent") or {}
    if not result.get("isError"):
        return "ok" if structured.get("ok") is True else "bad_answer"
    error_class = structured.get("error_class", "?")
    text = structured.get("sanitized_error", "")
    detail = ""
    if structured.get("approval_id") and "requires approval" in text:
        detail = "approval_required"
    elif text == RATE_LIMITED:
        detail = "rate_limited"
    elif "[server] max_in_flight_per_key" in text:
        detail = "key_busy"  # more calls of one key running at once than the server allows
    elif "[server] max_in_flight" in text:
        detail = "server_busy"
    elif text == LIMITER_UNAVAILABLE:
        detail = "limiter_unavailable"
    elif structured.get("approval_id"):
        detail = "approval_other"
    return f"envelope:{error_class}" + (f"/{detail}" if detail else "")


def classify_response(response: httpx.Response, method: str) -> tuple[str, dict[str, Any] | None]:
    if response.status_code != 200:
        return f"http:{response.status_code}", None
    try:
        message = decode_answer(response.text, response.headers.get("content-type", ""))
    except ValueError:
        return "bad_answer", None
    return classify_message(message, method), message


def classify_exception(exc: BaseException) -> str:
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return f"transport:{type(exc).__name__}"


# -- the deployment --------------------------------------------------------------------------------------
@dataclass
class Deployment:
    folder: Path
    config: Path
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)
    revoked_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"

    def printed(self, limit: int = 4000) -> str:
        return output_tail(self.server_log, limit, "(no output)")

    def cli(self, *args: str, timeout: float = 60) -> str:
        argv = [str(BIN / "qaqnuz"), *args, "--config", str(self.config)]
        proc = subprocess.run(argv, env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            raise SoakError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def mint(self, brand: str, name: str) -> str:
        key = self.cli("keys", "create", "--brand", brand, "--scope", "echo.read", "--name", name).strip()
        if not key.startswith("qx_"):
            raise SoakError(f"keys create printed no key: {key!r}")
        return key


def make_env(pycache: Path) -> dict[str, str]:
    return child_env(
        pycache, {"QAQNUZ_DISABLE_PLUGIN_AUTOLOAD": "1", "QAQNUZ_PLUGINS": "http,redis,postgres,bench.bench_pack"}
    )


def set_up(args: argparse.Namespace, folder: Path, dsn: str, redis_url: str, plan: list[str]) -> Deployment:
    env = make_env(folder / "pycache")
    home = folder / "qaqnuz"
    qaqnuz = str(BIN / "qaqnuz")
    done = subprocess.run([qaqnuz, "init", "--dir", str(home)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SoakError(f"qaqnuz init failed:\n{done.stdout}{done.stderr}")
    config = home / "qaqnuz.toml"
    config.write_text(CONFIG.format(dsn=dsn, redis_url=redis_url, request_timeout=args.request_timeout,
                                    session_idle=args.session_idle, burst_limit=args.burst_limit_text),
                      encoding="utf-8")  # fmt: skip
    deployment = Deployment(home, config, env)
    deployment.cli("config", "check")
    deployment.cli("store", "migrate")
    counts = Counter(plan)
    for kind, count in counts.items():
        for i in range(count):
            brand = {"approval": "globex", "burst": "tiny"}.get(kind, "acme")
            deployment.keys[f"{kind}-{i}"] = deployment.mint(brand, f"soak-{kind}-{i}")
    deployment.keys["spare"] = deployment.mint("acme", "soak-spare")
    revoked = deployment.mint("acme", "soak-revoked")
    deployment.cli("keys", "revoke", revoked.split("_")[2])
    deployment.revoked_key = revoked
    log(f"minted {len(deployment.keys) + 1} keys (one revoked) with qaqnuz keys create")
    return deployment


def start_server(deployment: Deployment, args: argparse.Namespace) -> None:
    deployment.port = free_port()
    argv = [str(BIN / "qaqnuz"), "serve", "--transport", "http", "--port", str(deployment.port),
            "--config", str(deployment.config)]  # fmt: skip
    if args.workers:
        argv += ["--workers", str(args.workers)]
    with deployment.server_log.open("wb") as out:
        deployment.proc = subprocess.Popen(
            argv, cwd=deployment.folder, env=deployment.env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches the soak only; it stops the server
        )  # fmt: skip
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if deployment.proc.poll() is not None:
                raise SoakError(f"qaqnuz serve exited with {deployment.proc.returncode}:\n{deployment.printed()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{deployment.port}/readyz").status_code == 200:
                    return
            time.sleep(0.1)
    raise SoakError(f"qaqnuz serve did not answer /readyz with 200 within 90 s:\n{deployment.printed()}")


# -- traffic ---------------------------------------------------------------------------------------------
class Soak:
    def __init__(self, args: argparse.Namespace, deployment: Deployment, recorder: Recorder) -> None:
        self.args = args
        self.d = deployment
        self.rec = recorder
        self.stop = asyncio.Event()
        self.rng = random.Random(args.seed)
        self.think = args.think_ms / 1000
        self.timeout = httpx.Timeout(args.timeout)
        self.approvals_approved = 0
        self.approved_calls_ran = 0
        self.counter = 0

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def modern_headers(self, key: str | None, method: str, name: str | None = None) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                   "Mcp-Method": method}  # fmt: skip
        if name:
            headers["Mcp-Name"] = name
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def modern_body(self, method: str, name: str | None = None, arguments: dict[str, Any] | None = None) -> bytes:
        params: dict[str, Any] = {"_meta": META}
        if name is not None:
            params |= {"name": name, "arguments": arguments or {}}
        return json.dumps({"jsonrpc": "2.0", "id": self.next_id(), "method": method, "params": params}).encode()

    async def exchange(self, client: httpx.AsyncClient, kind: str, method: str, *, headers: dict[str, str],
                       content: bytes | None = None, verb: str = "POST", url: str | None = None,
                       ) -> tuple[str, dict[str, Any] | None, httpx.Response | None]:  # fmt: skip
        """One request with an overall deadline; its outcome recorded under `kind`."""
        begun = time.perf_counter()
        response = None
        try:
            response = await asyncio.wait_for(
                client.request(verb, url or self.d.url, headers=headers, content=content), self.args.timeout + 5
            )
            if method == "close":
                outcome, message = ("ok" if response.status_code in (200, 202, 204) else
                                    f"http:{response.status_code}"), None  # fmt: skip
            else:
                outcome, message = classify_response(response, method)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is an outcome, never a crash
            outcome, message = classify_exception(exc), None
            self.rec.record(kind, outcome, time.perf_counter() - begun, repr(exc))
            return outcome, None, None
        detail = f"HTTP {response.status_code} {response.text[:300]!r}"
        self.rec.record(kind, outcome, time.perf_counter() - begun, detail)
        return outcome, message, response

    async def call(self, client: httpx.AsyncClient, kind: str, key: str, tool: str,
                   arguments: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:  # fmt: skip
        outcome, message, _ = await self.exchange(
            client, kind, "tools/call", headers=self.modern_headers(key, "tools/call", tool),
            content=self.modern_body("tools/call", tool, arguments),
        )  # fmt: skip
        return outcome, message

    # -- the clients --
    async def reader(self, key: str) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                if n % 10 == 0:
                    await self.exchange(client, "list", "tools/list", headers=self.modern_headers(key, "tools/list"),
                                        content=self.modern_body("tools/list"))  # fmt: skip
                else:
                    await self.call(client, "read", key, "echo", {"text": f"read {n}"})
                await self.pause(self.think)

    async def writer(self, key: str) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                await self.call(client, "write", key, "echo_write", {"text": f"write {n} {self.rng.random()}"})
                await self.pause(self.think)

    async def session_client(self, key: str) -> None:
        base = {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        while not self.stop.is_set():
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                init = {"jsonrpc": "2.0", "id": self.next_id(), "method": "initialize",
                        "params": {"protocolVersion": LEGACY, "capabilities": {},
                                   "clientInfo": {"name": "soak", "version": "1"}}}  # fmt: skip
                outcome, _message, response = await self.exchange(
                    client, "session_open", "initialize", headers=base, content=json.dumps(init).encode()
                )
                session = response.headers.get("mcp-session-id") if response is not None else None
                if outcome != "ok" or not session:
                    await self.pause(1.0)
                    continue
                headers = base | {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
                note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.post(self.d.url, headers=headers, content=note), self.args.timeout)
                for i in range(self.rng.randint(5, 30)):
                    if self.stop.is_set():
                        break
                    if i % 8 == 7:
                        body = {"jsonrpc": "2.0", "id": self.next_id(), "method": "tools/list", "params": {}}
                        kind, method = "session_list", "tools/list"
                    else:
                        body = {"jsonrpc": "2.0", "id": self.next_id(), "method": "tools/call",
                                "params": {"name": "echo", "arguments": {"text": f"session {i}"}}}  # fmt: skip
                        kind, method = "session_call", "tools/call"
                    outcome, _, _ = await self.exchange(client, kind, method, headers=headers,
                                                        content=json.dumps(body).encode())  # fmt: skip
                    if outcome == "http:404":  # the session is gone (another worker under --workers)
                        break
                    await self.pause(self.think)
                if self.rng.random() < 0.2:
                    continue  # abandoned: the server's session_idle_timeout has to reap it
                await self.exchange(client, "session_close", "close", headers=headers, verb="DELETE")

    async def approval_client(self, key: str) -> None:
        outstanding: dict[str, str] = {}  # text -> approval id
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                if len(outstanding) < 8:
                    text = f"order {n} {self.rng.random()}"
                    outcome, message = await self.call(client, "approval_ask", key, "echo_write", {"text": text})
                    if outcome == "envelope:permission/approval_required" and message:
                        outstanding[text] = message["result"]["structuredContent"]["approval_id"]
                await self.pause(self.think * 10)
                if outstanding:
                    text = next(iter(outstanding))
                    outstanding.pop(text)
                    outcome, _ = await self.call(client, "approval_retry", key, "echo_write", {"text": text})
                    if outcome == "ok":
                        self.approved_calls_ran += 1
                    elif outcome == "envelope:permission/approval_required":
                        outstanding[text] = ""  # still pending: to the back of the queue
                await self.pause(self.think * 10)

    async def approver(self) -> None:
        """An operator: every --approve-every, `qaqnuz approvals list` and `approve` for brand globex."""
        while not self.stop.is_set():
            await self.pause(self.args.approve_every)
            if self.stop.is_set():
                return
            listed = await self.run_cli("approvals", "list", "--json", "--brand", "globex")
            if listed is None:
                continue
            try:
                requests = json.loads(listed)
                if isinstance(requests, dict):
                    requests = requests.get("approvals") or requests.get("requests") or []
                pending = [r["approval_id"] for r in requests if r.get("status") == "pending"]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.rec.record("approve_cli", "bad_answer", 0.0, f"{exc!r}: {listed[:300]!r}")
                continue
            for approval_id in pending[: self.args.approve_batch]:
                if self.stop.is_set():
                    return
                if await self.run_cli("approvals", "approve", approval_id, "--reason", "soak") is not None:
                    self.approvals_approved += 1

    async def run_cli(self, *args: str) -> str | None:
        begun = time.perf_counter()
        argv = [str(BIN / "qaqnuz"), *args, "--config", str(self.d.config)]
        pipe = asyncio.subprocess.PIPE
        proc = await asyncio.create_subprocess_exec(*argv, env=self.d.env, cwd=self.d.folder, stdout=pipe, stderr=pipe)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if asyncio.current_task() is not None and self.stop.is_set():
                return None
            self.rec.record("approve_cli", "timeout", time.perf_counter() - begun, " ".join(args))
            return None
        if proc.returncode != 0:
            detail = f"{' '.join(args)}: exit {proc.returncode}: {(out + err).decode(errors='replace')[:300]}"
            self.rec.record("approve_cli", f"exit:{proc.returncode}", time.perf_counter() - begun, detail)
            return None
        self.rec.record("approve_cli", "ok", time.perf_counter() - begun)
        return out.decode()

    async def burster(self, key: str) -> None:
        limit, _window = self.args.burst_limit
        limits = httpx.Limits(max_connections=self.args.burst_size, max_keepalive_connections=self.args.burst_size)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                results = await asyncio.gather(*(
                    self.call(client, "burst", key, "echo", {"text": f"burst {n}.{i}"})
                    for i in range(self.args.burst_size)
                ))  # fmt: skip
                admitted = sum(1 for outcome, _ in results if outcome == "ok")
                if admitted > limit:
                    self.rec.burst_overadmitted += 1
                    log(f"UNEXPECTED burst {n}: {admitted} calls admitted, the per-key limit is {limit}")
                await self.pause(self.args.burst_every)

    def bad_key(self) -> tuple[str, dict[str, str], str]:
        """(variant, extra headers, query string) for one request with a bad credential."""
        good = self.d.keys["spare"]
        prefix = good[: good.index("_", good.index("_") + 1) + 1]  # "qx_live_"
        variant = self.rng.choice(["unknown", "wrong_secret", "bad_checksum", "malformed", "revoked", "none",
                                   "query_unknown", "not_bearer"])  # fmt: skip
        if variant == "unknown":
            value = new_key(prefix).raw
        elif variant == "wrong_secret":
            body = f"{prefix}{good.split('_')[2]}_{random_b62(43)}"
            value = body + checksum(body)
        elif variant == "bad_checksum":
            value = good[:-CHECKSUM_LEN] + ("000000" if not good.endswith("000000") else "111111")
        elif variant == "malformed":
            alphabet = string.ascii_letters + string.digits + "-._~+/="
            value = "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 200)))
        elif variant == "revoked":
            value = self.d.revoked_key
        elif variant == "query_unknown":
            return variant, {}, f"?token={new_key(prefix).raw}"
        elif variant == "not_bearer":
            return variant, {"Authorization": f"Basic {random_b62(20)}"}, ""
        else:
            return variant, {}, ""
        return variant, {"Authorization": f"Bearer {value}"}, ""

    async def badkey_client(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while not self.stop.is_set():
                _variant, extra, query = self.bad_key()
                headers = self.modern_headers(None, "tools/call", "echo") | extra
                # Half from one address (past auth_failures_per_minute: 429), half each from a new one (401).
                headers["X-Forwarded-For"] = (
                    "10.0.0.1" if self.rng.random() < 0.5 else
                    f"10.{self.rng.randrange(1, 255)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
                )  # fmt: skip
                await self.exchange(client, "bad_key", "tools/call", headers=headers,
                                    content=self.modern_body("tools/call", "echo", {"text": "x"}),
                                    url=self.d.url + query)  # fmt: skip
                await self.pause(self.think * 5)

    # -- slow clients, on raw sockets --
    def raw_request(self, key: str) -> tuple[bytes, bytes]:
        body = self.modern_body("tools/call", "echo", {"text": "slow"})
        head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.d.port}\r\nAuthorization: Bearer {key}\r\n"
                f"Accept: {ACCEPT}\r\nContent-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\n"
                f"Mcp-Method: tools/call\r\nMcp-Name: echo\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()  # fmt: skip
        return head, body

    async def on_socket(
        self, kind: str, talk: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[tuple[str, str]]]
    ) -> None:
        """`talk` on a new socket to the server, its (outcome, detail) recorded under `kind`; the socket closed."""
        begun = time.perf_counter()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.d.port), 10)
            outcome, detail = await talk(reader, writer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome, detail = classify_exception(exc), repr(exc)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
        self.rec.record(kind, outcome, time.perf_counter() - begun, detail)

    async def raw(self, kind: str, key: str) -> None:
        """slow_headers / slow_body / slow_stall on one socket; the answer read until the server closes."""
        head, body = self.raw_request(key)

        async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, str]:
            if kind == "slow_headers":
                pieces = [head[i : i + 16] for i in range(0, len(head), 16)]
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(2.0 / len(pieces))
                writer.write(body)
            elif kind == "slow_body":
                writer.write(head)
                pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
                for piece in pieces:
                    await asyncio.sleep(2.0 / len(pieces))
                    writer.write(piece)
                    await writer.drain()
            else:  # slow_stall: half the body, then nothing
                writer.write(head + body[: len(body) // 2])
            await writer.drain()
            wait = self.args.request_timeout + 10 if kind == "slow_stall" else self.args.timeout
            answer = await asyncio.wait_for(reader.read(-1), wait)
            return self.raw_outcome(answer), answer[:300].decode(errors="replace")

        await self.on_socket(kind, talk)

    @staticmethod
    def raw_outcome(answer: bytes) -> str:
        if not answer:
            return "closed_by_server"
        match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        if not match:
            return "bad_answer"
        status = int(match.group(1))
        if status != 200:
            return f"http:{status}"
        head, _, body = answer.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = b"".join(body.split(b"\r\n")[1::2])
        try:
            content_type = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                                 if line.lower().startswith(b"content-type:")), "")  # fmt: skip
            return classify_message(decode_answer(body.decode(), content_type), "tools/call")
        except (ValueError, UnicodeDecodeError):
            return "bad_answer"

    async def idle_socket(self) -> None:
        """Connect and send nothing for --slow-hold; closed by the server, or still held when we give up."""

        async def talk(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> tuple[str, str]:
            try:
                data = await asyncio.wait_for(reader.read(1024), self.args.slow_hold)
            except TimeoutError:
                return "held_open", ""
            return ("closed_by_server" if not data else self.raw_outcome(data)), data[:300].decode(errors="replace")

        await self.on_socket("slow_idle", talk)

    async def slow_client(self, key: str) -> None:
        async def idles() -> None:
            while not self.stop.is_set():
                await asyncio.gather(*(self.idle_socket() for _ in range(self.args.idle_sockets)))

        async def slows() -> None:
            while not self.stop.is_set():
                for kind in ("slow_headers", "slow_body", "slow_stall"):
                    if self.stop.is_set():
                        return
                    await self.raw(kind, key)
                    await self.pause(1.0)

        await asyncio.gather(idles(), slows())

    # -- running --
    def tasks(self, plan: list[str]) -> list[asyncio.Task[None]]:
        made = []
        index: Counter[str] = Counter()
        for kind in plan:
            key = self.d.keys.get(f"{kind}-{index[kind]}", "")
            index[kind] += 1
            coro = {"read": self.reader, "session": self.session_client, "write": self.writer,
                    "approval": self.approval_client, "burst": self.burster, "slow": self.slow_client,
                    }.get(kind)  # fmt: skip
            made.append(asyncio.create_task(self.badkey_client() if kind == "badkey" else coro(key)))  # type: ignore[misc]
        if "approval" in plan:
            made.append(asyncio.create_task(self.approver()))
        return made


async def drive(
    args: argparse.Namespace, deployment: Deployment, plan: list[str], recorder: Recorder
) -> dict[str, Any]:
    soak = Soak(args, deployment, recorder)
    assert deployment.proc is not None
    pid = deployment.proc.pid
    tasks = soak.tasks(plan)
    figures: dict[str, Any] = {}
    measure_s = args.minutes * 60
    try:
        log(f"warm-up: {args.warm_up:.0f} s of traffic before RSS is read")
        await asyncio.sleep(args.warm_up)
        if deployment.proc.poll() is not None:
            raise SoakError(f"the server exited during the warm-up:\n{deployment.printed()}")
        figures["rss_start"], figures["processes"] = rss_mb(pid)
        recorder.start_measuring()
        measured = recorder.measured
        assert measured is not None
        begun = time.monotonic()
        log(f"measuring for {measure_s / 60:g} min; RSS at start {figures['rss_start']:.1f} MB "
            f"({figures['processes']} process{'es' if figures['processes'] > 1 else ''})")  # fmt: skip
        last_t, last_calls = begun, 0
        figures["rss_max"] = figures["rss_start"]
        while (left := begun + measure_s - time.monotonic()) > 0:
            await asyncio.sleep(min(args.progress_every, left))
            if deployment.proc.poll() is not None:
                raise SoakError(f"the server exited with {deployment.proc.returncode}:\n{deployment.printed()}")
            now, calls = time.monotonic(), measured.calls()
            rss, _ = rss_mb(pid)
            figures["rss_max"] = max(figures["rss_max"], rss)
            log(f"{(now - begun) / 60:4.1f} min: {calls:,} calls ({(calls - last_calls) / (now - last_t):,.0f}/s "
                f"lately, {calls / (now - begun):,.0f}/s overall), unexpected {measured.unexpected_count()}, "
                f"RSS {rss:.1f} MB ({(rss / figures['rss_start'] - 1) * 100:+.1f} %)")  # fmt: skip
            last_t, last_calls = now, calls
        figures["rss_end"], _ = rss_mb(pid)
        figures["seconds"] = time.monotonic() - begun
    finally:
        soak.stop.set()
        _done, pending = await asyncio.wait(tasks, timeout=args.timeout + args.slow_hold + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    figures["approvals_approved"] = soak.approvals_approved
    figures["approved_calls_ran"] = soak.approved_calls_ran
    return figures


# -- the report ------------------------------------------------------------------------------------------
def server_log_errors(deployment: Deployment) -> list[str]:
    try:
        lines = deployment.server_log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if re.search(r"\b(ERROR|CRITICAL)\b|Traceback", ln)]


def report(args: argparse.Namespace, recorder: Recorder, figures: dict[str, Any], log_errors: list[str]) -> int:
    stats = recorder.measured or recorder.warm
    seconds = figures.get("seconds") or 1.0
    calls = stats.calls()
    out = sys.stdout
    out.write(f"\nsoak: qaqnuz serve --transport http{f' --workers {args.workers}' if args.workers else ''}, "
              f"PostgreSQL store, Redis limiter; {len(args.plan)} clients ({', '.join(args.plan)})\n")  # fmt: skip
    out.write(f"measured {seconds / 60:.1f} min after a {args.warm_up:.0f} s warm-up: {calls:,} calls, "
              f"{calls / seconds:,.1f} calls/s\n\n")  # fmt: skip
    out.write(f"  {'operation':<16}{'count':>10}{'p50 ms':>10}{'p99 ms':>10}  outcomes\n")
    for kind in EXPECTED:
        if kind not in stats.outcomes:
            continue
        lat = stats.latencies[kind]
        outcomes = ", ".join(f"{o} {n:,}" + ("" if o in EXPECTED[kind] else " (UNEXPECTED)")
                             for o, n in stats.outcomes[kind].most_common())  # fmt: skip
        out.write(f"  {kind:<16}{len(lat):>10,}{percentile(lat, 50) * 1000:>10.1f}{percentile(lat, 99) * 1000:>10.1f}"
                  f"  {outcomes}\n")  # fmt: skip
    by_class: Counter[str] = Counter()
    for counter in stats.outcomes.values():
        by_class.update({o: n for o, n in counter.items() if o != "ok"})
    out.write("\n  outcomes other than ok, by class (all operations): ")
    out.write(", ".join(f"{o} {n:,}" for o, n in by_class.most_common()) or "none")
    out.write("\n")
    out.write(f"  approvals (whole run): {figures.get('approvals_approved', 0)} approved with `qaqnuz approvals "
              f"approve`, {figures.get('approved_calls_ran', 0)} approved calls re-issued and run\n")  # fmt: skip
    warm_unexpected = recorder.warm.unexpected_count()
    unexpected = stats.unexpected_count() + (warm_unexpected if recorder.measured else 0)
    out.write(f"  warm-up: {recorder.warm.calls():,} calls, {warm_unexpected} unexpected\n")
    rss_ok = True
    if "rss_start" in figures and "rss_end" in figures:
        start, end = figures["rss_start"], figures["rss_end"]
        change = (end / start - 1) * 100
        rss_ok = change <= args.rss_limit
        out.write(f"  RSS (VmRSS, {figures['processes']} process{'es' if figures['processes'] > 1 else ''}): "
                  f"start {start:.1f} MB (after warm-up), end {end:.1f} MB, change {change:+.1f} % "
                  f"(max seen {figures['rss_max']:.1f} MB): "
                  f"{'within' if rss_ok else 'NOT within'} {args.rss_limit:g} %\n")  # fmt: skip
    out.write(f"  server log: {len(log_errors)} ERROR/CRITICAL/Traceback line(s)\n")
    for line in log_errors[:5]:
        out.write(f"    {line[:300]}\n")
    if recorder.burst_overadmitted:
        out.write(f"  UNEXPECTED: {recorder.burst_overadmitted} burst(s) admitted beyond the per-key limit\n")
    if recorder.examples:
        out.write("  UNEXPECTED outcomes, first example of each:\n")
        for (kind, outcome), detail in recorder.examples.items():
            out.write(f"    {kind} {outcome}: {detail[:300]}\n")
    failed = unexpected or recorder.burst_overadmitted or log_errors or not rss_ok
    verdict = "FAIL" if failed else "PASS"
    reasons = []
    if unexpected:
        reasons.append(f"{unexpected} unexpected outcome(s)")
    if recorder.burst_overadmitted:
        reasons.append("limit exceeded")
    if log_errors:
        reasons.append("errors in the server log")
    if not rss_ok:
        reasons.append(f"RSS grew more than {args.rss_limit:g} %")
    out.write(f"\n{verdict}{': ' + '; '.join(reasons) if reasons else ''}\n")
    out.flush()
    return 1 if failed else 0


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description="A bounded soak: mixed traffic from several clients against `qaqnuz serve --transport http` "
        "with the Redis limiter and the PostgreSQL store (both started here, on 127.0.0.1); prints calls, "
        "outcomes by class, p50/p99 per operation and RSS at start (after the warm-up) and end.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time, after the warm-up")
    parser.add_argument("--warm-up", type=duration, default=60.0, help="traffic before RSS is first read (60s, 2m)")
    parser.add_argument(
        "--clients",
        type=int,
        default=8,
        help="concurrent clients; kinds in turn: " + ", ".join(KINDS) + ", then read again",
    )
    parser.add_argument("--workers", type=int, default=0, help="pass --workers N to qaqnuz serve (0: leave it out)")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=20.0,
        help="pause after each call of a read, write or session client (approval 10x, bad keys 5x)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds any one request may take")
    parser.add_argument("--burst-size", type=int, default=30, help="concurrent calls in one burst")
    parser.add_argument("--burst-every", type=duration, default=5.0, help="pause between bursts")
    parser.add_argument(
        "--burst-limit", type=rate, default="10/5s", help="brand tiny's per-key limit, the one the bursts hit"
    )
    parser.add_argument(
        "--approve-every",
        type=duration,
        default=10.0,
        help="how often the operator lists and approves pending requests",
    )
    parser.add_argument("--approve-batch", type=int, default=4, help="approvals at most per round (one CLI run each)")
    parser.add_argument(
        "--slow-hold", type=duration, default=20.0, help="how long an idle socket waits for the server to close it"
    )
    parser.add_argument("--idle-sockets", type=int, default=2, help="idle sockets the slow client holds at once")
    parser.add_argument(
        "--request-timeout",
        type=duration,
        default=5.0,
        help="[plugins.http] request_timeout (a stalled body must get 408 after it)",
    )
    parser.add_argument(
        "--session-idle",
        type=duration,
        default=60.0,
        help="[plugins.http] session_idle_timeout (reaps the abandoned sessions)",
    )
    parser.add_argument("--progress-every", type=duration, default=30.0, help="progress line interval")
    parser.add_argument("--rss-limit", type=float, default=10.0, help="allowed RSS growth, in %%, start to end")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (config, server log, audit)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.minutes <= 0:
        parser.error("--clients must be 1 or more and --minutes above 0")
    args.burst_limit_text = f"{args.burst_limit[0]}/{args.burst_limit[1]:g}s"
    args.plan = [KINDS[i % len(KINDS)] for i in range(args.clients)]
    args.request_timeout = max(1, round(args.request_timeout))
    args.session_idle = max(1, round(args.session_idle))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("soak: needs Linux (/proc) to read the server's RSS", file=sys.stderr)
        return 2
    if args.workers > 1:
        EXPECTED["session_call"] |= {"http:404"}  # a session's later connection may reach another worker
        EXPECTED["session_list"] |= {"http:404"}
        EXPECTED["session_close"] |= {"http:404"}
    folder = Path(tempfile.mkdtemp(prefix="qaqnuz-soak-"))
    redis = postgres = None
    deployment: Deployment | None = None
    recorder = Recorder(EXPECTED)

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        try:
            redis = RedisServer()
            postgres = PostgresServer()
        except ServerMissing as exc:
            print(f"soak: cannot run: {exc}", file=sys.stderr)
            return 2
        redis.start()
        postgres.start()
        dsn = postgres.create_database("qaqnuz")
        log(f"redis-server on port {redis.port}, PostgreSQL on port {postgres.port}; folder {folder}")
        deployment = set_up(args, folder, dsn, redis.url, args.plan)
        start_server(deployment, args)
        log(f"qaqnuz serve (pid {deployment.proc.pid if deployment.proc else '?'}) ready on {deployment.url}")
        figures = asyncio.run(drive(args, deployment, args.plan, recorder))
        return report(args, recorder, figures, server_log_errors(deployment))
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if deployment is not None and deployment.proc is not None:
            with contextlib.suppress(Exception):
                stop_process(deployment.proc, 40, group=True)
        for server in (redis, postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()
        if args.keep:
            print(f"soak: kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
