"""The malformed-request battery (tests/support/malformed.py, 56 messages) over HTTP in both eras and over
the legacy HTTP+SSE transport: every answer is a well-formed JSON-RPC error or result, never parser or
pydantic text, an exception, or an echo of the caller's input; and the server goes on serving.

Measured before: in the session era (2025-11-25), 26 of 54 were answered with the SDK's raw parser and
pydantic text, which quotes the caller's values ("Validation error: ... input_value=['CANARY...']"), and an
unknown method's name came back as the error's data.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpkit import SseStream

from malformed import battery, check_message, leaks
from qaqnuz.rpcfaults import fault

MODERN = "2026-07-28"
SESSION = "2025-11-25"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _messages(response: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of one answer, JSON or SSE framed."""
    if not response.content:
        return []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [
            json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
    return [response.json()]


def _method_headers(body: bytes) -> dict[str, str]:
    """What a 2026-07-28 client puts in headers: the method, and the tool's name for tools/call."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return {"Mcp-Method": "ping"}
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return {"Mcp-Method": "ping"}
    headers = {"Mcp-Method": message["method"]}
    params = message.get("params")
    named = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(message["method"])
    if named is not None and isinstance(params, dict) and isinstance(params.get(named), str):
        headers["Mcp-Name"] = params[named]
    return {k: v for k, v in headers.items() if v.isascii() and v.isprintable() and len(v) < 4000}


def _problems(name: str, response: httpx.Response) -> list[str]:
    found = [f"{name}: HTTP {response.status_code}"] if response.status_code not in (200, 202, 400, 404) else []
    visible = response.text + json.dumps({k: v for k, v in response.headers.items() if k != "mcp-session-id"})
    found += [f"{name}: {leak}" for leak in leaks(visible)]
    for message in _messages(response):
        found += [f"{name}: {problem}" for problem in check_message(message)]
    return found


def _open_session(client: httpx.Client) -> str:
    hello = {"protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "battery", "version": "1"}}
    opened = client.post("/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": SESSION}
    assert (
        client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers).status_code
        == 202
    )
    return session


def _still_serves(client: httpx.Client, headers: dict[str, str], meta: dict[str, Any] | None) -> None:
    params: dict[str, Any] = {"name": "echo", "arguments": {"message": "still here"}}
    if meta is not None:
        params["_meta"] = meta
    call = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": params}
    extra = {"Mcp-Method": "tools/call", "Mcp-Name": "echo"} if meta is not None else {}
    answer = _messages(client.post("/mcp", json=call, headers={**headers, **extra}))
    assert answer and answer[-1]["result"]["structuredContent"]["data"]["message"] == "still here", answer


def test_the_battery_in_the_session_era(http_server) -> None:
    server = http_server()
    key = server.mint()
    with httpx.Client(base_url=server.base, headers={**ACCEPT, "Authorization": f"Bearer {key}"}, timeout=30) as client:
        session = _open_session(client)
        headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": SESSION}
        problems = []
        for name, body in battery(None):
            problems += _problems(name, client.post("/mcp", content=body, headers=headers))
        assert problems == []
        _still_serves(client, headers, None)


def test_the_battery_in_the_2026_era(http_server) -> None:
    server = http_server()
    key = server.mint()
    with httpx.Client(base_url=server.base, headers={**ACCEPT, "Authorization": f"Bearer {key}"}, timeout=30) as client:
        headers = {"MCP-Protocol-Version": MODERN}
        problems = []
        for name, body in battery(META):
            problems += _problems(name, client.post("/mcp", content=body, headers={**headers, **_method_headers(body)}))
        assert problems == []
        _still_serves(client, headers, META)


def test_the_battery_over_legacy_sse(http_server) -> None:
    """Answers to POST /messages/ travel on the GET /sse stream: the whole stream is checked."""
    server = http_server()
    key = server.mint()
    auth = {"Authorization": f"Bearer {key}"}
    sse = SseStream(server.base, auth)
    endpoint = sse.endpoint
    hello = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "battery", "version": "1"}}
    with httpx.Client(base_url=server.base, headers={"Content-Type": "application/json", **auth}, timeout=30) as client:
        assert (
            client.post(endpoint, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}).status_code
            == 202
        )
        client.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        problems = []
        for name, body in battery(None):
            response = client.post(endpoint, content=body)
            problems += [f"{name}: POST {leak}" for leak in leaks(response.text)]
            if response.status_code not in (202, 400):
                problems.append(f"{name}: HTTP {response.status_code}")
        call = {"name": "echo", "arguments": {"message": "still here"}}
        assert (
            client.post(endpoint, json={"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": call}).status_code
            == 202
        )
    stream = sse.messages_until(99, timeout=15)
    for message in stream:
        problems += [f"stream: {problem}" for problem in check_message(message)]
        problems += [f"stream: {leak}" for leak in leaks(json.dumps(message))]
    assert problems == []
    assert stream[-1]["result"]["structuredContent"]["data"]["message"] == "still here"
    # Each request the transport let through was answered on the stream (the rest in the POST's own answer).
    passed = [b for _, b in battery(None) if fault(b) is None and "id" in json.loads(b)]
    assert len([m for m in stream if m.get("id") == 1]) == len(passed) > 20


def test_an_unsupported_protocol_version_is_not_repeated(http_server) -> None:
    """The SDK's answer names the version asked for (`data.requested`); ours lists only what is supported."""
    server = http_server()
    key = server.mint()
    asked = "2099-CANARY7f3a"
    meta = {"io.modelcontextprotocol/protocolVersion": asked, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": meta}}
    headers = {**ACCEPT, "Authorization": f"Bearer {key}", "MCP-Protocol-Version": asked, "Mcp-Method": "tools/list"}
    answer = httpx.post(server.url, json=body, headers=headers, timeout=15)
    assert answer.status_code == 400 and leaks(answer.text) == []
    error = answer.json()["error"]
    assert answer.json()["id"] == 5 and error["code"] == -32022 and "2026-07-28" in error["data"]["supported"]
