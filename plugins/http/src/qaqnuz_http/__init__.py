"""The HTTP transport: Streamable HTTP (`/mcp`, `/mcp/v1`, both protocol eras), legacy HTTP+SSE (`/sse` +
`/messages/`), `/healthz`, `/readyz` and `/metrics`, served by uvicorn.

Every request to an MCP endpoint is authenticated (`Authorization: Bearer`, or `?token=` when allowed);
sessions of the handshake era are bound to the key that opened them. See README.md.
"""

from __future__ import annotations

from qaqnuz import Provider, ProviderContext, hookimpl
from qaqnuz_http.settings import HttpSettings, check
from qaqnuz_http.transport import HttpTransport

__all__ = ["HttpSettings", "HttpTransport", "qaqnuz_transports"]


def _factory(settings: HttpSettings, ctx: ProviderContext) -> HttpTransport:
    return HttpTransport(settings, check(settings))


@hookimpl
def qaqnuz_transports() -> list[Provider]:
    return [
        Provider(
            "http",
            _factory,
            "Streamable HTTP at /mcp (both protocol eras), legacy SSE, health, readiness and metrics.",
            HttpSettings,
        )
    ]
