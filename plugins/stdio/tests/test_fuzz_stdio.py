"""Fuzzing a real `qaqnuz-mcp` over stdio: hypothesis-generated lines (valid, near-valid and
garbage JSON-RPC, from `tests/support/fuzzing.py`) fed to ONE server per module and fast-path setting,
already initialized. After each example:

* every answer line is a well-formed JSON-RPC 2.0 response that echoes no canary (outside its id and a
  successful tool payload) and leaks no exception, parser or pydantic text (`fuzzing.check_answer`);
* a `ping` sent after the example is answered (no hang, no crash);
* no tool the key cannot call ran: the key holds `orders.read` only, so the testkit's write tools never leave
  a line in its execution counter file, and the audit log never records an `execution` step (intent or
  outcome) for a tool outside the key's reach.

The CI profile bounds the run; `QAQNUZ_FUZZ_PROFILE=long uv run pytest -q -m fuzz` runs many more examples.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

SUPPORT = Path(__file__).resolve().parents[3] / "tests" / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from fuzzing import canaries_in, check_answer, encode, fuzz_settings, json_objects, requests, wire_messages  # noqa: E402
from kit import kit_config, server_env  # noqa: E402
from qaqnuz.testing import start_kernel, write_config  # noqa: E402

pytestmark = pytest.mark.fuzz
BIN = Path(sys.executable).parent
#: Every testkit tool, plus one no pack has.
TOOLS = ("echo", "beta_echo", "secret_dump", "disabled_tool", "hidden_tool", "write_tool", "boom",
         "flaky_upstream", "big", "create_order", "routed", "deploy", "whoami")  # fmt: skip
#: What a key holding only `orders.read` must never run: write tools (need `orders.write`), a sensitive
#: tool, a disabled one and one never made exposable.
FORBIDDEN = frozenset({"write_tool", "create_order", "deploy", "secret_dump", "disabled_tool", "hidden_tool"})
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
ANSWER_TIMEOUT = 20.0


class StdioServer:
    """One `qaqnuz-mcp` subprocess, its stdout read line by line on a thread (so reads can time out)."""

    def __init__(self, folder: Path, config: Path, key: str) -> None:
        self.folder = folder
        self.counter = folder / "testkit-executions.txt"
        self.audit = folder / "qaqnuz-audit.jsonl"
        self._audit_offset = 0
        self._stderr = (folder / "stderr.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "qaqnuz-mcp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=server_env(config, key),
        )  # fmt: skip
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._ids = itertools.count()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def write(self, raw: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(raw)
        self.proc.stdin.flush()

    def next_line(self, timeout: float = ANSWER_TIMEOUT) -> bytes:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout}s: the server hangs") from None
        if not line:
            raise AssertionError(f"the server closed stdout (exit code {self.proc.poll()}): it crashed")
        return line

    def exchange(self, lines: list[bytes]) -> list[bytes]:
        """Send `lines`, then a ping; every line read before the ping's answer (and the answer itself, which
        must be a result) is returned, the ping's answer last."""
        sentinel = f"sentinel-{next(self._ids)}"
        self.write(b"".join(line + b"\n" for line in lines))
        self.write(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "ping"}).encode() + b"\n")
        answers = []
        while True:
            line = self.next_line()
            answers.append(line)
            decoded = json.loads(line)
            if isinstance(decoded, dict) and decoded.get("id") == sentinel:
                assert decoded.get("result") == {}, f"the ping after the example failed: {line[:300]!r}"
                return answers

    def new_audit_records(self) -> list[dict]:
        if not self.audit.exists():
            return []
        with self.audit.open("rb") as handle:
            handle.seek(self._audit_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._audit_offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def assert_nothing_forbidden_ran(self) -> None:
        executions = self.counter.read_text() if self.counter.exists() else ""
        assert executions == "", f"a write tool the key cannot call ran: {executions!r}"
        for record in self.new_audit_records():
            if record.get("tool") in FORBIDDEN:
                assert record.get("step") != "execution", f"a forbidden tool reached execution: {record}"

    def close(self) -> tuple[int, bytes]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        self._stderr.close()
        return code, (self.folder / "stderr.log").read_bytes()


async def _viewer_key(config: Path) -> str:
    kernel = await start_kernel(config, plugins=["stdio", "testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="fuzz", role="viewer")
    finally:
        await kernel.aclose()
    return str(key)


@pytest.fixture(scope="module", params=[True, False], ids=["fast_path", "sdk_path"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioServer]:
    folder = tmp_path_factory.mktemp("fuzz-stdio")
    # limits far above what a run sends, so calls reach the steps past the rate limit
    text = kit_config(per_key="1000000/60s", per_brand="1000000/60s")
    text += f"\n[plugins.stdio]\nfast_path = {str(request.param).lower()}\n"
    config = write_config(folder, text)
    key = asyncio.run(_viewer_key(config))
    srv = StdioServer(folder, config, key)
    try:
        srv.write(
            json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": HELLO}).encode() + b"\n"
        )
        opened = json.loads(srv.next_line())
        assert opened["id"] == "init" and "result" in opened, opened
        srv.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        yield srv
    finally:
        code, stderr = srv.close()
    assert code == 0, stderr.decode(errors="replace")[-3000:]
    assert not canaries_in(stderr.decode(errors="replace")), "the server logged the caller's input"
    # A traceback in the log is only ever a tool's dependency failure, logged with its incident id on purpose.
    logged = stderr.decode(errors="replace")
    assert logged.count("Traceback") <= logged.count("dependency failure (incident"), logged[-3000:]


def test_the_checks_see_an_allowed_call_run(server: StdioServer) -> None:
    """The audit reader is not blind: an allowed call shows up as an `execution` record."""
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hi"}},
    }
    answers = server.exchange([json.dumps(call).encode()])
    assert json.loads(answers[0])["result"]["structuredContent"]["data"]["message"] == "hi"
    assert any(r.get("tool") == "echo" and r.get("step") == "execution" for r in server.new_audit_records()), (
        "no execution record for an allowed call"
    )


@fuzz_settings(ci_examples=120)
@given(lines=st.lists(wire_messages(tools=TOOLS), min_size=1, max_size=4))
def test_fuzzed_lines_get_well_formed_answers_and_the_server_goes_on(server: StdioServer, lines: list[bytes]) -> None:
    for answer in server.exchange(lines):
        check_answer(answer)
    server.assert_nothing_forbidden_ran()


@fuzz_settings(ci_examples=40)
@given(
    calls=st.lists(
        requests(methods=["tools/call"], tools=sorted(FORBIDDEN), arguments=json_objects(huge=False)),
        min_size=1, max_size=5,
    ),
    sku=st.text(min_size=1, max_size=10),
    qty=st.integers(1, 10**6),
)  # fmt: skip
def test_no_tool_outside_the_keys_reach_runs(server: StdioServer, calls: list[dict], sku: str, qty: int) -> None:
    """Calls of forbidden tools, half of them with arguments their schema accepts, are all refused."""
    lines = [encode(call) for call in calls]
    valid = {"create_order": {"sku": sku, "qty": qty}, "deploy": {"target": sku}}
    lines += [
        encode({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": name, "arguments": args}})
        for n, (name, args) in enumerate(valid.items())
    ]
    answers = [check_answer(line) for line in server.exchange(lines)]
    for answer in answers[:-1]:  # the last is the ping
        if "result" in answer:
            assert answer["result"]["isError"] is True, answer
            assert answer["result"]["structuredContent"]["error_class"] in ("permission", "validation"), answer
    server.assert_nothing_forbidden_ran()
