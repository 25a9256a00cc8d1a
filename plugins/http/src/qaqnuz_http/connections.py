"""Sockets that hold a connection slot without sending a request: given a deadline, and made room for.

uvicorn times a connection out only between requests (its keep-alive timer starts when a response is
complete). A socket that connects and sends nothing, or dribbles a request's head a byte at a time, was
never timed out, so `max_connections` idle sockets turned every request, `/healthz` included, into 503.

Here the protocol gives each request's head `header_timeout` seconds, counted from the connection's opening
or the request's first byte, and closes the connection when it runs out. And a request that arrives while
every slot is taken first makes room: the connection with no request in hand that has waited longest is
closed (one that never sent a whole request before one that did), so a new client is served at once rather
than after the deadline. Only when every connection is busy with a request does the server answer 503, in
JSON, naming the limit. The body of a request has its own deadline (`request_timeout`, in `guard.read_body`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from qaqnuz_http.guard import secure_headers
from qaqnuz_http.sessions import refusal

log = logging.getLogger("qaqnuz.http")

BUSY_BODY = refusal(
    "The server has as many connections and requests in hand as it allows ([plugins.http] max_connections). "
    "Retry shortly.",
    "max_connections",
)


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    """uvicorn's answer at `limit_concurrency` ("Service Unavailable" as text), in JSON naming the limit."""
    headers = secure_headers([(b"content-type", b"application/json"), (b"content-length", str(len(BUSY_BODY)).encode()),
                              (b"retry-after", b"1"), (b"connection", b"close")])  # fmt: skip
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": BUSY_BODY})


def deadline_protocol(base: type[asyncio.Protocol], header_timeout: float) -> type[asyncio.Protocol]:
    """`base` (uvicorn's httptools protocol, or a subclass) with a deadline on every request's head and room
    made at the connection limit. Any other base (h11, without httptools) is returned as it is."""
    if not hasattr(base, "on_headers_complete") or not hasattr(base, "on_message_begin"):
        log.warning("header_timeout is not enforced: uvicorn runs without httptools")
        return base
    from uvicorn.protocols.http.flow_control import service_unavailable

    class DeadlineProtocol(base):  # type: ignore[valid-type,misc]
        # One timer per connection, re-armed by itself, rather than one armed and cancelled per request (a
        # timer costs a few µs; a fast-path call costs about a hundred): it checks when it fires whether a
        # head has been waited for too long.
        _head_timer: asyncio.TimerHandle | None = None
        _head_since: float | None = None  # when the head being waited for began; None once it is whole
        _quiet_since = 0.0  # when the connection opened or last finished a response
        _served = 0  # requests whose head arrived whole on this connection

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._quiet_since = self._head_since = self.loop.time()  # a silent socket's head is late from now
            self._arm_head(self._head_since + header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_since = self.loop.time()

        def on_headers_complete(self) -> None:
            self._head_since = None
            self._served += 1
            limit = self.limit_concurrency
            if limit is not None and len(self.connections) >= limit and len(self.tasks) < limit:
                self._make_room(limit)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            self._quiet_since = self.loop.time()
            if cycle is not None and cycle.response_complete and cycle.more_body and self._head_since is None:
                # Answered before its body was all read (a 401, a 404, /healthz): the rest of the body must
                # arrive, and the next head begin, within `header_timeout`, or a client could hold the
                # connection by sending the body a byte at a time. (Closing at once would break a client
                # that reuses the connection for its next request.)
                self._head_since = self._quiet_since

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            super()._start_asgi_task(cycle, _busy if app is service_unavailable else app)

        def _arm_head(self, when: float) -> None:
            self._head_timer = self.loop.call_at(when, self._head_due)

        def _disarm_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_due(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            now = self.loop.time()
            since = self._head_since
            if since is None or self._in_hand():
                # No head waited for, or one begun behind a request still being answered: its time starts
                # again once that request is answered (checked at the next turn).
                if since is not None:
                    self._head_since = now
                self._arm_head(now + header_timeout)
            elif now >= since + header_timeout:
                log.debug("closed a connection: no whole request head within %ss (header_timeout)", header_timeout)
                self.transport.close()
            else:
                self._arm_head(since + header_timeout)

        def _in_hand(self) -> bool:
            """Whether a request whose head arrived is being answered (or waits behind one: pipelining)."""
            cycle = self.cycle
            return (cycle is not None and not cycle.response_complete) or bool(self.pipeline)

        def _idle(self) -> bool:
            """No request in hand and nothing left to write: closing it loses nothing (one still writing a
            response to a client that does not read it stays counted, as it stays open)."""
            return not self._in_hand() and not self.transport.get_write_buffer_size()

        def _make_room(self, limit: int) -> None:
            """Close idle connections, longest quiet first (those that never sent a whole request before those
            that did), until this request fits under `limit` (which uvicorn compares with every connection,
            this one included). When the requests in hand fill the limit, closing would win nothing."""
            idle = sorted(
                (c for c in self.connections if c is not self and isinstance(c, DeadlineProtocol) and c._idle()),
                key=lambda c: (c._served > 0, c._quiet_since),
            )
            for victim in idle[: len(self.connections) - limit + 1]:
                victim._disarm_head()
                victim.transport.close()
                self.connections.discard(victim)  # its slot is free now, not when the loop reports it closed
            if idle:
                log.info("at max_connections: closed the connection that had been quiet longest")

    return DeadlineProtocol
