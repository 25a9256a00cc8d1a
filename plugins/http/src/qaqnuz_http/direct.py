"""Fast-path requests answered on the connection, below the ASGI stack.

Even with the SDK out of the way, a fast-path `tools/call` still crossed uvicorn's request cycle (its
`receive` and `send`, each response header checked against two regular expressions), Starlette-style
middleware (`Front`, `Guard`, each copying the scope and wrapping `send`), and a body read under a timer:
about a quarter of the server's CPU per call, more than the governed pipeline itself. Measured on loopback, a
trivial ASGI app behind uvicorn costs 53 µs of CPU per request; the same answer written by an asyncio
protocol, 13 µs.

So the HTTP/1.1 protocol here is uvicorn's own (it parses, keeps connections alive, pipelines, pauses and
closes as before) with two changes. Its keep-alive timer is armed once per idle spell and re-arms itself,
instead of being armed and cancelled around every request. And a POST to an MCP endpoint, about to be handed
to the ASGI app, is first offered to `DirectAnswers`, which applies `Front`'s and `Guard`'s checks in their
order: what the head alone decides (a query string, a Host or Origin to refuse, draining, a body of unknown
size or over 64 KiB stay the app's), then the credential (a refusal is answered at once, counted and
audited once, with the very code `Guard` uses), and only then the body, awaited under the read deadline the
ASGI path applies (408 when it does not come). The fast path then answers through the one governed
pipeline, and the response is written in one piece. Anything not taken goes to the ASGI app exactly as
before, body included, and is answered there.

The protocol relies on uvicorn's request cycle (its body buffer and completion flags) and its keep-alive
bookkeeping, internals of the uvicorn release in use; `direct_support()` checks they are there, a test fails
if an upgrade moves them, and without them the server keeps to the ASGI path (with a warning) rather than
guess.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Scope

from qaqnuz import Host, Principal, requestid
from qaqnuz_http.access import ACCESS_FIELDS, REQUEST_ID_HEADER, SCOPE_REQUEST_ID, RouteNames, log_access
from qaqnuz_http.coalesce import held_writes_protocol
from qaqnuz_http.fastpath import FastPath
from qaqnuz_http.guard import (
    ClientAddress,
    FailureLimit,
    Tracker,
    authenticate,
    host_allowed,
    secure_headers,
)
from qaqnuz_http.scopeheaders import headers_of

log = logging.getLogger("qaqnuz.http")

#: A response as the ASGI app would have sent it: status, headers, body.
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
#: The largest body awaited on the connection (fast-path requests are small); a larger one is the app's to read.
AWAIT_LIMIT = 64 * 1024
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
REQUEST_TIMEOUT: Reply = (408, secure_headers([_TEXT]), b"Request timeout")
SERVER_ERROR: Reply = (500, secure_headers([_TEXT, (b"connection", b"close")]), b"Internal Server Error")


class DirectAnswers:
    """What `Front` and `Guard` decide for a fast-path POST, then the fast path's answer; None: the app's turn."""

    def __init__(
        self,
        *,
        host: Host,
        fast: FastPath,
        paths: frozenset[str],
        allowed_hosts: list[str],
        allowed_origins: list[str],
        access_log_on: bool,
        query_token: bool,
        max_body_bytes: int,
        request_timeout: float,
        tracker: Tracker,
        failure_limit: FailureLimit | None,
        client_address: ClientAddress | None = None,
    ) -> None:
        self.client_address = client_address
        self.host = host
        self.fast = fast
        self.paths = paths
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.access_log_on = access_log_on
        self.query_token = query_token
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.tracker = tracker
        self.failure_limit = failure_limit
        self._hosts_seen: dict[bytes, bool] = {}  # Host -> allowed (a client sends the same one every time)
        self.routes = RouteNames(paths)
        self.answered = 0  # fast-path answers written here (what a test tells the two paths apart by)
        self.refused = 0  # authentication refusals written here

    def takes(self, scope: Scope) -> bool:
        """Whether a request may be offered at all (decided from its request line alone)."""
        return scope["method"] == "POST" and scope["path"] in self.paths

    def fits(self, scope: Scope) -> bool:
        """What can be told from the head alone, with no side effect: a query string (`?token=`), draining (503),
        a Host or Origin to refuse (421, 403), repeated headers, a body of unknown size or one over
        `AWAIT_LIMIT` (413 or a long read) all stay the ASGI app's."""
        if scope["query_string"] or self.tracker.draining:
            return False
        headers, repeated = headers_of(scope)
        if repeated & {b"host", b"origin", b"content-length", b"authorization"} or not self._host_ok(headers):
            return False
        declared = headers.get(b"content-length")
        return declared is not None and declared.isdigit() and int(declared) <= min(self.max_body_bytes, AWAIT_LIMIT)

    async def authenticate(self, scope: Scope) -> Principal | Reply:
        """The principal, or the refusal (400, 401 or 429) with its side effects done: counted once, audited,
        answered here at once, before any body is awaited."""
        collected: list[Message] = []

        async def collect(message: Message) -> None:
            collected.append(message)

        if self.client_address is not None:
            self.client_address.rewrite(scope)

        authenticated = await authenticate(
            scope, collect, host=self.host, query_token=self.query_token, failure_limit=self.failure_limit
        )
        if authenticated is None:
            self.refused += 1
            return _reply(collected)
        return authenticated[0]

    async def answer(self, scope: Scope, body: bytes, principal: Principal) -> Reply | None:
        """The fast path's answer to a whole request, or None to leave it (untouched) to the ASGI app."""
        collected: list[Message] = []

        async def collect(message: Message) -> None:
            collected.append(message)

        self.tracker.in_flight += 1  # shutdown waits for it as for a request the SDK serves
        try:
            if not await self.fast.answer(scope, body, principal, collect):
                return None
        finally:
            self.tracker.in_flight -= 1
        self.answered += 1
        return _reply(collected)

    def logged(self, scope: Scope, reply: Reply, started: float, key_id: str) -> Reply:
        """The reply with its `X-Request-Id`, and `Front`'s access line written for it."""
        if self.access_log_on:
            log_access(scope, reply[0], started, key_id, ACCESS_FIELDS.get() or {}, self.routes)
        status, headers, body = reply
        return status, [*headers, (REQUEST_ID_HEADER, scope[SCOPE_REQUEST_ID].encode("ascii"))], body

    def _host_ok(self, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host")
        if host is None:
            return False
        allowed = self._hosts_seen.get(host)
        if allowed is None:
            allowed = host_allowed(host.decode("latin-1"), self.allowed_hosts)
            if len(self._hosts_seen) >= 256:
                self._hosts_seen.clear()
            self._hosts_seen[host] = allowed
        origin = headers.get(b"origin")
        return allowed and (origin is None or host_allowed(origin.decode("latin-1"), self.allowed_origins))


def _reply(messages: list[Message]) -> Reply:
    """The start and body messages the guard or the fast path sent (its Content-Length is written anew)."""
    start, body = messages[0], messages[1]
    headers = [(name, value) for name, value in start["headers"] if name != b"content-length"]
    return start["status"], secure_headers(headers), body["body"]


def direct_support() -> bool:
    """Whether uvicorn's protocol and request cycle have what `direct_protocol` relies on."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:  # no httptools: uvicorn runs on h11, and the ASGI path serves everything
        return False
    methods = ("_start_asgi_task", "_unset_keepalive_if_required", "on_response_complete", "timeout_keep_alive_handler")
    if not all(callable(getattr(HttpToolsProtocol, name, None)) for name in methods):
        return False
    protocol_state = {"timeout_keep_alive_task", "timeout_keep_alive", "pipeline", "server_state", "flow", "loop"}
    if not protocol_state <= set(HttpToolsProtocol.__init__.__code__.co_names):
        return False
    if not callable(getattr(RequestResponseCycle, "run_asgi", None)):
        return False
    names = RequestResponseCycle.__init__.__code__.co_names
    wanted = {
        *("body", "more_body", "disconnected", "keep_alive", "response_started", "response_complete"),
        *("message_event", "on_response", "flow", "default_headers", "transport", "waiting_for_100_continue"),
    }
    return wanted <= set(names)


STATUS_LINES = {200: b"HTTP/1.1 200 OK\r\n"}


def _status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE

        line = STATUS_LINES[status] = STATUS_LINE[status]
    return line


def direct_protocol(direct: DirectAnswers) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (with held writes) that offers whole fast-path POSTs to `direct` first."""
    base: Any = held_writes_protocol(direct.host.settle_audit)

    class DirectProtocol(base):
        _idle_since: float | None = None  # when the last response completed; None while a request is in hand

        def _unset_keepalive_if_required(self) -> None:
            self._idle_since = None  # data arrived: busy (the timer, if armed, finds that out and stands down)

        def on_response_complete(self) -> None:
            # uvicorn's, except for the keep-alive timer: one per connection, armed when the connection goes
            # idle with none armed and re-armed by itself, instead of one armed and cancelled per request.
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self._arm_keep_alive(self._idle_since + self.timeout_keep_alive)

        def _arm_keep_alive(self, when: float) -> None:
            self.timeout_keep_alive_task = self.loop.call_at(when, self._keep_alive_due)

        def _keep_alive_due(self) -> None:
            self.timeout_keep_alive_task = None
            if self._idle_since is None or self.transport.is_closing():
                return  # busy (the response that ends it arms the timer again), or already closing
            deadline = self._idle_since + self.timeout_keep_alive
            if self.loop.time() >= deadline:
                self.timeout_keep_alive_handler()
            else:
                self._arm_keep_alive(deadline)

        def _start_asgi_task(self, cycle: Any, app: Callable[..., Any]) -> None:
            if app is not self.app or not direct.takes(cycle.scope):
                super()._start_asgi_task(cycle, app)
                return
            coroutine = self._direct_or_app(cycle, app)
            if getattr(self.config, "reset_contextvars", False):
                task = self.loop.create_task(coroutine, context=contextvars.Context())
            else:
                task = self.loop.create_task(coroutine)
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        async def _direct_or_app(self, cycle: Any, app: Callable[..., Any]) -> None:
            started = time.monotonic()
            # This task is the request's outermost layer here: its id and access fields are set as `Front`
            # sets them, and `Front` keeps the id if the request is handed on to the app (the scope says so).
            request_id = cycle.scope[SCOPE_REQUEST_ID] = requestid.new_request_id()
            requestid.begin(request_id)
            ACCESS_FIELDS.set({})
            try:
                reply = await _direct(cycle, direct, started)
            except Exception as exc:  # answered as the ASGI path would: logged, 500, connection closed
                log.error("answering a request failed (%s)", type(exc).__name__)
                reply = direct.logged(cycle.scope, SERVER_ERROR, started, "-")
            except BaseException:  # cancelled (a forced shutdown): no answer will come, so no waiting for one
                if not cycle.response_complete:
                    cycle.transport.close()
                raise
            if reply is None:
                await cycle.run_asgi(app)
            else:
                await _write(cycle, reply)

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.timeout_keep_alive_task is not None:  # nothing to keep alive: the timer lets the protocol go
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None

    return DirectProtocol


async def _direct(cycle: Any, direct: DirectAnswers, started: float) -> Reply | None:
    """Front's and Guard's checks in their order (the head, then the credential, then the body), then the fast
    path; None wherever the ASGI app is to answer instead."""
    scope = cycle.scope
    if (cycle.waiting_for_100_continue and cycle.more_body) or not direct.fits(scope):
        return None  # a client waiting for `100 Continue` gets it from the app's first read
    principal = await direct.authenticate(scope)
    if not isinstance(principal, Principal):
        return direct.logged(scope, principal, started, "-")
    whole = await _whole_body(cycle, direct.request_timeout)
    if whole is None:
        return None  # the client went away
    if not whole:
        return direct.logged(scope, REQUEST_TIMEOUT, started, principal.key_id)
    reply = await direct.answer(scope, bytes(cycle.body), principal)
    return None if reply is None else direct.logged(scope, reply, started, principal.key_id)


async def _whole_body(cycle: Any, deadline_s: float) -> bool | None:
    """True once the whole body is in the cycle's buffer, False if it did not come in time (408), None if the
    client went away.

    A client that writes the head and the body separately (most do) has only its head parsed when this task
    first runs: the body (at most `AWAIT_LIMIT`) is awaited here, under the deadline the ASGI path reads with.
    """
    if cycle.more_body:
        event = cycle.message_event
        try:
            async with asyncio.timeout(deadline_s):
                while cycle.more_body and not cycle.disconnected:
                    cycle.flow.resume_reading()  # as the cycle's own `receive` does
                    await event.wait()
                    event.clear()
        except TimeoutError:
            return False
        finally:
            event.set()  # the cycle's `receive` (should the app read after all) finds what has arrived
    return None if cycle.disconnected else True


async def _write(cycle: Any, reply: Reply) -> None:
    """The response in one write, then what uvicorn's cycle does once a response is complete."""
    status, headers, body = reply
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    cycle.response_started = cycle.response_complete = True
    on_response, cycle.on_response = cycle.on_response, _nothing
    cycle.message_event.set()
    if cycle.disconnected:
        return
    parts = [_status_line(status)]
    for name, value in (*cycle.default_headers, *headers):
        if name == b"connection" and b"close" in value.lower():
            cycle.keep_alive = False
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive and not any(name == b"connection" for name, _ in headers):
        parts.append(b"connection: close\r\n")
    parts += (b"content-length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body)
    cycle.transport.write(b"".join(parts))
    cycle.body = bytearray()  # answered: not kept while the connection idles
    if not cycle.keep_alive:
        cycle.transport.close()
    on_response()


def _nothing() -> None:
    return None
