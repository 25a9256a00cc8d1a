"""One socket write per answer instead of two.

uvicorn writes a response's head when the app sends `http.response.start` and its body when it sends
`http.response.body`: two `send` system calls and, over TCP with no delay, two segments for the client to
read. On loopback the kernel does the receiving side's work inside the sender's call, so each write cost about
50 µs of the server's CPU under load: a third of a fast-path call. The transport handed to uvicorn's protocol
here holds what is written during one pass of the event loop and writes it as one piece at the end of it
(`loop.call_soon`), so a head and its body leave together, and several events of a stream written at once
leave together. Nothing waits longer than the current pass, and more than 64 KiB is written at once (so the
transport's flow control still sees a fast stream); closing or ending the stream writes what is held first;
aborting drops it, as aborting does. Before anything held is written, `before_write` runs: the kernel's
audit records held for the same pass are written first, so no answer leaves before its audit line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

#: At most this much is held before it is written: beyond it the transport's own buffer and its pause/resume
#: signals govern, so an app that sends without yielding is still slowed down by a client that reads slowly.
HOLD_LIMIT = 64 * 1024


class HeldWrites:
    """A transport that gathers the writes of one event-loop pass; everything else is the real transport's."""

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, before_write: Callable[[], None]
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._before_write = before_write
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._held_bytes = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))
            self._held_bytes += len(data)
        if self._held_bytes > HOLD_LIMIT:  # a big or fast stream: the real transport's flow control takes over
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._before_write()
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held or ()))

    def is_closing(self) -> bool:  # asked around every response: spared the `__getattr__` detour
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, is_closing, ...
        return getattr(self._transport, name)


def held_writes_protocol(
    before_write: Callable[[], None], base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools when installed, as uvicorn's "auto" picks; else h11; or `base`)
    on a transport that holds writes for one pass of the event loop."""
    if base is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            base = HttpToolsProtocol
        except ImportError:  # httptools is optional for uvicorn
            from uvicorn.protocols.http.h11_impl import H11Protocol

            base = H11Protocol

    class HeldWritesProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            loop = asyncio.get_running_loop()
            super().connection_made(HeldWrites(cast(asyncio.Transport, transport), loop, before_write))

    return HeldWritesProtocol
