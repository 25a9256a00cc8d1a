"""The access line and the request id: one INFO line per HTTP request on `qaqnuz.http.access`, and the id
every log line and audit record of that request carries, returned to the client as `X-Request-Id`.

Nothing on the access line is what the client typed: the path is logged as the route it matched (`/mcp`,
`/messages/`, a web route's mount, else `other`), the HTTP method only if it is a standard one, the MCP
method only if the protocol defines it, and the tool only if the caller's key can see a tool of that name
(else `(unknown)`); the client is the socket's address (or the one `trusted_proxies` vouched for). The log
formatter escapes every field besides.

The request id is always made here, never taken from the client: an incoming `X-Request-Id` is ignored, so
a client cannot make its requests share an id with someone else's in the log or the audit trail.

The MCP method and tool are learnt where the body is parsed anyway (the fast path's decoder, the SDK's
handler middleware), which may be in another task: each runs in a copy of the request's context, so they
write into the request's `ACCESS_FIELDS` dict, which the access line reads once the response is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from mcp.types.methods import SPEC_CLIENT_METHODS, SPEC_CLIENT_NOTIFICATION_METHODS
from starlette.routing import Mount
from starlette.types import Scope

access_log = logging.getLogger("qaqnuz.http.access")

#: The id `Front` or the direct path chose for a request (the direct path hands a request on with it).
SCOPE_REQUEST_ID = "qaqnuz.request_id"
#: The access-line fields the layers below `Front` fill in (`method`, `tool`) for the request being served.
ACCESS_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("qaqnuz_http_access_fields", default=None)
REQUEST_ID_HEADER = b"x-request-id"

HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
MCP_METHODS = frozenset(SPEC_CLIENT_METHODS | SPEC_CLIENT_NOTIFICATION_METHODS)
UNKNOWN = "(unknown)"
OTHER = "other"


class RouteNames:
    """The fixed name an access line gives a request's path: a route's own path, or `<mount>/*` under a
    mount, or `other`; never the path as sent (it may hold anything percent-encoded)."""

    def __init__(self, exact: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
        self.exact = frozenset(exact)
        self.prefixes = tuple(sorted({p.rstrip("/") + "/" for p in prefixes}, key=len, reverse=True))

    @classmethod
    def of(cls, app: Any) -> RouteNames:
        """The names of a Starlette app's routes (`Route` paths exactly, `Mount` paths and what is under them)."""
        exact: list[str] = []
        prefixes: list[str] = []
        for route in getattr(app, "routes", ()):
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                continue
            if isinstance(route, Mount):
                exact.append(path.rstrip("/") + "/")
                prefixes.append(path)
            else:
                exact.append(path)
        return cls(exact, prefixes)

    def name(self, path: str) -> str:
        if path in self.exact:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix + "*"
        return OTHER


def client_of(scope: Scope) -> str:
    """`host:port` of the request's client (`[v6]:port`; only the host when a proxy's header named it)."""
    client = scope.get("client")
    if not client:
        return "-"
    host, port = str(client[0]), client[1] if len(client) > 1 else 0
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def note_request(fields: dict[str, Any] | None, method: object, params: object, visible: Any) -> None:
    """Record a request's MCP method and, for tools/call, its tool, for the access line. `visible` gives the
    tool names the caller's key may see (a container, or a callable returning one, called only for a
    tools/call); a name outside it, or any method the protocol does not define, is logged as `(unknown)`."""
    if fields is None:
        return
    fields["method"] = method if isinstance(method, str) and method in MCP_METHODS else UNKNOWN
    if method != "tools/call":
        return
    if isinstance(params, Mapping):
        name = params.get("name")
    else:
        name = getattr(params, "name", None)
    try:
        names: Container[str] = visible() if callable(visible) else visible
        known = isinstance(name, str) and name in names
    except Exception:  # the catalogue could not be read: the name stays unlogged
        known = False
    fields["tool"] = name if known else UNKNOWN


def log_access(
    scope: Scope, status: int, started: float, key_id: str, fields: Mapping[str, Any], routes: RouteNames
) -> None:
    """The request's access line (text: `POST /mcp 200 1.2ms mcp=tools/call tool=echo client=… key=…`; in
    the JSON format the same as fields: route, status, latency_ms, key_id, method, tool, client)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    method = scope.get("method")
    route = f"{method if method in HTTP_METHODS else 'OTHER'} {routes.name(str(scope.get('path', '')))}"
    latency = round((time.monotonic() - started) * 1000, 1)
    mcp_method = fields.get("method")
    tool = fields.get("tool")
    client = client_of(scope)
    access_log.info(
        "%s %d %.1fms mcp=%s tool=%s client=%s key=%s",
        route,
        status,
        latency,
        mcp_method or "-",
        tool or "-",
        client,
        key_id,
        extra={
            "route": route,
            "status": status,
            "latency_ms": latency,
            "key_id": key_id,
            "method": mcp_method,
            "tool": tool,
            "client": client,
            "request_id": scope.get(SCOPE_REQUEST_ID),  # as the handler's filter would stamp it, for any handler
        },
    )
