"""The wire ends: the client's messages in from a private duplicate of stdin, the answers out to a private
duplicate of stdout, with no thread hop per message where the other end is a pipe or a socket.

The SDK's own stdio streams run every read, write and flush in a worker thread (three thread hops per call)
and its reader thread must finish before shutdown can, so SIGTERM could not stop a server whose client keeps
the pipe open. On a pipe or socket (how every MCP client starts a server) both ends here are the event
loop's own non-blocking pipes. Anything else (a terminal, a file) keeps blocking I/O: stdin is read by a
daemon thread, which never holds up exit, and stdout is written directly (a terminal or a file does not
stall); making those non-blocking would change them for every other process that shares them.

Either way fd 0 and fd 1 are pointed elsewhere while serving, as the SDK does: fd 0 at /dev/null (no tool or
child process can read the wire) and fd 1 at stderr (stray prints cannot corrupt it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel

from qaqnuz_stdio.faults import MessageTooLarge, bounded_line


class Lines(Protocol):
    def __aiter__(self) -> Lines: ...
    async def __anext__(self) -> str: ...


def _streaming(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def claimed(fd: int, diversion: int) -> Iterator[int]:
    """A private duplicate of `fd` (not inherited by children) while `fd` points at `diversion`; restored after."""
    private = os.dup(fd)  # non-inheritable (PEP 446)
    os.dup2(diversion, fd)
    try:
        yield private
    finally:
        with contextlib.suppress(OSError):
            os.dup2(private, fd)
        os.close(private)


class PipeLines:
    """Lines from a pipe or socket, read on the event loop; a line over `limit` bytes is never held whole
    (`faults.MessageTooLarge`)."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await bounded_line(self._reader, self._limit)
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class ThreadLines:
    """Lines from a terminal or a file, read by a daemon thread (see the module docstring)."""

    def __init__(self, fd: int, limit: int) -> None:
        self._file = os.fdopen(fd, "r", encoding="utf-8", errors="replace", closefd=False)
        self._limit = limit
        self._send, self._receive = anyio.create_memory_object_stream[str](64)
        self._thread: threading.Thread | None = None

    def _pump(self, token: Any) -> None:
        # If the loop is gone (shutdown) or stdin broke, either way the server sees EOF.
        with contextlib.suppress(Exception):
            for line in self._file:
                anyio.from_thread.run(self._send.send, line, token=token)
        with contextlib.suppress(Exception):
            anyio.from_thread.run_sync(self._send.close, token=token)

    def __aiter__(self) -> ThreadLines:
        if self._thread is None:
            token = anyio.lowlevel.current_token()
            self._thread = threading.Thread(target=self._pump, args=(token,), name="qaqnuz-stdin", daemon=True)
            self._thread.start()
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if len(line) > self._limit:  # a terminal or a file: read whole by then, but still not served
            raise MessageTooLarge
        return line


async def open_lines(fd: int, limit: int) -> Lines:
    if not _streaming(fd):
        return ThreadLines(fd, limit)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    pipe = os.fdopen(os.dup(fd), "rb", 0)  # the loop closes its own duplicate; `fd` stays for the restore
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return PipeLines(reader, limit)


class Output:
    """stdout for both writers: the SDK (`write` then `flush`, as `stdio_server` calls them) and the fast path
    (`send`, one whole line). Each message is handed over in one piece, so lines never interleave, and only
    after `before_write` (the kernel's audit records held for this pass are written first: no answer is seen
    before its audit line)."""

    def __init__(self, fd: int, writer: asyncio.StreamWriter | None, before_write: Callable[[], None]) -> None:
        self._fd = fd
        self._writer = writer
        self._before_write = before_write

    @classmethod
    async def open(cls, fd: int, before_write: Callable[[], None]) -> Output:
        if not _streaming(fd):
            return cls(fd, None, before_write)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(os.dup(fd), "wb", 0)  # the loop closes its own duplicate; `fd` stays for the restore
        transport, protocol = await loop.connect_write_pipe(lambda: asyncio.streams.FlowControlMixin(loop=loop), pipe)
        return cls(fd, asyncio.StreamWriter(transport, protocol, None, loop), before_write)

    async def send(self, line: bytes) -> None:
        self._put(line)
        await self.flush()

    async def write(self, text: str) -> None:
        self._put(text.encode("utf-8"))

    async def flush(self) -> None:
        if self._writer is not None:
            await self._writer.drain()  # waits only while the client is not reading; raises once it is gone

    def _put(self, data: bytes) -> None:
        self._before_write()
        if self._writer is not None:
            if self._writer.is_closing():
                raise BrokenPipeError("the client closed stdout")
            self._writer.write(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def restore_blocking(fd: int) -> None:
    """The loop's non-blocking mode is on the shared file description: give it back as it was found."""
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)
