"""ASGI pieces in front of the MCP endpoints: query-token removal, access log, Host/Origin, body limit, auth.

Order for an MCP endpoint: `Front` (every request: removes `?token=` from the scope before anything can
log it, adds the no-store headers, writes our access log line) → `Guard` (Host/Origin, declared body
size, credential → principal on every request, body read with a deadline) → the SDK's endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qaqnuz import (
    LIMITER_UNAVAILABLE,
    CredentialsUnavailable,
    Host,
    Principal,
    looks_like_key,
    requestid,
    rpc_error_body,
    rpc_fault,
    rpc_usable_id,
)
from qaqnuz_http.access import ACCESS_FIELDS, REQUEST_ID_HEADER, SCOPE_REQUEST_ID, RouteNames, log_access
from qaqnuz_http.access import access_log as access_log
from qaqnuz_http.fastpath import FastPath, access_token
from qaqnuz_http.scopeheaders import SCOPE_HEADERS, headers_of
from qaqnuz_http.sessions import Opening, SessionQuota, refusal

log = logging.getLogger("qaqnuz.http")

#: Where the credential of an authenticated request waits for the Binding to authenticate it again.
SCOPE_CREDENTIAL = "qaqnuz.credential"
#: The Principal the Guard authenticated for this request; the Binding uses it instead of a second lookup.
SCOPE_PRINCIPAL = "qaqnuz.principal"
#: The `?token=` value, taken out of the query string by `Front`.
SCOPE_QUERY_TOKEN = "qaqnuz.query_token"  # noqa: S105 - a scope key, not a secret
#: A dict shared by every layer of one request (also `access.ACCESS_FIELDS`); the access line reads it.
SCOPE_LOG = "qaqnuz.log"

AUTH_FAILED_BODY = json.dumps(
    {
        "error": "invalid_token",
        "error_description": "Unauthorized: the API key is missing, invalid, expired or revoked.",
    },
    separators=(",", ":"),
).encode()
WWW_AUTHENTICATE = b'Bearer realm="qaqnuz", error="invalid_token"'
BOTH_FORMS_BODY = json.dumps(
    {
        "error": "invalid_request",
        "error_description": "Send the API key either in the Authorization header or as ?token=, not both.",
    },
    separators=(",", ":"),
).encode()


class Credential:
    """A raw key that never shows itself in a repr, a traceback's locals or a debug dump."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Credential(<redacted>)"


def credential_from_scope(scope: Scope) -> str | None:
    held = scope.get(SCOPE_CREDENTIAL)
    return held.value if isinstance(held, Credential) else None


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:  # fmt: skip
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    """Exact match, or `name:*` = `name` with any numeric port (or none). Stricter than a prefix match."""
    if not host:
        return False
    for pattern in allowed:
        if host == pattern:
            return True
        if pattern.endswith(":*"):
            base = pattern[:-2]
            if host == base or (host.startswith(base + ":") and host[len(base) + 1 :].isdigit()):
                return True
    return False


def expand(patterns: list[str]) -> list[str]:
    """The SDK's matcher needs `name` listed beside `name:*` to accept a Host or Origin without a port."""
    out: list[str] = []
    for pattern in patterns:
        out.append(pattern)
        if pattern.endswith(":*") and pattern[:-2] not in out:
            out.append(pattern[:-2])
    return out


def _header(scope: Scope, name: bytes) -> list[str]:
    """Every value of one header (the rare case where more than the first matters)."""
    first, repeated = headers_of(scope)
    if name in repeated:
        return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name]
    value = first.get(name)
    return [] if value is None else [value.decode("latin-1")]


UNAVAILABLE_BODY = (
    b'{"error":"temporarily_unavailable","error_description":"Credentials cannot be checked right now. Retry shortly."}'
)
TOO_MANY_FAILURES_BODY = (
    b'{"error":"too_many_requests","error_description":"Too many failed authentications from this address. '
    b'Wait before retrying."}'
)


class FailureLimit:
    """At most `limit` failed authentications per source address in a rolling minute (checklist 33).

    Past it, a bad credential from that address is answered 429 with `Retry-After` instead of 401, but a
    valid key is still served: every client behind one NAT or proxy shares an address, and one of them
    guessing must not lock the others out. Guessing gains nothing from this (a key's secret has 256 random
    bits, and a mistyped one fails its checksum before any lookup). Memory is bounded: the last `limit`
    failures per address, and past `max_sources` addresses the oldest are forgotten.
    """

    window_s = 60.0

    def __init__(self, limit: int, *, max_sources: int = 10_000, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.max_sources = max_sources
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, source: str, now: float) -> collections.deque[float] | None:
        log_ = self._failures.get(source)
        if log_ is not None:
            while log_ and log_[0] <= now - self.window_s:
                log_.popleft()
            if not log_:
                del self._failures[source]
                return None
        return log_

    def blocked_for(self, source: str) -> int:
        """Seconds to wait (rounded up), or 0 when the address may try again."""
        now = self.clock()
        log_ = self._recent(source, now)
        if log_ is None or len(log_) < self.limit:
            return 0
        return max(1, math.ceil(log_[len(log_) - self.limit] + self.window_s - now))

    def failed(self, source: str) -> None:
        now = self.clock()
        log_ = self._recent(source, now)
        if log_ is None:
            if len(self._failures) >= self.max_sources:
                self._failures.pop(next(iter(self._failures)))
            log_ = self._failures[source] = collections.deque(maxlen=self.limit)
        log_.append(now)


#: Liveness and readiness: served whatever the Host header says.
PROBE_PATHS = frozenset(("/healthz", "/readyz"))


class ClientAddress:
    """Behind a reverse proxy every connection comes from the proxy: with `trusted_proxies` set, a request
    whose peer is one of them is taken to come from the right-most address in `X-Forwarded-For` that is not
    itself a trusted proxy (the one the nearest trusted proxy saw). A peer that is not trusted is believed
    about nothing, so a client cannot choose its own address by sending the header. The auth-failure and
    sign-in throttles, the audit log and the access log then see the real client."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def rewrite(self, scope: Scope) -> None:
        client = scope.get("client")
        if not client or not self._is_trusted(str(client[0])):
            return
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return
        hops = [h.strip() for value in forwarded for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            if self._is_trusted(hop):
                continue
            try:
                address = str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return  # a garbled chain: keep the proxy's own address rather than guess
            scope["client"] = (address, 0)
            return


class Front:
    """Every HTTP request: give it its request id (`X-Request-Id`), take `token` out of the query, add no-store
    headers, log one access line (`access.py`)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log_on: bool,
        allowed_origins: list[str],
        allowed_hosts: list[str],
        direct_posts: dict[str, ASGIApp] | None = None,
        client_address: ClientAddress | None = None,
    ) -> None:
        self.app = app
        self.client_address = client_address
        self.direct_posts = direct_posts or {}  # POSTs to these paths skip the router (the MCP endpoints)
        self.access_log_on = access_log_on
        self.allowed_origins = allowed_origins
        self.allowed_hosts = allowed_hosts
        self.routes = RouteNames.of(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        # Outermost, so the access line, the kernel's log lines and the audit records of this request (in
        # any task it starts: the SDK hands each message on with the sender's context) all carry it.
        request_id = scope.get(SCOPE_REQUEST_ID)  # set when the direct path handed this request on
        begun = None
        if not isinstance(request_id, str):
            request_id = scope[SCOPE_REQUEST_ID] = requestid.new_request_id()
            begun = requestid.begin(request_id)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        _strip_query_token(scope)
        if self.client_address is not None:
            self.client_address.rewrite(scope)
        info: dict[str, Any] = {}
        scope[SCOPE_LOG] = info
        fields = ACCESS_FIELDS.set(info)
        started = time.monotonic()
        status = 0

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*secure_headers(message.get("headers", ())), id_header]}
            await send(message)

        try:
            # DNS rebinding: Host and Origin are checked on every route, /metrics and web routes included;
            # the probes answer any Host (an orchestrator probes the pod's IP), and reveal nothing a page could use.
            hosts = _header(scope, b"host")
            origins = _header(scope, b"origin")
            probe = scope["path"] in PROBE_PATHS and scope["method"] in ("GET", "HEAD")
            if not probe and (len(hosts) != 1 or not host_allowed(hosts[0], self.allowed_hosts)):
                await respond(send_wrapped, 421, b"Invalid Host header")
            elif origins and not host_allowed(origins[0], self.allowed_origins):
                await respond(send_wrapped, 403, b"Invalid Origin header")
            else:
                direct = self.direct_posts.get(scope["path"]) if scope["method"] == "POST" else None
                await (direct or self.app)(scope, receive, send_wrapped)
        finally:
            if self.access_log_on:
                log_access(scope, status, started, info.get("key_id", "-"), info, self.routes)
            ACCESS_FIELDS.reset(fields)
            if begun is not None:
                requestid.end(begun)


def _printable(text: str, limit: int = 200) -> str:
    """A client-chosen string made safe for one log line: control characters escaped, length capped."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return escaped + ("..." if len(text) > limit else "")


def secure_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """`Cache-Control: no-store` (keeping an SSE `no-transform`) and `Referrer-Policy: no-referrer`, unless
    the response chose `same-origin` (a web route's pages: under `no-referrer` a browser sends `Origin: null`
    with its own form posts, which the Origin check must refuse)."""
    out: list[tuple[bytes, bytes]] = []
    cache = b"no-store"
    chosen: set[bytes] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"cache-control":
            if b"no-transform" in value:
                cache = b"no-store, no-transform"
        elif lowered == b"referrer-policy":
            chosen.add(value.strip().lower())
        else:
            out.append((name, value))
    referrer = b"same-origin" if chosen == {b"same-origin"} else b"no-referrer"
    out += [(b"cache-control", cache), (b"referrer-policy", referrer)]
    return out


def _strip_query_token(scope: Scope) -> None:
    raw = scope.get("query_string", b"")
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and b"?" in raw_path:  # some servers keep the query in raw_path
        raw_path, _, from_path = raw_path.partition(b"?")
        scope["raw_path"] = raw_path
        raw = raw or from_path
    if not raw:
        return
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "token"]
    if not tokens:
        return
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "token"]).encode("latin-1")
    scope[SCOPE_QUERY_TOKEN] = [Credential(t) for t in tokens]


class Tracker:
    """What graceful shutdown waits for (MCP requests in flight) and what it ends (open streams)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.streams: set[anyio.CancelScope] = set()
        self.draining = False

    async def middleware(self, ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        """An `mcp` Server middleware: counts requests being handled, in both eras and on every transport."""
        if getattr(ctx, "method", None) == "subscriptions/listen" or getattr(ctx, "request_id", None) is None:
            return await call_next(ctx)
        self.in_flight += 1
        try:
            return await call_next(ctx)
        finally:
            self.in_flight -= 1

    def end_streams(self) -> None:
        for scope in list(self.streams):
            scope.cancel()


class Guard:
    """An MCP endpoint's gate: Host/Origin, body limit, authentication on every request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: Host,
        binding: Any,
        query_token: bool,
        max_body_bytes: int,
        request_timeout: float,
        tracker: Tracker,
        failure_limit: FailureLimit | None = None,
        fast: FastPath | None = None,
        sessions: SessionQuota | None = None,
        opens: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.binding = binding
        self.fast = fast
        self.sessions = sessions  # with `opens`: which requests open a session, counted against the caps
        self.opens = opens
        self.failure_limit = failure_limit
        self.query_token = query_token
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Host and Origin were checked by Front, which wraps every route.
        declared = _header(scope, b"content-length")
        if declared and (not declared[0].isdigit() or int(declared[0]) > self.max_body_bytes):
            await respond(send, 413, b"Request body too large")
            return
        if self.tracker.draining:
            await respond(send, 503, b"Shutting down", extra=((b"retry-after", b"1"),))
            return

        authenticated = await authenticate(
            scope, send, host=self.host, query_token=self.query_token, failure_limit=self.failure_limit
        )
        if authenticated is None:
            return
        principal, credential = authenticated
        info = scope.get(SCOPE_LOG)
        if isinstance(info, dict):
            info["key_id"] = principal.key_id

        body = b""
        if scope["method"] == "POST":
            read = await read_body(receive, send, self.max_body_bytes, self.request_timeout)
            if read is None:
                return
            body = read
            if self.fast is not None:
                self.tracker.in_flight += 1  # shutdown waits for it as for a request the SDK serves
                try:
                    if await self.fast.answer(scope, body, principal, send):
                        return
                finally:
                    self.tracker.in_flight -= 1
            # before the SDK, whose answers would quote its parser, pydantic, or the version asked for
            answer = rpc_fault(body) or unsupported_version(scope, body)
            if answer is not None:
                await respond(send, 400, answer, b"application/json")
                return
            receive = _replay(body, receive)

        # The SDK's turn: it sees the principal (never the key) and no Authorization header.
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        scope.pop(SCOPE_HEADERS, None)
        scope[SCOPE_CREDENTIAL] = Credential(credential) if credential is not None else None
        scope[SCOPE_PRINCIPAL] = principal
        token = access_token(principal)
        scope["user"] = AuthenticatedUser(token)
        scope["auth"] = AuthCredentials(token.scopes)

        opening: Opening | None = None
        if self.sessions is not None and self.opens is not None and self.opens(scope):
            opening = await self._admit(self.sessions, principal, body, send)
            if opening is None:
                return
        streaming = scope["method"] == "GET" or _header(scope, b"mcp-method") == ["subscriptions/listen"]
        with self.binding.acting_for(principal):
            if opening is None:
                await (self._stream if streaming else self.app)(scope, receive, send)
                return
            assert self.sessions is not None
            serving = self.sessions.serving(opening)
            try:
                await (self._stream if streaming else self.app)(scope, receive, send)
            finally:
                self.sessions.done(opening, serving)

    async def _admit(self, sessions: SessionQuota, principal: Principal, body: bytes, send: Send) -> Opening | None:
        """A request that opens a session: under the key's and brand's session caps, and one unit of their
        rate limits; else answered 429 (503 while the limiter cannot answer) naming the limit."""
        request_id = request_id_of(body)
        admitted = sessions.admit(principal)
        if not isinstance(admitted, Opening):
            message, limit = admitted
            await respond(send, 429, refusal(message, limit, None, request_id), b"application/json",
                          ((b"retry-after", b"1"),))  # fmt: skip
            return None
        admit_session = getattr(self.host, "admit_session", None)
        try:
            refused = await admit_session(principal) if admit_session is not None else None
        except BaseException:  # fail closed, and the count goes back
            sessions.release(admitted)
            raise
        if refused is None:
            return admitted
        sessions.release(admitted)
        if refused.step == "entitlement":
            await respond(send, 403, refusal(refused.text, "entitlement", None, request_id), b"application/json")
            return None
        hint = getattr(refused.result, "retry_hint", None)
        wait = hint.retry_after_ms if hint is not None else 1000
        unavailable = refused.text == LIMITER_UNAVAILABLE
        limit = "rate_limiter" if unavailable else "per_key/per_brand rate limit"
        retry_after = str(max(1, math.ceil(wait / 1000))).encode()
        await respond(send, 503 if unavailable else 429, refusal(refused.text, limit, wait, request_id),
                      b"application/json", ((b"retry-after", retry_after),))  # fmt: skip
        return None

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A long-lived response (GET stream, SSE, subscriptions/listen): ended cleanly on shutdown."""
        state = {"started": False, "done": False}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        with anyio.CancelScope() as cancel_scope:
            self.tracker.streams.add(cancel_scope)
            try:
                await self.app(scope, receive, send_tracked)
            finally:
                self.tracker.streams.discard(cancel_scope)
        if cancel_scope.cancelled_caught and state["started"] and not state["done"]:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_body(receive: Receive, send: Send, max_bytes: int, deadline_s: float) -> bytes | None:
    """The whole body within the deadline and the size limit; answers 408/413 itself and returns None."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):  # the servers here run on asyncio; a third of anyio's cost
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client went away
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    await respond(send, 413, b"Request body too large")
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        await respond(send, 408, b"Request timeout")
        return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyLimit:
    """A web route's requests under the same body limit and read deadline as the MCP endpoints: the body is
    read whole (or refused with 413/408) before the route runs, then replayed to it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, request_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        declared = _header(scope, b"content-length")
        if declared and (not declared[0].isdigit() or int(declared[0]) > self.max_body_bytes):
            await respond(send, 413, b"Request body too large")
            return
        body = await read_body(receive, send, self.max_body_bytes, self.request_timeout)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)


async def authenticate(
    scope: Scope, send: Send, *, host: Host, query_token: bool, failure_limit: FailureLimit | None
) -> tuple[Principal, str | None] | None:
    """The request's principal and raw credential; or None after answering 400, 401 or 429 itself."""
    authorizations = _header(scope, b"authorization")
    query_tokens = scope.get(SCOPE_QUERY_TOKEN) or []
    if (authorizations and query_tokens) or len(authorizations) > 1 or len(query_tokens) > 1:
        await respond(send, 400, BOTH_FORMS_BODY, b"application/json")
        return None
    credential: str | None = None
    if authorizations:
        scheme, _, value = authorizations[0].strip().partition(" ")
        if scheme.lower() == "bearer":
            credential = value.strip()
    elif query_tokens and query_token:
        credential = query_tokens[0].value
    source = (scope.get("client") or ("?", 0))[0]
    # Too many bad credentials from this address: another bad one is answered 429, a valid key is served.
    wait = failure_limit.blocked_for(source) if failure_limit is not None else 0
    try:
        principal = await host.authenticate(credential, transport="http")
    except CredentialsUnavailable:  # refused, but not as a bad key: the client keeps it and retries
        await respond(send, 503, UNAVAILABLE_BODY, b"application/json", ((b"retry-after", b"1"),))
        return None
    if principal is None:
        if failure_limit is not None:
            failure_limit.failed(source)
        if wait:
            await respond(
                send, 429, TOO_MANY_FAILURES_BODY, b"application/json", ((b"retry-after", str(wait).encode()),)
            )
            return None
        log.debug(
            "refused %s %s: credential %s",
            scope.get("method"),
            _printable(str(scope.get("path"))),
            "absent" if credential is None else "not accepted",
        )
        await respond(send, 401, AUTH_FAILED_BODY, b"application/json", ((b"www-authenticate", WWW_AUTHENTICATE),))
        return None
    return principal, credential


class KeyGate:
    """A web route that takes MCP keys (`WebRoute.mcp_key`): every request authenticated like an MCP request;
    the route gets the principal in `scope["qaqnuz.principal"]`, never the key."""

    def __init__(self, app: ASGIApp, *, host: Host, query_token: bool, failure_limit: FailureLimit | None) -> None:
        self.app = app
        self.host = host
        self.query_token = query_token
        self.failure_limit = failure_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        authenticated = await authenticate(
            scope, send, host=self.host, query_token=self.query_token, failure_limit=self.failure_limit
        )
        if authenticated is None:
            return
        scope = _without_credentials(scope)
        scope[SCOPE_PRINCIPAL] = authenticated[0]
        info = scope.get(SCOPE_LOG)
        if isinstance(info, dict):
            info["key_id"] = authenticated[0].key_id
        await self.app(scope, receive, send)


class NoKeys:
    """A web route with its own authentication: an MCP key never reaches it (a `?token=` and an
    `Authorization: Bearer` holding anything shaped like a key are removed; other credentials pass)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await self.app(_without_credentials(scope, keep_other_bearers=True), receive, send)


def _without_credentials(scope: Scope, *, keep_other_bearers: bool = False) -> Scope:
    """The scope without `?token=` and without the Authorization header (or only without key-shaped
    bearer tokens, with `keep_other_bearers`)."""

    def is_mcp_key(value: bytes) -> bool:
        scheme, _, token = value.decode("latin-1").strip().partition(" ")
        return scheme.lower() == "bearer" and looks_like_key(token)

    scope = dict(scope)
    scope.pop(SCOPE_HEADERS, None)
    scope.pop(SCOPE_QUERY_TOKEN, None)
    scope.pop(SCOPE_CREDENTIAL, None)
    scope.pop(SCOPE_PRINCIPAL, None)
    scope["headers"] = [
        (k, v)
        for k, v in scope.get("headers", ())
        if k != b"authorization" or (keep_other_bearers and not is_mcp_key(v))
    ]
    return scope


#: The JSON-RPC code the SDK gives an unsupported protocol version (kept, so clients read it as they would).
UNSUPPORTED_VERSION = -32022
#: Every protocol version the SDK serves, in either era.
SUPPORTED_VERSIONS = frozenset((*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS))
_UNSUPPORTED_DATA = {"supported": sorted(SUPPORTED_VERSIONS)}


def unsupported_version(scope: Scope, body: bytes) -> bytes | None:
    """The answer to a `MCP-Protocol-Version` the server does not speak, or None. The SDK's own answer repeats
    the version asked for (`data.requested`); this one lists only what is supported."""
    version = headers_of(scope)[0].get(b"mcp-protocol-version")
    if version is None or version.decode("latin-1") in SUPPORTED_VERSIONS:
        return None
    return rpc_error_body(UNSUPPORTED_VERSION, "Unsupported protocol version", request_id_of(body), _UNSUPPORTED_DATA)


def request_id_of(body: bytes) -> Any:
    """The JSON-RPC id of a request body, to answer it with (None when there is none usable)."""
    if not body:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return rpc_usable_id(message) if isinstance(message, dict) else None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
