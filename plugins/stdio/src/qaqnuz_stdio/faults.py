"""Protocol faults on stdio answered as JSON-RPC says, instead of with silence: a line that is not JSON gets
-32700 (parse error) and one that is JSON but not a JSON-RPC message gets -32600 (invalid request), both with
`id: null` unless the message carried a usable id. A line longer than `max_message_bytes` is never buffered
whole: it is dropped as it arrives and answered -32600.

The answers are fixed texts: no parser message and nothing of the caller's input is ever echoed. Lines that
pass go on to the fast path or the SDK unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
NOT_JSON = "Parse error: the message is not valid JSON."
NOT_JSON_RPC = 'Invalid request: not a JSON-RPC 2.0 message (an object with jsonrpc "2.0" and a method or a result).'
BATCH = "Invalid request: JSON-RPC batches are not supported; send one message per line."
TOO_LARGE = "Invalid request: the message is larger than the server accepts ([plugins.stdio] max_message_bytes)."

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class Sender(Protocol):
    async def send(self, line: bytes) -> None: ...


def error_line(code: int, message: str, request_id: Any = None) -> bytes:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return _encoder.encode(body) + b"\n"


def _usable_id(message: dict[str, Any]) -> Any:
    """The message's id if JSON-RPC allows it (a string or an integer), else None: a bad id is not repeated."""
    value = message.get("id")
    if isinstance(value, str) and len(value) <= 256:
        return value
    if type(value) is int and -(2**53) < value < 2**53:
        return value
    return None


def fault(line: str) -> bytes | None:
    """The error answer for a line that is not a JSON-RPC message, or None for one to pass on."""
    try:
        message = _decoder.decode(line)
    except (msgspec.DecodeError, UnicodeEncodeError):
        return error_line(PARSE_ERROR, NOT_JSON)
    if isinstance(message, list):
        return error_line(INVALID_REQUEST, BATCH)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return error_line(INVALID_REQUEST, NOT_JSON_RPC, _usable_id(message) if isinstance(message, dict) else None)
    method = message.get("method")
    if method is not None:
        if not isinstance(method, str) or ("params" in message and not isinstance(message["params"], dict)):
            return error_line(INVALID_REQUEST, NOT_JSON_RPC, _usable_id(message))
        if "id" in message and _usable_id(message) is None:  # null, a float, a bool, an object
            return error_line(INVALID_REQUEST, NOT_JSON_RPC)
        return None
    if ("result" in message or "error" in message) and _usable_id(message) is not None:
        return None  # a client's answer to a server request (sampling, elicitation)
    return error_line(INVALID_REQUEST, NOT_JSON_RPC, _usable_id(message))


class Checked:
    """Lines that are JSON-RPC messages; every other line is answered on `output` and not passed on. Blank
    lines are skipped (nothing to answer)."""

    def __init__(self, lines: Any, output: Sender) -> None:
        self._lines = lines
        self._output = output

    def __aiter__(self) -> Checked:
        self._lines = self._lines.__aiter__()
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                line = await self._lines.__anext__()
            except MessageTooLarge:
                await self._output.send(error_line(INVALID_REQUEST, TOO_LARGE))
                continue
            if not line.strip():
                continue
            answer = fault(line)
            if answer is None:
                return str(line)
            await self._output.send(answer)


class MessageTooLarge(Exception):
    """A line longer than the limit was read and dropped (up to and including its newline)."""


async def bounded_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The next line, at most `limit` bytes (b"" at EOF); a longer one is read through to its end in pieces,
    never held whole, and raises `MessageTooLarge`."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as partial:
        return partial.partial  # EOF: the last line without its newline (or b"")
    except asyncio.LimitOverrunError:
        pass
    while True:  # drop what is buffered, then the rest of the line as it comes
        try:
            await reader.readuntil(b"\n")
            raise MessageTooLarge
        except asyncio.LimitOverrunError as over:
            await reader.readexactly(over.consumed)
        except asyncio.IncompleteReadError:
            raise MessageTooLarge from None
