"""Fuzzing the HTTP transport with the strategies of `tests/support/fuzzing.py`: hypothesis-generated
messages (valid, near-valid and garbage) POSTed to ONE running server in the session era (one session opened
first), in the 2026-07-28 era (each request carrying its `_meta`), and to the legacy SSE transport. After
each example:

* every answer is a status the transport gives (200, 202, 400, 404, 429), and each JSON-RPC message in it
  (JSON or SSE framed) is well formed, echoes no canary and leaks no parser, pydantic or exception text;
* the server still answers a tools/call (no crash, no hang: every request has a timeout);
* no tool the key cannot call ran (the key holds `orders.read`: the testkit's write tools leave no line in
  their execution counter, and the audit log records no `execution` step for a forbidden tool).

Bounded in CI; `QAQNUZ_FUZZ_PROFILE=long uv run pytest -q -m fuzz` runs many more examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpkit import PLUGINS, SseStream
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import check_answer, fuzz_settings, wire_messages
from kit import kit_config
from qaqnuz.testing import ThreadServer, write_config

pytestmark = pytest.mark.fuzz
MODERN = "2026-07-28"
SESSION = "2025-11-25"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
TOOLS = ("echo", "beta_echo", "secret_dump", "disabled_tool", "write_tool", "boom", "big", "create_order", "nope")
FORBIDDEN = frozenset({"write_tool", "create_order", "secret_dump", "disabled_tool"})
STATUSES = (200, 202, 400, 404, 429)


class Fuzzed:
    """One running server, a key that holds `orders.read`, and what a test needs to check it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.key, _ = server.run(server.kernel.keys.mint(brand="acme", scopes=["orders.read"], name="fuzz"))
        self.client = httpx.Client(base_url=server.base, headers={**ACCEPT, "Authorization": f"Bearer {self.key}"},
                                   timeout=20)  # fmt: skip
        self.audit = server.folder / "qaqnuz-audit.jsonl"
        self.counter = server.folder / "testkit-executions.txt"
        self._audit_offset = 0
        hello = {"protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
        opened = self.client.post("/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
        assert opened.status_code == 200, opened.text
        self.session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": SESSION}
        self.client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.session)

    def check(self, response: httpx.Response) -> None:
        assert response.status_code in STATUSES, (response.status_code, response.text[:300])
        if not response.content:
            return
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in response.text.splitlines():
                if line.startswith("data:") and line[5:].strip():
                    check_answer(line[5:])
        else:
            check_answer(response.content)

    def still_serves(self) -> None:
        params = {"name": "echo", "arguments": {"message": "alive"}, "_meta": META}
        call = {"jsonrpc": "2.0", "id": "alive", "method": "tools/call", "params": params}
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
        answer = self.client.post("/mcp", json=call, headers=headers)
        assert answer.status_code == 200 and answer.json()["result"]["structuredContent"]["ok"] is True, answer.text

    def nothing_forbidden_ran(self) -> None:
        assert not self.counter.exists() or self.counter.read_text() == "", "a write tool the key cannot call ran"
        if not self.audit.exists():
            return
        with self.audit.open("rb") as handle:
            handle.seek(self._audit_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._audit_offset += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            if record.get("tool") in FORBIDDEN:
                assert record.get("step") != "execution", record


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    folder = tmp_path_factory.mktemp("fuzz-http")
    text = (
        kit_config(per_key="1000000/60s", per_brand="1000000/60s") + "\n[plugins.http]\nmax_sessions_per_key = 1000\n"
    )
    server = ThreadServer(folder)
    server.start(write_config(folder, text), plugins=PLUGINS)
    try:
        yield Fuzzed(server)
    finally:
        server.stop()


def _modern_headers(body: bytes) -> dict[str, str]:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return {"MCP-Protocol-Version": MODERN, "Mcp-Method": "ping"}
    method = message.get("method") if isinstance(message, dict) else None
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method if isinstance(method, str) else "ping"}
    params = message.get("params") if isinstance(message, dict) else None
    if method == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
        headers["Mcp-Name"] = params["name"]
    return {k: v for k, v in headers.items() if v.isascii() and v.isprintable() and len(v) < 2000}


@fuzz_settings(ci_examples=80)
@given(body=wire_messages(tools=TOOLS))
def test_the_session_era(fuzzed: Fuzzed, body: bytes) -> None:
    fuzzed.check(fuzzed.client.post("/mcp", content=body, headers=fuzzed.session))
    fuzzed.still_serves()
    fuzzed.nothing_forbidden_ran()


@fuzz_settings(ci_examples=80)
@given(body=wire_messages(tools=TOOLS, meta=META))
def test_the_2026_era(fuzzed: Fuzzed, body: bytes) -> None:
    fuzzed.check(fuzzed.client.post("/mcp", content=body, headers=_modern_headers(body)))
    fuzzed.still_serves()
    fuzzed.nothing_forbidden_ran()


@fuzz_settings(ci_examples=40)
@given(bodies=st.lists(wire_messages(tools=TOOLS), min_size=1, max_size=5))
def test_legacy_sse(fuzzed: Fuzzed, bodies: list[bytes]) -> None:
    """POSTs to /messages/ answer 202 or 400 with no leak; the answers on the stream are checked too."""
    stream = SseStream(fuzzed.server.base, {"Authorization": f"Bearer {fuzzed.key}"}, timeout=30)
    endpoint = stream.endpoint
    hello = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
    post = fuzzed.client.post
    assert post(endpoint, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}).status_code == 202
    post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    for body in bodies:
        response = post(endpoint, content=body)
        assert response.status_code in (202, 400), (response.status_code, response.text[:300])
        if response.status_code == 400 and response.headers.get("content-type", "").startswith("application/json"):
            check_answer(response.content)
    assert post(endpoint, json={"jsonrpc": "2.0", "id": "done", "method": "ping"}).status_code == 202
    for message in stream.messages_until("done"):
        check_answer(json.dumps(message))
    fuzzed.still_serves()
    fuzzed.nothing_forbidden_ran()
