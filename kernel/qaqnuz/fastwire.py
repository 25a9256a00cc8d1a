"""The fast path's wire: plain `tools/call` and `tools/list` requests decoded and answered as JSON-RPC bytes,
for transports that answer them without the SDK's per-request machinery (pydantic models in and out, a
stream and a task group per request).

This module owns what is the same on every transport: which requests qualify (anything unusual stays with
the SDK, which then answers as it always did, errors included), and the answer's exact shape in each era,
from the same `Host` calls and the same MCP tool definitions the binding uses. Transports own the rest:
their own envelope (HTTP headers, a stdio connection's state) and when a request may skip the SDK at all.
Differential tests hold both paths to equal answers.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from qaqnuz.envelope import Outcome
from qaqnuz.records import Host, Principal, ToolList
from qaqnuz.server import wire_tools

log = logging.getLogger("qaqnuz.server")

MODERN_VERSION = "2026-07-28"
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
_MESSAGE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_KEYS = frozenset({"name", "arguments", "_meta"})
_MODERN_META_KEYS = frozenset({PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, CLIENT_INFO_META})
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_INTERNAL_ERROR = b',"error":{"code":-32603,"message":"Internal error"}}'


class FastRequest(msgspec.Struct, frozen=True):
    """A JSON-RPC request the fast path may answer: `tools/call` or `tools/list` with an id and params."""

    id: str | int
    method: str
    params: dict[str, Any]

    @property
    def meta(self) -> Any:
        return self.params.get("_meta")


def decode(body: bytes | str) -> FastRequest | None:
    """The request, or None for anything that is not a plain tools/call or tools/list request."""
    try:
        message = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested too deeply for a plain request
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or set(message) - _MESSAGE_KEYS:
        return None
    request_id, method, params = message.get("id"), message.get("method"), message.get("params", {})
    if not isinstance(request_id, str | int) or isinstance(request_id, bool) or not isinstance(params, dict):
        return None
    if method not in ("tools/call", "tools/list") or set(params) - _CALL_KEYS:
        return None
    if method == "tools/list" and set(params) - {"_meta"}:
        return None  # a cursor: the SDK's answer
    if method == "tools/call" and not (
        isinstance(params.get("name"), str) and isinstance(params.get("arguments"), dict | None)
    ):
        return None
    return FastRequest(request_id, method, params)


def modern_envelope(request: FastRequest, version: str) -> bool:
    """The per-request `_meta` of 2026-07-28, exactly as the SDK requires it, and nothing more (a progress
    token, a log level or anything newer sends the request to the SDK)."""
    meta = request.meta
    if not isinstance(meta, dict) or set(meta) - _MODERN_META_KEYS:
        return False
    if meta.get(PROTOCOL_VERSION_META) != version or not isinstance(meta.get(CLIENT_CAPABILITIES_META), dict):
        return False
    client_info = meta.get(CLIENT_INFO_META)
    return client_info is None or isinstance(client_info, dict)


def session_envelope(request: FastRequest) -> bool:
    """A handshake-era request with no request metadata (a progress token needs the SDK's stream)."""
    meta = request.meta
    return meta is None or (isinstance(meta, dict) and not meta)


class FastAnswers:
    """Answers for one host on one transport, as the binding would give them."""

    def __init__(self, host: Host, *, transport: str) -> None:
        self.host = host
        self.transport = transport
        self._modern_extra = _encoder.encode(
            {"resultType": "complete", "_meta": {SERVER_INFO_META: {"name": host.server_name, "version": host.version}}}
        )[1:-1]

    decode = staticmethod(decode)
    modern_envelope = staticmethod(modern_envelope)
    session_envelope = staticmethod(session_envelope)

    def takes(self, principal: Principal, request: FastRequest) -> bool:
        """False for a call to a tool that talks back to its caller while it runs: the SDK's stream carries
        its log, progress, sampling and elicitation messages."""
        if request.method != "tools/call":
            return True
        tool = self.host.list_tools(principal).find(request.params["name"])
        return tool is None or not tool.interactive

    async def answer(self, principal: Principal, request: FastRequest, *, modern: bool) -> bytes:
        """The whole JSON-RPC response, in the era's shape. Never raises: a failure outside the pipeline is the
        binding's fixed internal error, never the exception's text."""
        head = b'{"jsonrpc":"2.0","id":' + _encoder.encode(request.id)
        if request.method == "tools/list":
            return head + b',"result":' + self._list(principal, modern) + b"}"
        params = request.params
        try:
            outcome = await self.host.call_tool(
                principal, params["name"], params.get("arguments"), transport=self.transport
            )
        except Exception as exc:
            log.error("tools/call failed outside the pipeline (%s)", type(exc).__name__)
            return head + _INTERNAL_ERROR
        return head + b',"result":' + self._call_result(outcome, modern) + b"}"

    def _list(self, principal: Principal, modern: bool) -> bytes:
        try:
            tools = encoded_tools(self.host.list_tools(principal))
        except Exception as exc:  # as the binding answers it: show nothing rather than leak
            log.error("tools/list failed (%s)", type(exc).__name__)
            tools = b"[]"
        if not modern:
            return b'{"tools":' + tools + b"}"
        return b'{"tools":' + tools + b',"cacheScope":"private","ttlMs":0,' + self._modern_extra + b"}"

    def _call_result(self, outcome: Outcome, modern: bool) -> bytes:
        content: list[Any] = [{"type": "text", "text": outcome.text}]
        for block in outcome.blocks:  # MCP content blocks a tool added (rare): as the SDK dumps them
            content.append(block.model_dump(by_alias=True, exclude_none=True, mode="json"))
        body = _encoder.encode(
            {"content": content, "isError": outcome.is_error, "structuredContent": outcome.result}
        )  # the envelope is a msgspec Struct: encoded as it is
        return body[:-1] + b"," + self._modern_extra + b"}" if modern else body


def encoded_tools(visible: ToolList) -> bytes:
    """The tools array as JSON, encoded once per visible list (the list is cached per key and catalogue), from
    the binding's own MCP definitions so both paths show the same tools."""
    cached: bytes | None = visible.cache.get("json")
    if cached is None:
        dumped = [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in wire_tools(visible)]
        cached = visible.cache["json"] = _encoder.encode(dumped)
    return cached
