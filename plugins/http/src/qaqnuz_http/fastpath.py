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

import logging
import math
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import Scope, Send

from qaqnuz import Binding, Host, Outcome, Principal, ToolList

log = logging.getLogger("qaqnuz.http")

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
_MESSAGE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_KEYS = frozenset({"name", "arguments", "_meta"})
_META_KEYS = frozenset({PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, CLIENT_INFO_META})
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_JSON = [(b"content-type", b"application/json")]
_INTERNAL_ERROR = b',"error":{"code":-32603,"message":"Internal error"}}'


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers (the last of each name; a repeated header sends the request to the SDK)."""
    out: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        if name in out:
            out[b"\0repeated"] = b"1"
        out[name] = value
    return out


def _accepts_both(accept: bytes) -> bool:
    """The SDK's own rule for a streamable POST: JSON and SSE both acceptable (wildcards count)."""
    types = {part.split(b";")[0].strip().lower() for part in accept.split(b",")}
    if b"*/*" in types:
        return True
    return bool(types & {b"application/json", b"application/*"}) and bool(types & {b"text/event-stream", b"text/*"})


def _json_content(content_type: bytes) -> bool:
    parts = content_type.split(b";")[0].split(b",")
    return any(part.strip() == b"application/json" for part in parts)


class FastPath:
    def __init__(self, host: Host, session_manager: StreamableHTTPSessionManager) -> None:
        self.host = host
        self.sessions = session_manager
        self.server_info = {"name": host.server_name, "version": host.version}
        self.session_era = session_support(session_manager)
        self.answered = 0  # requests this path answered itself (what a test can tell the two paths apart by)
        if not self.session_era:
            log.warning("the fast path leaves session-era requests to the SDK: its session table is not where expected")

    async def answer(self, scope: Scope, body: bytes, principal: Principal, send: Send) -> bool:
        """Answer the request and return True, or return False (nothing sent) for the SDK to serve it."""
        headers = _headers(scope)
        if b"\0repeated" in headers or not _json_content(headers.get(b"content-type", b"")):
            return False
        if not _accepts_both(headers.get(b"accept", b"")):
            return False
        try:
            message = _decoder.decode(body)
        except msgspec.DecodeError:
            return False
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or set(message) - _MESSAGE_KEYS:
            return False
        request_id, method, params = message.get("id"), message.get("method"), message.get("params", {})
        if not isinstance(request_id, str | int) or isinstance(request_id, bool) or not isinstance(params, dict):
            return False
        if method not in ("tools/call", "tools/list"):
            return False
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        session = headers.get(b"mcp-session-id")
        if version in MODERN_PROTOCOL_VERSIONS and session is None:
            if not self._modern_envelope(headers, method, params, version):
                return False
            extra: dict[str, Any] | None = {"resultType": "complete", "_meta": {SERVER_INFO_META: self.server_info}}
            response_headers = _JSON
        elif session is not None and (not version or version in HANDSHAKE_PROTOCOL_VERSIONS) and self.session_era:
            if not self._session_envelope(params):
                return False
            transport = self._session(scope, session.decode("latin-1"))
            if transport is None:
                return False
            _keep_alive(transport)
            extra = None
            response_headers = [*_JSON, (b"mcp-session-id", session)]
        else:
            return False
        if method == "tools/list":
            if set(params) - {"_meta"}:
                return False  # a cursor, or something newer: the SDK's answer
            payload = _response(request_id, self._list(principal, extra))
        else:
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str) or not isinstance(arguments, dict | None):
                return False
            if any(k.startswith(b"mcp-param-") for k in headers):
                return False  # the SDK checks those headers against the schema
            tool = self.host.list_tools(principal).find(name)
            if tool is not None and tool.interactive:
                return False  # it talks back to its caller: the SDK's stream carries that
            try:
                outcome = await self.host.call_tool(principal, name, arguments, transport="http")
                payload = _response(request_id, _encoder.encode(_call_result(outcome, extra)))
            except Exception as exc:  # as the binding answers it: a fixed error, never the exception's text
                log.error("tools/call failed outside the pipeline (%s)", type(exc).__name__)
                payload = b'{"jsonrpc":"2.0","id":' + _encoder.encode(request_id) + _INTERNAL_ERROR
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
            log.debug("%s answered on the fast path (%s)", method, "session" if extra is None else version)
        return True

    # -- eras ------------------------------------------------------------------------------------------------
    def _modern_envelope(
        self, headers: Mapping[bytes, bytes], method: str, params: dict[str, Any], version: str
    ) -> bool:
        """The per-request envelope of 2026-07-28, exactly as the SDK requires it (else the SDK explains)."""
        if headers.get(b"mcp-method", b"").decode("latin-1") != method:
            return False
        if method == "tools/call" and headers.get(b"mcp-name", b"").decode("latin-1") != params.get("name"):
            return False
        meta = params.get("_meta")
        if not isinstance(meta, dict) or set(meta) - _META_KEYS:
            return False  # a progress token, or anything newer
        if meta.get(PROTOCOL_VERSION_META) != version or not isinstance(meta.get(CLIENT_CAPABILITIES_META), dict):
            return False
        client_info = meta.get(CLIENT_INFO_META)
        if client_info is not None and not isinstance(client_info, dict):
            return False
        return not set(params) - _CALL_KEYS

    def _session_envelope(self, params: dict[str, Any]) -> bool:
        meta = params.get("_meta")
        if meta is not None and (not isinstance(meta, dict) or meta):
            return False  # a progress token (or other request metadata): the SDK's stream
        return not set(params) - _CALL_KEYS

    def _session(self, scope: Scope, session_id: str) -> Any | None:
        """The SDK's transport for this session if it is open and was opened with this same credential."""
        transport = self.sessions._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return None
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if self.sessions._session_owners.get(session_id) != requestor:
            return None
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None
        return transport

    # -- answers ---------------------------------------------------------------------------------------------
    def _list(self, principal: Principal, extra: dict[str, Any] | None) -> bytes:
        """The tools/list result, its tools array encoded once per visible list and reused."""
        try:
            tools = _encoded_tools(self.host.list_tools(principal))
        except Exception as exc:  # as the binding answers it: show nothing rather than leak
            log.error("tools/list failed (%s)", type(exc).__name__)
            tools = b"[]"
        if extra is None:
            return b'{"tools":' + tools + b"}"
        rest = _encoder.encode({"cacheScope": "private", "ttlMs": 0, **extra})
        return b'{"tools":' + tools + b"," + rest[1:]


def _response(request_id: str | int, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + _encoder.encode(request_id) + b',"result":' + result + b"}"


def _encoded_tools(visible: ToolList) -> bytes:
    """The tools array as JSON, encoded once per visible list (the list is cached per key and catalogue), from
    the binding's own MCP definitions so both paths show the same tools."""
    cached: bytes | None = visible.cache.get("http-json")
    if cached is None:
        dumped = [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in Binding.listed(visible)]
        cached = visible.cache["http-json"] = _encoder.encode(dumped)
    return cached


def _call_result(outcome: Outcome, extra: dict[str, Any] | None) -> dict[str, Any]:
    content: list[Any] = [{"type": "text", "text": outcome.text}]
    for block in outcome.blocks:  # MCP content blocks a tool added (rare): as the SDK dumps them
        content.append(block.model_dump(by_alias=True, exclude_none=True, mode="json"))
    result: dict[str, Any] = {
        "content": content,
        "isError": outcome.is_error,
        "structuredContent": outcome.result,  # a msgspec Struct: encoded as it is
    }
    if extra is not None:
        result.update(extra)
    return result


def _keep_alive(transport: Any) -> None:
    """What the SDK does for a request it serves on a session: push its idle deadline out."""
    idle = transport.idle_scope
    timeout = getattr(transport, "_idle_timeout", None)
    if idle is not None and timeout is not None and not transport._requests_in_flight:
        idle.deadline = max(idle.deadline, anyio.current_time() + timeout)


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
