"""`qaqnuz serve` as users run it, with `[server] log_format`: one request followed by its id from the access
line to the kernel's log line and the audit record, and no log line a client can forge, whoever writes it
(our access line, the kernel, uvicorn, the MCP SDK)."""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from httpkit import qaqnuz_cli
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kit import kit_config

pytestmark = pytest.mark.anyio

FORGED = "1999-01-01 00:00:00,000 CRITICAL qaqnuz.http.access: FORGED"
TEXT_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (req_\w{16}|-) (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: "
)


def _config(log_format: str, level: str = "info") -> str:
    return kit_config().replace("[server]\n", f'[server]\nlog_format = "{log_format}"\nlog_level = "{level}"\n', 1)


async def _mint(config: Path) -> str:
    minted = await anyio.to_thread.run_sync(
        qaqnuz_cli, config, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "logs"
    )
    assert minted.returncode == 0, minted.stderr
    return minted.stdout.strip()


async def _stop(server: Any) -> list[str]:
    server.process.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=20)) == 0
    await anyio.sleep(0.2)  # the reader thread drains stderr
    return "".join(server.stderr_lines).splitlines()


async def test_one_request_id_from_the_access_line_to_the_log_line_and_the_audit_record(serve_subprocess):
    server = serve_subprocess(_config("json"))
    key = await _mint(server.config)
    answered: dict[str, str] = {}  # X-Request-Id -> the JSON-RPC method it answered

    async def seen(response: httpx2.Response) -> None:
        try:
            method = json.loads(response.request.content).get("method", "?")
        except ValueError:
            method = "-"
        answered[response.headers["x-request-id"]] = method

    def http() -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, event_hooks={"response": [seen]})

    for mode in ("auto", "legacy"):  # the fast path (2026-07-28) and a session through the SDK
        async with Client(streamable_http_client(server.url, http_client=http()), mode=mode) as client:
            assert (await client.call_tool("echo", {"message": mode})).is_error is False
            assert (await client.call_tool("boom", {})).is_error is True
    lines = await _stop(server)

    records = [json.loads(line) for line in lines]  # every line is one JSON record
    access = [r for r in records if r["logger"] == "qaqnuz.http.access" and r.get("method") == "tools/call"]
    assert len(access) == 4
    for line in access:
        assert line["route"] == "POST /mcp" and line["status"] == 200 and line["tool"] in ("echo", "boom")
        assert line["client"].startswith("127.0.0.1:") and isinstance(line["latency_ms"], float)
        assert answered[line["request_id"]] == "tools/call"  # the id the client got in X-Request-Id
        assert line["time"].endswith("Z") and line["level"] == "INFO"
    assert len({line["request_id"] for line in access}) == 4  # one id per request

    # The kernel's own line about the failing tool carries the id of the request that called it.
    boom_ids = {line["request_id"] for line in access if line["tool"] == "boom"}
    failures = [r for r in records if r["logger"].startswith("qaqnuz.") and "tool boom raised" in r["message"]]
    assert len(failures) == 2 and {r["request_id"] for r in failures} == boom_ids
    assert all("exc" in r and "Traceback" in r["exc"] for r in failures)

    # ...and so does the audit record of each call.
    audit = [json.loads(line) for line in (server.config.parent / "qaqnuz-audit.jsonl").read_text().splitlines()]
    calls = [r for r in audit if r.get("step") == "execution"]
    assert len(calls) == 4
    by_id = {r.get("request_id"): r["tool"] for r in calls}
    assert by_id == {line["request_id"]: line["tool"] for line in access}


def _raw(port: int, payload: bytes) -> bytes:
    """One request written as is (an HTTP client would refuse these headers), the answer read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def _inject(server: Any, key: str) -> None:
    """Client-chosen values holding line breaks, as many ways as a client can send them."""
    port = server.port
    forged = FORGED.encode()
    host = f"127.0.0.1:{port}".encode()
    auth = f"Authorization: Bearer {key}\r\n".encode()
    call = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}'

    def post(path: bytes, headers: bytes, body: bytes = call) -> bytes:
        return (
            b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + headers + b"Content-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    requests = [
        # a session id with CR LF (the parser's to refuse), with NEL and U+2028 (accepted: obs-text)
        post(b"/mcp", auth + b"Mcp-Session-Id: abc\r\n" + forged + b"\r\n"),
        post(b"/mcp", auth + b"Mcp-Session-Id: abc\x85" + forged + b"\xe2\x80\xa8" + forged + b"\r\n"),
        post(b"/mcp", auth + b"Mcp-Session-Id: abc\n" + forged + b"\r\n"),
        # the SDK logs a bad legacy session id as it was sent (decoded from the query string)
        post(b"/messages/?session_id=x%0a" + forged.replace(b" ", b"%20") + b"%0d%e2%80%a8", auth),
        # a path, a Host and an Origin with control characters
        b"GET /healthz%0a"
        + forged.replace(b" ", b"%20")
        + b" HTTP/1.1\r\nHost: "
        + host
        + b"\r\nConnection: close\r\n\r\n",
        post(b"/mcp%0d%0a" + forged.replace(b" ", b"%20"), auth),
        post(b"/mcp", auth.replace(b"Authorization", b"Origin: http://x\x1b[2J\x0b" + forged + b"\r\nAuthorization")),
        b"GET /readyz HTTP/1.1\r\nHost: evil\x0b" + forged + b"\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: " + host + b"\x85" + forged + b"\r\nConnection: close\r\n\r\n",
        # a request line the parser refuses: uvicorn logs it itself
        b"GET /\x00\n" + forged + b" HTTP/1.1\r\n\r\n",
        # refused credentials are logged (at debug) with the path
        post(b"/messages/x%1b[2J%0b%e2%80%ae" + forged.replace(b" ", b"%20"), b"Authorization: Bearer nope\r\n"),
    ]
    for payload in requests:
        await anyio.to_thread.run_sync(_raw, port, payload)

    # Tool names with line breaks, through the SDK (session era) and the fast path (2026-07-28).
    for mode in ("legacy", "auto"):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
        async with Client(streamable_http_client(server.url, http_client=http), mode=mode) as client:
            for name in (f"echo\n{FORGED}", f"echo\u2028{FORGED}", f"x\r{FORGED}\x85"):
                assert (await client.call_tool(name, {})).is_error is True


async def test_no_json_log_line_can_be_forged(serve_subprocess):
    server = serve_subprocess(_config("json", "debug"))
    key = await _mint(server.config)
    await _inject(server, key)
    lines = await _stop(server)

    records = [json.loads(line) for line in lines]  # as many records as lines: each line parses alone
    assert all(line.isascii() for line in lines)  # no raw U+2028 or NEL either
    for record in records:
        assert not record["message"].startswith(FORGED[:10])
    # the injected text did reach the log (as data inside one record), from the SDK and from uvicorn too
    reached = [r for r in records if FORGED in r["message"]]
    assert any(r["logger"].startswith("mcp.") for r in reached), [r["logger"] for r in records]
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert sum(1 for r in reached if "\n" + FORGED in r["message"]) >= 1  # a real newline, kept as data
    access = [r for r in records if r["logger"] == "qaqnuz.http.access"]
    assert access and all(FORGED not in json.dumps(r) for r in access)  # nothing client-chosen on the line
    assert {r.get("tool") for r in access} <= {None, "echo", "(unknown)"}
    assert any(r.get("tool") == "(unknown)" for r in access)
    assert {"GET other", "POST other"} <= {r["route"] for r in access}  # the paths sent, never logged


async def test_no_text_log_line_can_be_forged(serve_subprocess):
    server = serve_subprocess(_config("text", "debug"))
    key = await _mint(server.config)
    await _inject(server, key)
    lines = await _stop(server)

    assert lines
    for line in lines:  # a record, or a traceback's marked continuation: never the injected text
        assert TEXT_RECORD.match(line) or line.startswith("    | "), line
        assert not line.startswith(FORGED[:10])
    assert all(not any(c in line for c in "\r\x85\u2028\u2029\x0b\x1b") for line in lines)
    assert any(FORGED in line and "mcp." in line for line in lines)  # the SDK's warning, escaped on one line
    assert any("\\n" + FORGED in line for line in lines)
    refused = "DEBUG qaqnuz.http: refused POST /messages/x\\x1b[2J\\x0b\\u202e" + FORGED
    assert any(refused in line for line in lines)  # escape sequences and a bidi override, written as escapes
