"""The HTTP transport: Streamable HTTP (`/mcp`, `/mcp/v1`, both protocol eras), legacy HTTP+SSE (`/sse` +
`/messages/`), `/healthz`, `/readyz`, `/metrics` and the web routes plugins register, served by uvicorn.

Every request to an MCP endpoint is authenticated (`Authorization: Bearer`, or `?token=` when allowed);
sessions of the handshake era are bound to the key that opened them. This module only registers the
transport (the command line loads it on every start, so it stays light); see README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qaqnuz import Provider, TransportContext, hookimpl
from qaqnuz_http.settings import HttpSettings, check

if TYPE_CHECKING:
    from qaqnuz_http.transport import HttpTransport

__all__ = ["HttpSettings", "qaqnuz_transports"]


def _factory(settings: HttpSettings, ctx: TransportContext) -> HttpTransport:
    from qaqnuz_http.transport import HttpTransport

    limits = check(settings)
    auth = settings.metrics_auth
    token = None
    if auth is not None and auth.token is not None:
        token = ctx.secret(auth.token, f"{ctx.where} metrics_auth.token").reveal().encode()
    return HttpTransport(settings, limits, metrics_token=token)


@hookimpl
def qaqnuz_transports() -> list[Provider]:
    return [
        Provider(
            "http",
            _factory,
            "Streamable HTTP at /mcp (both protocol eras), legacy SSE, health, readiness, metrics and web routes.",
            HttpSettings,
        )
    ]
