"""Protocol faults on stdio answered as JSON-RPC says, instead of with silence: a line that is not JSON gets
-32700 (parse error) and one that is JSON but not a JSON-RPC message gets -32600 (invalid request), both with
`id: null` unless the message carried a usable id. A line longer than `max_message_bytes` is never buffered
whole: it is dropped as it arrives and answered -32600.

The answers are `qaqnuz.rpcfaults`'s fixed texts: no parser message and nothing of the caller's input is
ever echoed. Lines that
pass go on to the fast path or the SDK unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from qaqnuz import rpc_error_body, rpc_fault

INVALID_REQUEST = -32600
TOO_LARGE = "Invalid request: the message is larger than the server accepts ([plugins.stdio] max_message_bytes)."


class Sender(Protocol):
    async def send(self, line: bytes) -> None: ...


def error_line(code: int, message: str, request_id: Any = None) -> bytes:
    return rpc_error_body(code, message, request_id) + b"\n"


def fault(line: str) -> bytes | None:
    """The error line for a line that is not a JSON-RPC message (see `qaqnuz.rpcfaults`), or None."""
    answer = rpc_fault(line)
    return None if answer is None else answer + b"\n"


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
