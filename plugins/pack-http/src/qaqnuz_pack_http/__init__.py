"""qaqnuz-pack-http: tool packs whose tools are templated HTTP requests to one REST API.

`[packs.<name>] type = "http"` gives a base URL, shared variables, one server-held credential and a list of
tools; each tool is a method, a path, query, headers and a JSON body with `{{ name }}` placeholders filled
from the pack's variables and the call's validated arguments. See README.md for every setting.

Code packs may reuse the client machinery: `Upstream` (timeouts, size cap, SSRF guard with pinned
addresses, bounded retries, error mapping) and `encode_segment` for building encoded paths.
"""

from __future__ import annotations

from qaqnuz import Provider, hookimpl
from qaqnuz_pack_http.client import OVERSIZED, REFUSED_ADDRESS, Upstream, redirected, rejected
from qaqnuz_pack_http.guard import BlockedAddress, GuardedBackend, is_internal, system_resolver
from qaqnuz_pack_http.pack import HttpPack, HttpTool, check_base_url, factory, pack_name
from qaqnuz_pack_http.settings import AuthConfig, HttpSettings, HttpToolConfig
from qaqnuz_pack_http.template import encode_segment


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


__all__ = [
    "OVERSIZED",
    "REFUSED_ADDRESS",
    "AuthConfig",
    "BlockedAddress",
    "GuardedBackend",
    "HttpPack",
    "HttpSettings",
    "HttpTool",
    "HttpToolConfig",
    "Upstream",
    "check_base_url",
    "encode_segment",
    "factory",
    "is_internal",
    "pack_name",
    "qaqnuz_tool_providers",
    "redirected",
    "rejected",
    "system_resolver",
]
