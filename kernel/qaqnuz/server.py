"""The binding: a kernel's `Host` as an `mcp` low-level Server, for both protocol eras. The only module
that turns the governed path's domain answers (`ToolList`, `Outcome`) into MCP wire types.

The transport supplies how to find the caller's credential in a request; every request is
authenticated again (revocation takes effect on the next call). No handler lets an exception escape:
the SDK would put its text on the wire, so every failure becomes a fixed JSON-RPC error.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mcp.types as mt
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from pydantic import ValidationError

from qaqnuz import envelope as env
from qaqnuz.callcontext import LEVELS, NO_ELICITATION, NO_SAMPLING
from qaqnuz.envelope import Outcome
from qaqnuz.errors import CredentialsUnavailable, DependencyError
from qaqnuz.records import Host, Principal, SideEffect, Tool, ToolList

log = logging.getLogger("qaqnuz.server")
_REQUEST_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "qaqnuz_request_principal", default=None
)

#: JSON-RPC error codes we own (the range servers may use: -32000..-32019).
UNAUTHORIZED = -32001
#: The credential could not be checked now (the store is not answering): retry shortly.
UNAVAILABLE = -32002
UNAVAILABLE_MESSAGE = "Credentials cannot be checked right now. Retry shortly."
INTERNAL = -32603
#: Finds the caller in a request: a raw credential the Binding authenticates, or a Principal the transport
#: authenticated for this same request (then used as is; it must never come from an earlier request).
CredentialSource = Callable[[ServerRequestContext[Any]], str | Principal | None]


class GovernedServer(Server[Any]):
    """A low-level Server that advertises tools.listChanged on handshake-era connections."""

    def create_initialization_options(
        self, notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), *args, **kwargs
        )


async def _generic_errors(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
    """An `mcp` Server middleware: a request's JSON-RPC error never carries what the caller sent nor an
    exception's text (SPEC §3). The SDK puts the unknown method's name in "Method not found"'s data; any
    exception other than the SDK's own errors (which carry fixed texts) becomes a plain internal error."""
    try:
        return await call_next(ctx)
    except MCPError as exc:
        if exc.error.code == mt.METHOD_NOT_FOUND and exc.error.data is not None:
            raise MCPError(code=mt.METHOD_NOT_FOUND, message="Method not found") from None
        raise
    except ValidationError:
        raise  # answered "Invalid request parameters" with empty data by the SDK
    except Exception as exc:
        log.error("%s failed (%s)", _method_name(ctx), type(exc).__name__)
        raise MCPError(code=mt.INTERNAL_ERROR, message="Internal error") from None


def _method_name(ctx: Any) -> str:
    method = getattr(ctx, "method", None)
    return method if isinstance(method, str) and method.isprintable() and len(method) <= 64 else "a request"


class Binding:
    """One MCP server object for one host and one way of finding credentials.

    Tracks handshake-era sessions (to push notifications/tools/list_changed) and publishes on the
    subscription bus for 2026-07-28 clients listening with subscriptions/listen.
    """

    def __init__(self, host: Host, credential: CredentialSource, *, transport: str) -> None:
        self.host = host
        self.credential = credential
        self.transport = transport
        self.bus = InMemorySubscriptionBus()
        self.sessions: set[Any] = set()
        self._levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        with warnings.catch_warnings():
            # logging/setLevel is deprecated in 2026-07-28 but still part of every handshake-era version.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server = self._build_server(host)
        self.server.add_notification_handler("notifications/initialized", mt.NotificationParams, self._initialized)
        self.server.middleware.insert(0, _generic_errors)  # outermost: it sees every request's failure
        self._unsubscribe = host.on_change(self.broadcast)

    def _build_server(self, host: Host) -> GovernedServer:
        return GovernedServer(
            host.server_name,
            version=host.version,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_completion=self._complete,
            on_set_logging_level=self._set_logging_level,
            on_subscriptions_listen=ListenHandler(self.bus),
            # Without it the SDK lists every tool on every HTTP tools/call to check Mcp-Param-* headers.
            get_tool_input_schema=self._input_schema,
        )

    @contextlib.contextmanager
    def acting_for(self, principal: Principal) -> Iterator[None]:
        """The principal a transport authenticated for the request being served in this context: the SDK's
        schema lookup for `Mcp-Param-*` headers answers only with what this principal may see."""
        token = _REQUEST_PRINCIPAL.set(principal)
        try:
            yield
        finally:
            _REQUEST_PRINCIPAL.reset(token)

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        """A tool's input schema for the SDK's header check: O(1), and only for a tool the request's principal
        sees. Anything else (no principal, hidden, unknown) is None, which only skips that check: the call
        itself still goes through the governed path, where hidden and unknown answer alike."""
        principal = _REQUEST_PRINCIPAL.get()
        if principal is None:
            return None
        tool = self.host.list_tools(principal).find(name)
        return dict(tool.input_schema) if tool is not None else None

    def close(self) -> None:
        self._unsubscribe()

    async def _principal(self, ctx: ServerRequestContext[Any]) -> Principal:
        try:
            credential = self.credential(ctx)
        except Exception:
            credential = None
        if isinstance(credential, Principal):  # the transport authenticated this very request already
            return credential
        try:
            principal = await self.host.authenticate(credential, transport=self.transport)
        except CredentialsUnavailable:
            raise MCPError(code=UNAVAILABLE, message=UNAVAILABLE_MESSAGE) from None
        if principal is None:
            raise MCPError(code=UNAUTHORIZED, message=env.AUTH_FAILED)
        return principal

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: mt.PaginatedRequestParams | None
    ) -> mt.ListToolsResult:
        principal = await self._principal(ctx)
        try:
            return mt.ListToolsResult(tools=wire_tools(self.host.list_tools(principal)))
        except Exception as exc:
            log.error("tools/list failed (%s)", type(exc).__name__)
            return mt.ListToolsResult(tools=[])  # list_tools never fails: show nothing rather than leak

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: mt.CallToolRequestParams) -> mt.CallToolResult:
        principal = await self._principal(ctx)
        connection = _connection_of(ctx.session)
        channel = McpChannel(ctx.session, ctx.request_id, lambda: self._levels.get(connection))
        try:
            outcome = await self.host.call_tool(
                principal, params.name, params.arguments, transport=self.transport, channel=channel
            )
            return wire_result(outcome)
        except Exception as exc:
            log.error("tools/call failed outside the pipeline (%s)", type(exc).__name__)
            raise MCPError(code=INTERNAL, message="Internal error") from None

    async def _complete(self, ctx: ServerRequestContext[Any], params: mt.CompleteRequestParams) -> mt.CompleteResult:
        """No prompts or resource templates are served, so there is never anything to complete."""
        await self._principal(ctx)
        return mt.CompleteResult(completion=mt.Completion(values=[], total=0, has_more=False))

    async def _set_logging_level(
        self, ctx: ServerRequestContext[Any], params: mt.SetLevelRequestParams
    ) -> mt.EmptyResult:
        """The lowest level of `CallContext.log` messages this connection wants (handshake-era clients;
        2026-07-28 clients opt in per request and the SDK filters those)."""
        await self._principal(ctx)
        self._levels[_connection_of(ctx.session)] = str(params.level)
        return mt.EmptyResult()

    async def _initialized(self, ctx: ServerRequestContext[Any], params: mt.NotificationParams | None) -> None:
        session = ctx.session
        self.sessions.add(session)
        connection = getattr(session, "_connection", None)
        stack = getattr(connection, "exit_stack", None)
        if stack is not None:  # the SDK's only per-connection close hook (private)
            stack.callback(self.sessions.discard, session)

    async def broadcast(self) -> None:
        """Tell every connected client, in both eras, that the tool list may have changed."""
        for session in list(self.sessions):
            try:
                await session.send_tool_list_changed()
            except Exception:
                self.sessions.discard(session)
        await self.bus.publish(ToolsListChanged())


def wire_tools(visible: ToolList) -> list[mt.Tool]:
    """The MCP definitions of a principal's visible tools, encoded once per cached list."""
    wire: list[mt.Tool] | None = visible.cache.get("mcp")
    if wire is None:
        wire = visible.cache["mcp"] = [wire_tool(tool) for tool in visible.tools]
    return wire


def wire_tool(tool: Tool) -> mt.Tool:
    return mt.Tool(
        name=tool.name,
        description=f"[{tool.stability}] {tool.description}",
        input_schema=dict(tool.input_schema),
        annotations=mt.ToolAnnotations(
            read_only_hint=tool.side_effect is SideEffect.READ,
            destructive_hint=tool.side_effect is not SideEffect.READ,
            open_world_hint=tool.side_effect is SideEffect.EXTERNAL,
        ),
    )


def wire_result(outcome: Outcome) -> mt.CallToolResult:
    """The envelope on the wire: payload or sanitised text first, a tool's own blocks after it."""
    return mt.CallToolResult(
        content=[mt.TextContent(type="text", text=outcome.text), *outcome.blocks],
        structured_content=env.to_builtins(outcome.result),
        is_error=outcome.is_error,
    )


class McpChannel:
    """A running tool's way back to its caller: the request's own session and request id."""

    def __init__(self, session: Any, request_id: Any, min_level: Callable[[], str | None]) -> None:
        self._session = session
        self._request_id = request_id
        self._min_level = min_level

    async def log(self, level: str, message: Any, *, logger: str | None = None) -> None:
        """A `notifications/message`, if the connection asked for this level. Never fails the call."""
        threshold = self._min_level()
        if threshold is not None and LEVELS.index(level) < LEVELS.index(threshold):
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await self._session.send_log_message(
                    level=level, data=message, logger=logger, related_request_id=self._request_id
                )
        except Exception as exc:  # the client went away or the era cannot carry it: logging is best effort
            log.debug("could not send a log notification (%s)", type(exc).__name__)

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        try:
            await self._session.report_progress(progress, total, message)
        except Exception as exc:
            log.debug("could not send a progress notification (%s)", type(exc).__name__)

    async def sample(self, prompt: str, *, max_tokens: int, system_prompt: str | None) -> str:
        messages = [mt.SamplingMessage(role="user", content=mt.TextContent(type="text", text=prompt))]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                result = await self._session.create_message(
                    messages=messages,
                    max_tokens=max_tokens,
                    system_prompt=system_prompt,
                    related_request_id=self._request_id,
                )
        except Exception as exc:
            raise DependencyError(type(exc).__name__, public=NO_SAMPLING) from None
        content = result.content
        return content.text if isinstance(content, mt.TextContent) else ""

    async def elicit(self, message: str, schema: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        try:
            result = await self._session.elicit_form(message, dict(schema), related_request_id=self._request_id)
        except Exception as exc:
            raise DependencyError(type(exc).__name__, public=NO_ELICITATION) from None
        return str(result.action), (dict(result.content) if result.content is not None else None)


def _connection_of(session: Any) -> Any:
    """The connection behind a per-request session proxy (the SDK exposes it only privately)."""
    return getattr(session, "_connection", session)
