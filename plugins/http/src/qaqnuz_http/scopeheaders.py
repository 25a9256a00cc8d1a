"""A request's headers, read once: Front, Guard and the fast path each need a few of them on every request."""

from __future__ import annotations

from starlette.types import Scope

#: The request's headers read once: (first value of each name, names sent more than once).
SCOPE_HEADERS = "qaqnuz.headers"


def headers_of(scope: Scope) -> tuple[dict[bytes, bytes], set[bytes]]:
    """Each header's first value and the names that came more than once, read in one pass per request (every
    layer asks for some of them) and kept in the scope."""
    held = scope.get(SCOPE_HEADERS)
    if held is None:
        first: dict[bytes, bytes] = {}
        repeated: set[bytes] = set()
        for name, value in scope.get("headers", ()):
            if name in first:
                repeated.add(name)
            else:
                first[name] = value
        held = scope[SCOPE_HEADERS] = (first, repeated)
    return held
