"""The Starlette app: Streamable HTTP at /mcp and /mcp/v1, legacy HTTP+SSE, health, readiness, metrics, and
the web routes plugins register (each behind its own authentication, never an MCP key unless it asks)."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import attrs
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import qaqnuz
from qaqnuz import Host, UsageError
from qaqnuz_http.access import ACCESS_FIELDS, note_request
from qaqnuz_http.direct import DirectAnswers
from qaqnuz_http.fastpath import FastPath
from qaqnuz_http.guard import (
    SCOPE_PRINCIPAL,
    SCOPE_QUERY_TOKEN,
    BodyLimit,
    ClientAddress,
    FailureLimit,
    Front,
    Guard,
    KeyGate,
    NoKeys,
    Tracker,
    credential_from_scope,
    expand,
)
from qaqnuz_http.scopeheaders import headers_of
from qaqnuz_http.sessions import SessionQuota
from qaqnuz_http.settings import HttpSettings, Limits

log = logging.getLogger("qaqnuz.http")
MESSAGES_PATH = "/messages/"


@attrs.define
class Built:
    app: ASGIApp
    binding: Any
    session_manager: StreamableHTTPSessionManager
    tracker: Tracker
    fast: FastPath | None = None
    direct: DirectAnswers | None = None  # the fast path's requests answered on the connection itself


def _credential(ctx: Any) -> Any:
    """The Binding's caller source: the Principal the Guard authenticated for this very request."""
    request = getattr(ctx, "request", None)
    return request.scope.get(SCOPE_PRINCIPAL) if request is not None else None


class SessionCount:
    """Tells the host when an MCP session opens and closes on one transport (`qaqnuz_sessions_open`).

    A host without the methods (an older kernel, a test double) counts nothing rather than failing."""

    def __init__(self, host: Host, transport: str) -> None:
        self._opened: Callable[[str], None] | None = getattr(host, "session_opened", None)
        self._closed: Callable[[str], None] | None = getattr(host, "session_closed", None)
        self.transport = transport

    def opened(self) -> None:
        if self._opened is not None:
            self._opened(self.transport)

    def closed(self) -> None:
        if self._closed is not None:
            self._closed(self.transport)


class CountedSessions(dict[str, Any]):
    """The SDK session manager's table of session-era sessions, counting what enters and leaves it.

    The table is the one place every session passes through, however it ends (DELETE, idle timeout, a
    crash, a refused opening request, shutdown): the manager offers no hook of its own. It relies on the same
    `mcp` 2.3.0 table the fast path reads; if an upgrade moves it, sessions are simply not counted."""

    def __init__(self, count: SessionCount, quota: SessionQuota | None = None) -> None:
        super().__init__()
        self._count = count
        self._quota = quota

    def __setitem__(self, key: str, value: Any) -> None:
        new = key not in self
        super().__setitem__(key, value)
        if new:
            self._count.opened()
            if self._quota is not None:
                self._quota.registered(key)

    def _ended(self, key: str) -> None:
        self._count.closed()
        if self._quota is not None:
            self._quota.ended(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._ended(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            value = super().pop(key)
            self._ended(key)
            return value
        return super().pop(key, *default)

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        for key in keys:
            self._ended(key)


def _access_fields(host: Host) -> Any:
    """An `mcp` Server middleware: what the SDK parsed (the MCP method, a tools/call's tool) for the access
    line of the HTTP request that carried the message (it runs in a copy of that request's context)."""

    async def middleware(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        fields = ACCESS_FIELDS.get()
        if fields is not None:
            principal = _credential(ctx)
            note_request(
                fields,
                getattr(ctx, "method", None),
                getattr(ctx, "params", None),
                (lambda: host.list_tools(principal).names) if principal is not None else (),
            )
        return await call_next(ctx)

    return middleware


class SseEndpoint:
    """GET /sse: one legacy HTTP+SSE connection (handshake era only)."""

    def __init__(self, sse: SseServerTransport, server: Any, count: SessionCount | None = None) -> None:
        self.sse = sse
        self.server = server
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tokens = scope.get(SCOPE_QUERY_TOKEN)
        if tokens and credential_from_scope(scope):
            # The client found its key in the URL, so it POSTs to the endpoint we announce: carry the key
            # there too (to this client only; `Front` strips it from every request before logging).
            send = _announce_with_token(send, tokens[0].value)
        try:
            async with self.sse.connect_sse(scope, receive, send) as (read_stream, write_stream):
                if self.count is not None:
                    self.count.opened()
                try:
                    await self.server.run(read_stream, write_stream, self.server.create_initialization_options())
                finally:
                    if self.count is not None:
                        self.count.closed()
        except ValueError:  # the SDK's Host/Origin check refused the request and has answered it
            return


def _announce_with_token(send: Send, token: str) -> Send:
    done = False
    needle = f"{MESSAGES_PATH}?session_id=".encode()
    replacement = f"{MESSAGES_PATH}?token={quote(token, safe='')}&session_id=".encode()

    async def rewrite(message: Message) -> None:
        nonlocal done
        if not done and message["type"] == "http.response.body" and needle in message.get("body", b""):
            message = {**message, "body": message["body"].replace(needle, replacement, 1)}
            done = True
        await send(message)

    return rewrite


class MetricsGate:
    """`metrics_auth`: the metric names reveal brands and tools, so a scrape may have to come from a listed
    network (after `trusted_proxies`), carry the bearer token, or both. The token is compared in constant
    time and never logged."""

    def __init__(self, allow: list[str], token: bytes | None) -> None:
        self.allow = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        self.token = token

    def refusal(self, request: Request) -> Response | None:
        if self.allow:
            try:
                peer = ipaddress.ip_address((request.client.host if request.client else "").strip("[]"))
            except ValueError:
                peer = None
            if peer is None or not any(peer in network for network in self.allow):
                return JSONResponse({"error": "forbidden", "error_description": "not from an allowed network"}, 403)
        if self.token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                return JSONResponse({"error": "invalid_token"}, 401, {"www-authenticate": 'Bearer realm="metrics"'})
        return None


def opens_session(scope: Scope) -> bool:
    """Whether this request opens something that stays open, counted like a session: in the session era (no
    protocol version header, or a handshake version) a request without an `Mcp-Session-Id`, for which the SDK
    opens a session (see its `_handle_stateful_request`); in the 2026-07-28 era a `subscriptions/listen`
    stream, held for as long as it is open."""
    headers, _ = headers_of(scope)
    if b"mcp-session-id" in headers:
        return False
    version = headers.get(b"mcp-protocol-version")
    if version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS:
        return True
    return headers.get(b"mcp-method") == b"subscriptions/listen"


def _always(scope: Scope) -> bool:
    return True


#: Paths the transport serves itself; a web route may not be mounted on or under them.
RESERVED_PATHS = ("/mcp", "/sse", "/messages", "/healthz", "/readyz", "/metrics")


def build_app(host: Host, settings: HttpSettings, limits: Limits, *, metrics_token: bytes | None = None) -> Built:
    binding = qaqnuz.Binding(host, _credential, transport="http")
    tracker = Tracker()
    binding.server.middleware.append(tracker.middleware)
    binding.server.middleware.append(_access_fields(host))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=expand(settings.allowed_hosts),
        allowed_origins=expand(settings.allowed_origins),
    )
    session_manager = StreamableHTTPSessionManager(
        app=binding.server,
        json_response=False,
        stateless=False,
        security_settings=security,
        session_idle_timeout=limits.session_idle_timeout,
        max_request_body_size=settings.max_body_bytes,
        max_sessions=settings.max_sessions,
    )
    quota: SessionQuota | None = SessionQuota(settings.max_sessions_per_key, settings.max_sessions_per_brand)
    if isinstance(getattr(session_manager, "_server_instances", None), dict) and not session_manager._server_instances:
        session_manager._server_instances = CountedSessions(SessionCount(host, "http"), quota)
    else:  # an SDK that keeps its sessions elsewhere: the per-key and per-brand caps cannot be kept
        log.warning("max_sessions_per_key and max_sessions_per_brand are not enforced: the SDK's session table moved")
        quota = None
    sse = SseServerTransport(MESSAGES_PATH, security_settings=security, max_request_body_size=settings.max_body_bytes)

    failures = FailureLimit(settings.auth_failures_per_minute) if settings.auth_failures_per_minute else None
    client_address = ClientAddress(settings.trusted_proxies) if settings.trusted_proxies else None

    fast = FastPath(host, session_manager) if settings.fast_path else None

    def guard(app: ASGIApp, fast: FastPath | None = None, opens: Callable[[Scope], bool] | None = None) -> Guard:
        return Guard(
            app,
            host=host,
            binding=binding,
            query_token=settings.query_token,
            max_body_bytes=settings.max_body_bytes,
            request_timeout=limits.request_timeout,
            tracker=tracker,
            failure_limit=failures,
            fast=fast,
            sessions=quota if opens is not None else None,
            opens=opens,
        )

    mcp_endpoint = guard(StreamableHTTPASGIApp(session_manager), fast, opens_session)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await host.readiness()
        ready = all(checks.values()) and not tracker.draining
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)

    metrics_gate = MetricsGate(settings.metrics_auth.allow if settings.metrics_auth else [], metrics_token)

    async def metrics(request: Request) -> Response:
        refusal = metrics_gate.refusal(request)
        if refusal is not None:
            return refusal
        return Response(generate_latest(host.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    sse_count = SessionCount(host, "sse")
    routes: list[BaseRoute] = [
        Route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/mcp/v1", mcp_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/sse", guard(SseEndpoint(sse, binding.server, sse_count), opens=_always), methods=["GET"]),
        Mount(MESSAGES_PATH.rstrip("/"), app=guard(sse.handle_post_message)),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if settings.metrics:
        routes.append(Route("/metrics", metrics, methods=["GET"]))
    for mounted in host.web_routes():
        clash = next((p for p in RESERVED_PATHS if mounted.path == p or mounted.path.startswith(p + "/")), None)
        if clash is not None or mounted.path in ("", "/"):
            raise UsageError(
                f"[plugins] routes: route {mounted.name!r} wants {mounted.path or '/'}, which the HTTP transport "
                f"serves itself ({clash or '/'}); its plugin must use another path"
            )
        gate: ASGIApp = (
            KeyGate(mounted.app, host=host, query_token=settings.query_token, failure_limit=failures)
            if mounted.mcp_key
            else NoKeys(mounted.app)
        )
        gate = BodyLimit(gate, max_body_bytes=settings.max_body_bytes, request_timeout=limits.request_timeout)
        routes.append(Route(mounted.path, gate))  # the route's own path, and everything under it
        routes.append(Mount(mounted.path, app=gate))
        log.info("web route %s mounted at %s%s", mounted.name, mounted.path, " (MCP key)" if mounted.mcp_key else "")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with session_manager.run():  # a mounted SDK app's own lifespan would never run
            yield

    # No slash redirects: a 307 to "/messages/" would be built from the request's Host.
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False
    front = Front(
        app,
        access_log_on=settings.access_log,
        allowed_origins=expand(settings.allowed_origins),
        allowed_hosts=expand(settings.allowed_hosts),
        direct_posts={"/mcp": mcp_endpoint, "/mcp/v1": mcp_endpoint},
        client_address=client_address,
    )
    direct = None
    if fast is not None:
        direct = DirectAnswers(
            host=host,
            fast=fast,
            paths=frozenset(("/mcp", "/mcp/v1")),
            allowed_hosts=front.allowed_hosts,
            allowed_origins=front.allowed_origins,
            access_log_on=settings.access_log,
            query_token=settings.query_token,
            max_body_bytes=settings.max_body_bytes,
            request_timeout=limits.request_timeout,
            tracker=tracker,
            failure_limit=failures,
            client_address=client_address,
        )
    return Built(front, binding, session_manager, tracker, fast, direct)
