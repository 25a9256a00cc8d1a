"""The fast path: well-formed `tools/call` and `tools/list` POSTs answered without the SDK's per-request
machinery, in both protocol eras, through the same governed pipeline.

The SDK spends several hundred microseconds per request on its transport (pydantic models in and out, an SSE
stream and a task group per request) before and after the governed path runs. For the two requests an agent
makes all day, this module decodes the JSON-RPC body with msgspec, calls the kernel's `Host` (the one
governed path: authentication already done by the guard, then entitlement, rate limit, visibility,
validation, policy, approval, execution, audit, metrics) and writes one `application/json` answer shaped
exactly as the SDK's (a differential test holds the two paths to equal answers).

Anything else, or anything unusual, goes to the SDK unchanged: `initialize`, `server/discover`, notifications,
GET streams, a request with a progress token, a call to a tool marked `interactive` (it logs, reports progress,
samples or elicits, which needs the SDK's stream), `Mcp-Param-*` headers, a tools/list with a cursor, a
session the SDK does not hold for this key, an `Accept` or `Content-Type` the SDK would refuse, any body the
fast path does not fully understand. The SDK then answers as it always did, errors included.

Session-era requests are answered only for a session the SDK's session manager holds for the same credential;
the fast path reads the manager's session table and keeps the session's idle timer as a served request would.
Those are internals of `mcp` 2.3.0 (pinned); `session_support()` checks they are there, and a test fails if an
upgrade moves them (the fast path then leaves the session era to the SDK rather than guess).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import Scope, Send

from qaqnuz import FastAnswers, FastRequest, Host, Principal
from qaqnuz_http.access import ACCESS_FIELDS, note_request
from qaqnuz_http.scopeheaders import headers_of

log = logging.getLogger("qaqnuz.http")
_JSON = [(b"content-type", b"application/json")]


def _accepts_both(accept: bytes) -> bool:
    """The SDK's own rule for a streamable POST: JSON and SSE both acceptable (wildcards count)."""
    types = {part.split(b";")[0].strip().lower() for part in accept.split(b",")}
    if b"*/*" in types:
        return True
    return bool(types & {b"application/json", b"application/*"}) and bool(types & {b"text/event-stream", b"text/*"})


def _json_content(content_type: bytes) -> bool:
    parts = content_type.split(b";")[0].split(b",")
    return any(part.strip() == b"application/json" for part in parts)


def access_token(principal: Principal) -> AccessToken:
    """How the SDK sees a principal (its session table keys sessions by it): never the raw key."""
    return AccessToken(
        token=f"key:{principal.key_id}",
        client_id=principal.key_id,
        scopes=sorted(principal.scopes),
        subject=f"{principal.brand}:{principal.key_id}",
    )


class FastPath:
    def __init__(self, host: Host, session_manager: StreamableHTTPSessionManager) -> None:
        self.answers = FastAnswers(host, transport="http")
        self.sessions = session_manager
        self.session_era = session_support(session_manager)
        self.answered = 0  # requests this path answered itself (what a test can tell the two paths apart by)
        self._media: dict[tuple[bytes, bytes], bool] = {}  # (Content-Type, Accept) -> whether the path takes it
        self._requestors: dict[Principal, Any] = {}  # how the SDK's session table names a principal (pydantic: costly)
        if not self.session_era:
            log.warning("the fast path leaves session-era requests to the SDK: its session table is not where expected")

    async def answer(self, scope: Scope, body: bytes, principal: Principal, send: Send) -> bool:
        """Answer the request and return True, or return False (nothing sent) for the SDK to serve it."""
        headers, repeated = headers_of(scope)
        if repeated:  # the SDK's to judge
            return False
        media = (headers.get(b"content-type", b""), headers.get(b"accept", b""))
        fits = self._media.get(media)
        if fits is None:  # a client sends the same two headers on every request: judged once
            fits = _json_content(media[0]) and _accepts_both(media[1])
            if len(self._media) >= 256:
                self._media.clear()
            self._media[media] = fits
        if not fits:
            return False
        request = FastAnswers.decode(body)
        if request is None:
            return False
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        session = headers.get(b"mcp-session-id")
        if version in MODERN_PROTOCOL_VERSIONS and session is None:
            if not (_routing_headers(headers, request) and FastAnswers.modern_envelope(request, version)):
                return False
            modern, response_headers = True, _JSON
        elif session is not None and (not version or version in HANDSHAKE_PROTOCOL_VERSIONS) and self.session_era:
            if not FastAnswers.session_envelope(request):
                return False
            transport = self._session(principal, session.decode("latin-1"))
            if transport is None:
                return False
            _keep_alive(transport)
            modern, response_headers = False, [*_JSON, (b"mcp-session-id", session)]
        else:
            return False
        if request.method == "tools/call" and any(k.startswith(b"mcp-param-") for k in headers):
            return False  # the SDK checks those headers against the schema
        if not self.answers.takes(principal, request):
            return False
        note_request(ACCESS_FIELDS.get(), request.method, request.params, lambda: self._visible(principal))
        payload = await self.answers.answer(principal, request, modern=modern)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*response_headers, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self.answered += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s answered on the fast path (%s)", request.method, version or "session")
        return True

    def _visible(self, principal: Principal) -> frozenset[str]:
        return self.answers.host.list_tools(principal).names

    def _session(self, principal: Principal, session_id: str) -> Any | None:
        """The SDK's transport for this session if it is open and was opened with this same credential."""
        transport = self.sessions._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return None
        requestor = self._requestors.get(principal)
        if requestor is None:
            if len(self._requestors) >= 4096:
                self._requestors.clear()
            requestor = self._requestors[principal] = authorization_context(AuthenticatedUser(access_token(principal)))
        if self.sessions._session_owners.get(session_id) != requestor:
            return None
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None
        return transport


def _routing_headers(headers: Mapping[bytes, bytes], request: FastRequest) -> bool:
    """2026-07-28's `Mcp-Method` and `Mcp-Name` headers, matching the body as the SDK requires."""
    if headers.get(b"mcp-method", b"").decode("latin-1") != request.method:
        return False
    return request.method != "tools/call" or headers.get(b"mcp-name", b"").decode("latin-1") == request.params["name"]


def _keep_alive(transport: Any) -> None:
    """What the SDK does for a request it serves on a session: push its idle deadline out. Moving a deadline
    re-arms a timer, so it is moved only once it would gain a second, or a quarter of a shorter timeout (an
    idle session then ends at most that much early)."""
    idle = transport.idle_scope
    timeout = getattr(transport, "_idle_timeout", None)
    if idle is not None and timeout is not None and not transport._requests_in_flight:
        deadline = asyncio.get_running_loop().time() + timeout  # anyio's clock on asyncio, without its dispatch
        if deadline - idle.deadline >= min(1.0, timeout / 4):
            idle.deadline = deadline


def session_support(manager: StreamableHTTPSessionManager) -> bool:
    """Whether the SDK's session internals the fast path relies on are where they are in mcp 2.3.0."""
    from mcp.server.streamable_http import StreamableHTTPServerTransport

    probe = StreamableHTTPServerTransport(mcp_session_id="probe", idle_timeout=60)
    return (
        isinstance(getattr(manager, "_server_instances", None), dict)
        and isinstance(getattr(manager, "_session_owners", None), dict)
        and hasattr(probe, "idle_scope")
        and hasattr(probe, "is_terminated")
        and isinstance(getattr(probe, "_requests_in_flight", None), int)
        and math.isfinite(getattr(probe, "_idle_timeout", math.inf))
    )
