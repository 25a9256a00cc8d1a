"""What a running tool may do on its caller's connection: log, report progress, ask the client.

A handler stays `async (arguments) -> data`; the few that talk back call `qaqnuz.current_call()` for the
`CallContext` of the call they are running in (None outside an MCP request, e.g. in a direct pipeline
call). Everything rides the request's own stream, so it reaches only the caller. The tool's timeout
covers the time spent waiting for the client. Sampling and elicitation need a client that offers them
on a handshake-era session; anywhere else they raise `DependencyError`, which the envelope reports.
"""

from __future__ import annotations

import contextvars
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import mcp.types as mt
from mcp.shared.exceptions import MCPDeprecationWarning

from qaqnuz.errors import DependencyError

log = logging.getLogger("qaqnuz.callcontext")
LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("qaqnuz_call", default=None)

NO_SAMPLING = "This client cannot answer sampling requests on this connection."
NO_ELICITATION = "This client cannot answer questions (elicitation) on this connection."


def current_call() -> CallContext | None:
    """The context of the tool call running in this task, or None."""
    return _current.get()


class CallContext:
    """Bound to one tools/call request: its session, request id and the connection's log level."""

    def __init__(self, session: Any, request_id: Any, min_level: Callable[[], str | None]) -> None:
        self._session = session
        self._request_id = request_id
        self._min_level = min_level

    def _activate(self) -> contextvars.Token[CallContext | None]:
        return _current.set(self)

    @staticmethod
    def _deactivate(token: contextvars.Token[CallContext | None]) -> None:
        _current.reset(token)

    async def log(self, level: str, message: Any, *, logger: str | None = None) -> None:
        """A `notifications/message` to the caller, if it asked for this level. Never fails the call."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
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

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """A `notifications/progress` for the caller's progress token; nothing if it sent none."""
        try:
            await self._session.report_progress(progress, total, message)
        except Exception as exc:
            log.debug("could not send a progress notification (%s)", type(exc).__name__)

    async def sample(self, prompt: str, *, max_tokens: int = 100, system_prompt: str | None = None) -> str:
        """Ask the client's model (sampling/createMessage); the text it answered."""
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
        """Ask the user a form question (elicitation/create); (action, content) of the answer."""
        try:
            result = await self._session.elicit_form(message, dict(schema), related_request_id=self._request_id)
        except Exception as exc:
            raise DependencyError(type(exc).__name__, public=NO_ELICITATION) from None
        return str(result.action), (dict(result.content) if result.content is not None else None)
