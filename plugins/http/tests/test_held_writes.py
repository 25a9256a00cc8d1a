"""A response's head and body leave in one write: the transport uvicorn's protocol gets holds the writes of one
event-loop pass. Over real sockets on 127.0.0.1, with the real transport's writes counted."""

from __future__ import annotations

import asyncio

import pytest

from qaqnuz_http.coalesce import HeldWrites

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Counted:
    """The real transport, with its writes counted (everything else passes straight through)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def _pair():
    """A connected (server transport, client reader) over 127.0.0.1."""
    accepted: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return server, await accepted, reader, writer


async def test_held_audit_records_are_written_before_anything_held_leaves():
    """The kernel's audit records of a pass are settled first, whichever was scheduled first."""
    server, transport, reader, writer = await _pair()
    try:
        order: list[str] = []

        class Logged(Counted):
            def write(self, data: bytes) -> None:
                order.append("answer")
                super().write(data)

        held = HeldWrites(Logged(transport), asyncio.get_running_loop(), lambda: order.append("audit"))  # type: ignore[arg-type]
        held.write(b"first")
        held.flush()  # early (past the hold limit, closing): still after the audit
        held.write(b"second")
        await asyncio.sleep(0)
        assert order == ["audit", "answer", "audit", "answer"]
        held.flush()  # nothing held: nothing written, nothing settled
        assert order == ["audit", "answer", "audit", "answer"]
        assert await reader.readexactly(11) == b"firstsecond"
    finally:
        writer.close()
        transport.close()
        server.close()


async def test_writes_of_one_pass_leave_as_one_and_in_order():
    server, transport, reader, writer = await _pair()
    try:
        counted = Counted(transport)
        held = HeldWrites(counted, asyncio.get_running_loop(), lambda: None)  # type: ignore[arg-type]
        held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        held.write(b"hello")
        assert counted.writes == []  # nothing yet: the pass is not over
        await asyncio.sleep(0)
        assert counted.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
        assert await reader.readexactly(len(counted.writes[0])) == counted.writes[0]
        held.write(b"next")  # a later pass: its own write
        await asyncio.sleep(0)
        assert counted.writes[1:] == [b"next"]
        assert await reader.readexactly(4) == b"next"
    finally:
        writer.close()
        transport.close()
        server.close()


async def test_closing_writes_what_is_held_first_and_aborting_drops_it():
    server, transport, reader, writer = await _pair()
    try:
        held = HeldWrites(transport, asyncio.get_running_loop(), lambda: None)
        held.write(b"last words")
        held.close()
        assert await reader.read() == b"last words"  # then end of stream
    finally:
        writer.close()
        server.close()
    server, transport, reader, writer = await _pair()
    try:
        held = HeldWrites(transport, asyncio.get_running_loop(), lambda: None)
        held.write(b"never sent")
        held.abort()
        await asyncio.sleep(0.05)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data = await reader.read()
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
        assert held.get_write_buffer_size() == 0
    finally:
        writer.close()
        server.close()


async def test_more_than_the_hold_limit_is_written_at_once_so_flow_control_still_applies():
    from qaqnuz_http.coalesce import HOLD_LIMIT

    server, transport, reader, writer = await _pair()
    try:
        counted = Counted(transport)
        held = HeldWrites(counted, asyncio.get_running_loop(), lambda: None)  # type: ignore[arg-type]
        held.write(b"x" * 100)
        assert counted.writes == []
        held.write(b"y" * HOLD_LIMIT)  # past the limit: written now, in order, without waiting for the pass
        assert counted.writes == [b"x" * 100 + b"y" * HOLD_LIMIT]
        await asyncio.sleep(0)
        assert len(counted.writes) == 1  # the pass's own flush finds nothing left
        assert await reader.readexactly(100 + HOLD_LIMIT) == b"x" * 100 + b"y" * HOLD_LIMIT
    finally:
        writer.close()
        transport.close()
        server.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_uvicorn_serves_through_held_writes_with_either_parser(parser):
    """A real uvicorn on 127.0.0.1 with the protocol the transport uses, on both of uvicorn's HTTP/1.1 parsers
    (h11 is what it falls back to where httptools is not installed): keep-alive requests, a streamed body."""
    import httpx
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from qaqnuz_http.coalesce import held_writes_protocol

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    base = HttpToolsProtocol if parser == "httptools" else H11Protocol
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=held_writes_protocol(lambda: None, base), log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # one connection, kept alive
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert (response.status_code, response.text) == (200, "one two three")
    finally:
        server.should_exit = True
        await task
