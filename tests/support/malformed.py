"""The malformed-request battery: 56 messages a hostile or broken client sends, each carrying a canary string
where a careless server would echo it, and the checks an answer to any of them must pass (SPEC §3: an error
never quotes parser or pydantic text, an exception, or the caller's input).

`battery(meta)` builds the messages for one era: `meta` is the `_meta` a 2026-07-28 request carries (merged
into every object `params`), or None for the session era and stdio, where the handshake happened first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CANARY = "CANARY7f3a"
#: Texts that only a leaked parser message, validation error or exception would contain.
LEAK_MARKERS = (
    "Traceback",
    "pydantic",
    "validation error",
    "Validation error",
    "Input should",
    "input_value",
    "input_type",
    "Field required",
    "For further information",
    "errors.pydantic.dev",
    "line 1 column",
    "Exception",
    "KeyError",
    "TypeError",
    "ValueError",
    "JSONDecodeError",
    "msgspec",
    'File "',
)


def _text(message: Any) -> bytes:
    return json.dumps(message).encode()


def _request(method: Any, params: Any, meta: Mapping[str, Any] | None, request_id: Any = 1) -> bytes:
    if isinstance(params, dict) and meta is not None:
        params = {**params, "_meta": {**meta, **params.get("_meta", {})}}
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return _text(message)


def _huge(body: bytes) -> bytes:
    return body.replace(b'"H"', b"1e400", 1)


def battery(meta: Mapping[str, Any] | None) -> list[tuple[str, bytes]]:
    c = CANARY
    deep = "[" * 5000 + "]" * 5000
    cases: list[tuple[str, bytes]] = [
        # -- not JSON ------------------------------------------------------------------------------------
        ("not json", f"{{{c}".encode()),
        ("truncated object", f'{{"jsonrpc": "2.0", "id": 1, "method": "{c}'.encode()),
        ("invalid utf-8", b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe' + c.encode() + b'"}'),
        ("lone surrogate escape", f'{{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": "\\ud800{c}"}}'.encode()),
        ("NaN literal", f'{{"jsonrpc": "2.0", "id": NaN, "method": "{c}"}}'.encode()),
        ("trailing garbage", f'{{"jsonrpc": "2.0", "id": 1, "method": "ping"}} {c}'.encode()),
        ("single quotes", f"{{'jsonrpc': '2.0', 'id': 1, 'method': '{c}'}}".encode()),
        ("deep nesting", f'{{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {{"{c}": {deep}}}}}'.encode()),
        ("bare word", c.encode()),
        ("byte order mark", b"\xef\xbb\xbf" + _request("ping", None, meta)),
        # -- JSON, but not one JSON-RPC message ----------------------------------------------------------------
        ("batch", _text([json.loads(_request("ping", None, meta)), {"jsonrpc": "2.0", "id": 2, "method": c}])),
        ("empty batch", b"[]"),
        ("a string", _text(c)),
        ("a number", b"12345678901234567890123456789"),
        ("null", b"null"),
        ("jsonrpc missing", _text({"id": 1, "method": c})),
        ("jsonrpc 1.0", _text({"jsonrpc": "1.0", "id": 1, "method": c})),
        ("jsonrpc as a number", _text({"jsonrpc": 2.0, "id": 1, "method": c})),
        ("method a number", _text({"jsonrpc": "2.0", "id": 1, "method": 42, "params": {"x": c}})),
        ("method null", _text({"jsonrpc": "2.0", "id": 1, "method": None, "params": {"x": c}})),
        ("params a list", _text({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [c]})),
        ("params a string", _text({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": c})),
        ("id an object", _text({"jsonrpc": "2.0", "id": {c: 1}, "method": "ping"})),
        ("id a float", _text({"jsonrpc": "2.0", "id": 1.5, "method": "ping"})),
        ("id a bool", _text({"jsonrpc": "2.0", "id": True, "method": "ping"})),
        ("id a huge number", b'{"jsonrpc": "2.0", "id": 1' + b"0" * 400 + b', "method": "ping"}'),
        ("neither method nor result", _text({"jsonrpc": "2.0", "id": 1, c: True})),
        ("a response with a bad id", _text({"jsonrpc": "2.0", "id": [c], "result": {}})),
        ("a response with a bad result", _text({"jsonrpc": "2.0", "id": 11, "result": c})),
        ("a response with a bad error", _text({"jsonrpc": "2.0", "id": 12, "error": {"code": c, "message": [c]}})),
        # -- a JSON-RPC message with bad parameters --------------------------------------------------------
        ("unknown method", _request(f"{c}/method", {}, meta)),
        ("unknown method, no params", _request(c, None, meta)),
        ("tools/call without a name", _request("tools/call", {"arguments": {"message": c}}, meta)),
        ("tools/call name a number", _request("tools/call", {"name": 7, "arguments": {"message": c}}, meta)),
        ("tools/call unknown tool", _request("tools/call", {"name": c, "arguments": {}}, meta)),
        ("tools/call arguments a string", _request("tools/call", {"name": "echo", "arguments": c}, meta)),
        ("tools/call arguments a list", _request("tools/call", {"name": "echo", "arguments": [c]}, meta)),
        (
            "tools/call argument wrong type",
            _request("tools/call", {"name": "echo", "arguments": {"message": [c]}}, meta),
        ),
        (
            "tools/call extra argument",
            _request("tools/call", {"name": "echo", "arguments": {"message": "hi", c: c}}, meta),
        ),
        (
            "tools/call huge number",
            _huge(_request("tools/call", {"name": "echo", "arguments": {"message": "H"}}, meta)),
        ),
        ("tools/call long string", _request("tools/call", {"name": "echo", "arguments": {"message": c * 20000}}, meta)),
        (
            "tools/call wrong integer",
            _request("tools/call", {"name": "echo", "arguments": {"message": "x", "times": c}}, meta),
        ),
        ("tools/call name too long", _request("tools/call", {"name": c * 500, "arguments": {}}, meta)),
        (
            "tools/call progress token",
            _request("tools/call", {"name": "echo", "_meta": {"progressToken": {c: 1}}}, meta),
        ),
        ("tools/list cursor an object", _request("tools/list", {"cursor": {c: 1}}, meta)),
        ("tools/list cursor garbage", _request("tools/list", {"cursor": c}, meta)),
        ("resources/read", _request("resources/read", {"uri": f"file:///{c}"}, meta)),
        ("resources/read uri a number", _request("resources/read", {"uri": 5}, meta)),
        ("prompts/get", _request("prompts/get", {"name": c}, meta)),
        ("logging/setLevel bad level", _request("logging/setLevel", {"level": c}, meta)),
        ("completion bad ref", _request("completion/complete", {"ref": {"type": c}, "argument": {}}, meta)),
        ("initialize bad version", _request("initialize", {"protocolVersion": [c], "capabilities": c}, meta)),
        ("ping with junk params", _request("ping", {c: [c]}, meta)),
        (
            "cancelled bad request id",
            _text({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {c: 1}}}),
        ),
        ("notification unknown", _text({"jsonrpc": "2.0", "method": f"notifications/{c}", "params": {"x": c}})),
        ("subscriptions/listen bad", _request("subscriptions/listen", {"filter": c}, meta)),
    ]
    assert len(cases) == 56, len(cases)
    return cases


def leaks(text: str) -> list[str]:
    """What in an answer should not be there: the canary (an echo of the caller's input) or a leak marker."""
    found = [marker for marker in LEAK_MARKERS if marker in text]
    if CANARY in text:
        found.append("the caller's input (the canary)")
    return found


def check_message(message: Any) -> list[str]:
    """Problems with one JSON-RPC answer: it must be a well-formed response (one of result or error)."""
    problems: list[str] = []
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return [f"not a JSON-RPC 2.0 message: {str(message)[:200]}"]
    if ("result" in message) == ("error" in message):
        problems.append("not exactly one of result and error")
    if "error" in message:
        error = message["error"]
        if (
            not isinstance(error, dict)
            or type(error.get("code")) is not int
            or not isinstance(error.get("message"), str)
        ):
            problems.append(f"a malformed error object: {str(error)[:200]}")
    request_id = message.get("id", "missing")
    if request_id != "missing" and request_id is not None and not isinstance(request_id, (str, int)):
        problems.append("an id that is neither a string, an integer nor null")
    return problems
