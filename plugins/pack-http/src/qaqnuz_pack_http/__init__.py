"""qaqnuz-pack-http: tool packs whose tools are templated HTTP requests to one REST API.

`[packs.<name>] type = "http"` gives a base URL, shared variables, one server-held credential and a list of
tools; each tool is a method, a path, query, headers and a JSON body with `{{ name }}` placeholders filled
from the pack's variables, the call's validated arguments and the verified caller (`{{ brand }}`,
`{{ key_id }}`, `{{ key_name }}`, `{{ role }}`). See README.md for every setting.

Code packs may reuse the client machinery: `Upstream` (timeouts, size cap, SSRF guard with pinned
addresses, bounded retries, error mapping) and `encode_segment` for building encoded paths. This module
only registers the provider and loads those parts on first use (the command line loads it on every start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qaqnuz import Provider, ToolPackContext, hookimpl
from qaqnuz_pack_http.settings import AuthConfig, HttpSettings, HttpToolConfig

if TYPE_CHECKING:
    from qaqnuz_pack_http.pack import HttpPack

#: Public names and the submodule each lives in (imported on first use: httpx is heavy).
_LAZY = {
    "OVERSIZED": "client",
    "REFUSED_ADDRESS": "client",
    "Upstream": "client",
    "redirected": "client",
    "rejected": "client",
    "BlockedAddress": "guard",
    "GuardedBackend": "guard",
    "is_internal": "guard",
    "system_resolver": "guard",
    "HttpPack": "pack",
    "HttpTool": "pack",
    "check_base_url": "pack",
    "pack_name": "pack",
    "encode_segment": "template",
}


def factory(settings: HttpSettings, ctx: ToolPackContext) -> HttpPack:
    from qaqnuz_pack_http.pack import HttpPack

    return HttpPack(settings, ctx)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [
        Provider(
            "http",
            factory,
            "HTTP pack: each tool is a templated request to one REST API, with a shared credential.",
            HttpSettings,
        )
    ]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qaqnuz_pack_http' has no attribute {name!r}")
    return getattr(importlib.import_module(f"qaqnuz_pack_http.{module}"), name)


__all__ = ["AuthConfig", "HttpSettings", "HttpToolConfig", "factory", "qaqnuz_tool_providers", *_LAZY]
