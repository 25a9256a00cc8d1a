"""Caps on open sessions per key and per brand, and a session's opening counted against the key's rate limit.

A session-era session (Streamable HTTP, 2025-11-25 and before) and a legacy SSE connection each hold server
memory and a task until they end. The SDK caps them only in total (`max_sessions`), so one key could open
them all and leave another brand with 503. Here a request that would open one is checked first: the key's
and the brand's open sessions against `max_sessions_per_key` and `max_sessions_per_brand`, then one unit of
the key's and brand's rate limits (as a tool call takes), so opening sessions in a loop is throttled like
calling. A refusal is 429 with a JSON-RPC error that names the limit.

The count is taken when the request is admitted (so two concurrent openings cannot both slip under the
cap) and handed to the session once the SDK registers it; an opening that registers nothing gives it back.
"""

from __future__ import annotations

import contextvars
from typing import Any

import attrs

from qaqnuz import Principal, rpc_error_body

#: A JSON-RPC error code of ours (servers may use -32000..-32099): a limit of this server refused the request.
LIMITED = -32003

#: The opening request being served in this context: the session the SDK registers in it is this one's.
_OPENING: contextvars.ContextVar[Opening | None] = contextvars.ContextVar("qaqnuz_opening", default=None)


@attrs.define
class Opening:
    """One admitted opening: its owner, and the session it opened (once the SDK registered one)."""

    key_id: str
    brand: str
    session_id: str | None = None


class SessionQuota:
    def __init__(self, per_key: int, per_brand: int) -> None:
        self.per_key = per_key
        self.per_brand = per_brand
        self._by_key: dict[str, int] = {}
        self._by_brand: dict[str, int] = {}
        self._owners: dict[str, Opening] = {}

    def open_for(self, principal: Principal) -> tuple[int, int]:
        """(the key's, the brand's) open sessions, openings in progress included."""
        return self._by_key.get(principal.key_id, 0), self._by_brand.get(principal.brand, 0)

    def admit(self, principal: Principal) -> Opening | tuple[str, str]:
        """Count one more session for the principal, or (the refusal, the cap it would pass)."""
        by_key, by_brand = self.open_for(principal)
        if by_key >= self.per_key:
            return (
                f"This key has as many sessions open as it may ({self.per_key}: [plugins.http] "
                f"max_sessions_per_key). Close one (DELETE /mcp with its Mcp-Session-Id) or let one expire.",
                "max_sessions_per_key",
            )
        if by_brand >= self.per_brand:
            return (
                f"This brand has as many sessions open as it may ({self.per_brand}: [plugins.http] "
                f"max_sessions_per_brand). Close one or let one expire.",
                "max_sessions_per_brand",
            )
        self._by_key[principal.key_id] = by_key + 1
        self._by_brand[principal.brand] = by_brand + 1
        return Opening(principal.key_id, principal.brand)

    def release(self, opening: Opening) -> None:
        """Give the count back: the opening ended without a session, or its session ended."""
        for table, name in ((self._by_key, opening.key_id), (self._by_brand, opening.brand)):
            left = table.get(name, 0) - 1
            if left > 0:
                table[name] = left
            else:
                table.pop(name, None)

    def serving(self, opening: Opening) -> contextvars.Token[Opening | None]:
        """Mark `opening` as the request being served in this context (see `registered`)."""
        return _OPENING.set(opening)

    def done(self, opening: Opening, token: contextvars.Token[Opening | None]) -> None:
        """The opening request was answered: its count stays with the session it opened, else goes back."""
        _OPENING.reset(token)
        if opening.session_id is None:
            self.release(opening)

    def registered(self, session_id: str) -> None:
        """The SDK registered a session: it belongs to the opening served in this context."""
        opening = _OPENING.get()
        if opening is not None and opening.session_id is None:
            opening.session_id = session_id
            self._owners[session_id] = opening

    def ended(self, session_id: str) -> None:
        opening = self._owners.pop(session_id, None)
        if opening is not None:
            self.release(opening)


def refusal(message: str, limit: str, retry_after_ms: int | None = None, request_id: Any = None) -> bytes:
    """A JSON-RPC error naming the limit that refused the request."""
    data: dict[str, Any] = {"limit": limit}
    if retry_after_ms is not None:
        data["retry_after_ms"] = retry_after_ms
    return rpc_error_body(LIMITED, message, request_id, data)
