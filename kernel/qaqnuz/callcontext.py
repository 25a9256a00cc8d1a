"""What a running tool may know and do: whose call it runs, and its caller's connection.

A handler stays `async (arguments) -> data`; it calls `qaqnuz.current_call()` for the `CallContext` of the
call it is running in. `caller` is always there (brand, key id, key name, role: never the key), so packs
bind the caller's brand into their queries and requests. Talking back (log, progress, sampling,
elicitation) rides the request's own stream through a `Channel` the transport's binding supplies, so it
reaches only the caller; without one (a direct pipeline call) logging and progress do nothing and
sampling and elicitation raise `DependencyError`, which the envelope reports. The tool's timeout covers
the time spent waiting for the client.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from qaqnuz.errors import DependencyError
from qaqnuz.records import Caller, Channel

LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("qaqnuz_call", default=None)

NO_SAMPLING = "This client cannot answer sampling requests on this connection."
NO_ELICITATION = "This client cannot answer questions (elicitation) on this connection."


def current_call() -> CallContext | None:
    """The context of the tool call running in this task, or None outside a tool call."""
    return _current.get()


class CallContext:
    """Bound to one tools/call: the caller, and the channel back to it (if the transport has one)."""

    __slots__ = ("_channel", "caller")

    def __init__(self, caller: Caller, channel: Channel | None = None) -> None:
        self.caller = caller
        self._channel = channel

    def _activate(self) -> contextvars.Token[CallContext | None]:
        return _current.set(self)

    @staticmethod
    def _deactivate(token: contextvars.Token[CallContext | None]) -> None:
        _current.reset(token)

    async def log(self, level: str, message: Any, *, logger: str | None = None) -> None:
        """A `notifications/message` to the caller, if it asked for this level. Never fails the call."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
        if self._channel is not None:
            await self._channel.log(level, message, logger=logger)

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """A `notifications/progress` for the caller's progress token; nothing if it sent none."""
        if self._channel is not None:
            await self._channel.report_progress(progress, total, message)

    async def sample(self, prompt: str, *, max_tokens: int = 100, system_prompt: str | None = None) -> str:
        """Ask the client's model (sampling/createMessage); the text it answered."""
        if self._channel is None:
            raise DependencyError("no channel", public=NO_SAMPLING)
        return await self._channel.sample(prompt, max_tokens=max_tokens, system_prompt=system_prompt)

    async def elicit(self, message: str, schema: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Ask the user a form question (elicitation/create); (action, content) of the answer."""
        if self._channel is None:
            raise DependencyError("no channel", public=NO_ELICITATION)
        return await self._channel.elicit(message, schema)
