"""The stdio fast path: plain `tools/call` and `tools/list` lines answered without the SDK's per-message
machinery, through the same governed pipeline, once the connection's era is settled.

It sits between the stdin reader and the SDK: every line passes through `Intercept`, which either answers
it (writing the JSON-RPC response to stdout itself) or hands it to the SDK unchanged. On stdio the first
request decides the era, so the fast path watches the connection open and answers only what the SDK would
answer the same way:

* handshake era: after the client's `initialize` was answered with a result and the client sent
  `notifications/initialized`, a request with no `_meta` (a progress token needs the SDK's stream);
* 2026-07-28: after the SDK answered the connection's first request with a result, a request carrying the
  exact per-request `_meta` envelope.

Everything else goes to the SDK: other methods, notifications, responses to server requests, a call to a
tool marked `interactive`, anything the fast path does not fully understand, and any request whose key no
longer authenticates (the SDK then answers with its fixed error). A `notifications/cancelled` for a call
the fast path is running cancels it (no response is sent, as the protocol asks) and is passed on too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import msgspec

from qaqnuz import CredentialsUnavailable, FastAnswers, FastRequest, Host, Principal, requestid
from qaqnuz_stdio.pipes import Lines, Output

log = logging.getLogger("qaqnuz.stdio")
MODERN = "2026-07-28"
_decoder = msgspec.json.Decoder()


class _Opening(msgspec.Struct):
    """Just enough of a message to follow the connection's opening."""

    method: str | None = None
    id: Any = None
    params: Any = None
    result: Any = None


class Calls:
    """The fast-path calls in flight, as plain asyncio tasks: an anyio task group's task and cancel scope per
    call cost about 15 µs of a call's 300. Like a task group: `wait` lets running calls finish (at EOF; a
    cancellation of the waiter, a signal, reaches it), `cancel` ends them, and the first one that fails (the
    client closed stdout) calls `on_failure` and is raised by `finish`; later failures are logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.on_failure: Callable[[], None] = lambda: None

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self.failure is None:
            self.failure = task.exception()
            self.on_failure()
        else:
            log.error("a fast-path call failed too (%s)", type(task.exception()).__name__)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Until every call has ended; cancellable (the calls then go on until cancelled themselves)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def finish(self) -> None:
        """Wait for every call (those cancelled included), shielded; then raise the first failure, if any."""
        with anyio.CancelScope(shield=True):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        if self.failure is not None:
            raise self.failure


class FastPath:
    def __init__(self, host: Host, key: str | None, output: Output, calls: Calls) -> None:
        self.answers = FastAnswers(host, transport="stdio")
        self.host = host
        self.key = key
        self.output = output
        self.calls = calls
        self.era: str | None = None  # "session" or "modern" once the first request is seen, else None
        self.ready = False
        self._opening_id: Any = None  # the first request's id, until its answer is seen
        self._initialized = False  # handshake era: notifications/initialized seen
        self._opened = False  # the SDK answered the first request with a result
        self._running: dict[Any, asyncio.Task[None]] = {}
        self.answered = 0

    # -- the connection's opening -----------------------------------------------------------------------------
    def watch_in(self, line: str) -> None:
        """Follow the client's side of the opening (its first request, and notifications/initialized)."""
        try:
            message = msgspec.json.decode(line, type=_Opening)
        except (msgspec.DecodeError, RecursionError):
            return
        if message.method == "notifications/initialized" and message.id is None:
            self._initialized = True
        elif self.era is None and message.method is not None and message.id is not None:
            meta = message.params.get("_meta") if isinstance(message.params, dict) else None
            if message.method == "initialize":
                self.era = "session"
            elif isinstance(meta, dict) and meta.get("io.modelcontextprotocol/protocolVersion") == MODERN:
                self.era = "modern"
            else:
                self.era = "other"  # the SDK decides what this connection is; the fast path stays out
            self._opening_id = message.id
        self._update()

    def watch_out(self, text: str) -> None:
        """Follow the SDK's answer to the first request (only until it is seen)."""
        try:
            message = msgspec.json.decode(text, type=_Opening)
        except (msgspec.DecodeError, RecursionError):
            return
        if message.id is not None and message.id == self._opening_id and message.method is None:
            self._opening_id = None
            self._opened = message.result is not None
        self._update()

    @property
    def watching_out(self) -> bool:
        return self._opening_id is not None

    def _update(self) -> None:
        if self.era == "session":
            self.ready = self._opened and self._initialized
        elif self.era == "modern":
            self.ready = self._opened

    # -- requests -----------------------------------------------------------------------------------------------
    async def claim(self, line: str) -> bool:
        """True if the fast path answers this line (the SDK must not see it)."""
        if not self.ready:
            self.watch_in(line)
            return False
        if '"tools/' not in line:
            if '"notifications/cancelled"' in line and self._running:
                self._cancel(line)
            return False
        request = FastAnswers.decode(line)
        if request is None or request.id in self._running:
            return False
        if self.era == "modern":
            if not FastAnswers.modern_envelope(request, MODERN):
                return False
        elif not FastAnswers.session_envelope(request):
            return False
        try:
            principal = await self.host.authenticate(self.key, transport="stdio")  # every request, as the binding
        except CredentialsUnavailable:
            return False  # the SDK path answers it (a retryable JSON-RPC error)
        if principal is None or not self.answers.takes(principal, request):
            return False
        self._running[request.id] = self.calls.spawn(self._answer(principal, request))
        return True

    async def _answer(self, principal: Principal, request: FastRequest) -> None:
        try:
            payload = await self.answers.answer(principal, request, modern=self.era == "modern")
            await self.output.send(payload + b"\n")
            self.answered += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s answered on the fast path (%s)", request.method, self.era)
        finally:
            self._running.pop(request.id, None)

    def _cancel(self, line: str) -> None:
        try:
            message = msgspec.json.decode(line, type=_Opening)
        except (msgspec.DecodeError, RecursionError):
            return
        if message.method == "notifications/cancelled" and isinstance(message.params, dict):
            task = self._running.get(message.params.get("requestId"))
            if task is not None:
                task.cancel()


class RequestIds:
    """Lines as read, each made the current request (`qaqnuz.requestid`) as it is read: one JSON-RPC message,
    one request id. The reader task's context then carries it to whatever handles the line: a fast-path call
    (spawned from it) or the SDK's handler (the SDK hands each message on with the reader's context), so the
    decision, tool and audit lines of one message share an id. A line's id lasts until the next line."""

    def __init__(self, lines: Lines) -> None:
        self._lines = lines

    def __aiter__(self) -> RequestIds:
        self._lines = self._lines.__aiter__()
        return self

    async def __anext__(self) -> str:
        line = await self._lines.__anext__()
        requestid.begin()
        return line


class Intercept:
    """The SDK's stdin: every line the fast path does not answer."""

    def __init__(self, lines: Lines, fast: FastPath) -> None:
        self._lines = lines
        self._fast = fast

    def __aiter__(self) -> Intercept:
        self._lines = self._lines.__aiter__()
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self._lines.__anext__()
            if not await self._fast.claim(line):
                return line


class WatchedOutput:
    """The SDK's stdout: the shared output, with the fast path reading the SDK's answer to the first request."""

    def __init__(self, output: Output, fast: FastPath) -> None:
        self._output = output
        self._fast = fast

    async def write(self, text: str) -> None:
        if self._fast.watching_out:
            self._fast.watch_out(text)
        await self._output.write(text)

    async def flush(self) -> None:
        await self._output.flush()
