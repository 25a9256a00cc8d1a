"""What a transport answers a message that is not a JSON-RPC 2.0 message, before any SDK code parses it: -32700
(parse error) for text that is not JSON, -32600 (invalid request) for JSON that is not one JSON-RPC message.

The answers are fixed texts: the SDK's own answers quote the parser's message or pydantic's, with the caller's
values in them, and SPEC §3 says an error never echoes what the caller sent. The id is repeated only when it is
one JSON-RPC allows (a string or an integer); otherwise it is null.
"""

from __future__ import annotations

from typing import Any

import msgspec

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
NOT_JSON = "Parse error: the message is not valid JSON."
NOT_JSON_RPC = 'Invalid request: not a JSON-RPC 2.0 message (an object with jsonrpc "2.0" and a method or a result).'
BATCH = "Invalid request: JSON-RPC batches are not supported; send one message at a time."
TOO_DEEP = "Invalid request: the message is nested more deeply than the server accepts (100 levels)."
#: Deeper than any tool's arguments need, and below every parser on the way (the SDK's stops at 200 with its
#: own text; msgspec and the standard library raise RecursionError near 1,000).
MAX_DEPTH = 100

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def error_body(code: int, message: str, request_id: Any = None, data: Any = None) -> bytes:
    """One JSON-RPC error object, encoded (`data` only when given)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _encoder.encode({"jsonrpc": "2.0", "id": request_id, "error": error})


def usable_id(message: dict[str, Any]) -> Any:
    """The message's id if JSON-RPC allows it (a string or an integer), else None: a bad id is not repeated."""
    value = message.get("id")
    if isinstance(value, str) and len(value) <= 256:
        return value
    if type(value) is int and -(2**53) < value < 2**53:
        return value
    return None


def _too_deep(text: str | bytes, message: Any) -> bool:
    """Whether the message nests more than `MAX_DEPTH` arrays and objects. Counting the brackets in the text
    (in C) rules out almost every message before any walk."""
    opened = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if opened <= MAX_DEPTH:
        return False
    level: list[Any] = [message]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def fault(text: str | bytes) -> bytes | None:
    """The error answer for text that is not one JSON-RPC message, or None for a message to pass on."""
    try:
        message = _decoder.decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):  # not JSON, not UTF-8, a number out of range
        return error_body(PARSE_ERROR, NOT_JSON)
    except RecursionError:
        return error_body(INVALID_REQUEST, TOO_DEEP)
    if _too_deep(text, message):
        return error_body(INVALID_REQUEST, TOO_DEEP, usable_id(message) if isinstance(message, dict) else None)
    if isinstance(message, list):
        return error_body(INVALID_REQUEST, BATCH)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return error_body(INVALID_REQUEST, NOT_JSON_RPC, usable_id(message) if isinstance(message, dict) else None)
    method = message.get("method")
    if method is not None:
        if not isinstance(method, str) or ("params" in message and not isinstance(message["params"], dict)):
            return error_body(INVALID_REQUEST, NOT_JSON_RPC, usable_id(message))
        if "id" in message and usable_id(message) is None:  # null, a float, a bool, an object
            return error_body(INVALID_REQUEST, NOT_JSON_RPC)
        return None
    if _answer_shaped(message) and usable_id(message) is not None:
        return None  # a client's answer to a server request (sampling, elicitation)
    return error_body(INVALID_REQUEST, NOT_JSON_RPC, usable_id(message))


def _answer_shaped(message: dict[str, Any]) -> bool:
    """Exactly one of an object `result` and an `error` object with an integer code and a string message, as
    MCP's answers are (the SDK's own check of anything else answers with the values quoted)."""
    if ("result" in message) == ("error" in message):
        return False
    if "result" in message:
        return isinstance(message["result"], dict)
    error = message["error"]
    return isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str)
