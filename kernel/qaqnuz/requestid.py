"""The id of the request being served, shared by every log line and audit record it causes.

A transport sets it when a request arrives (`begin`) and every log record and audit record made while that
request is served (in its task, or a task it started) carries it, so an SRE can follow one request from its
access line to its decision and its audit record. A context variable: each request's tasks see their own.
"""

from __future__ import annotations

import contextvars
import secrets

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("qaqnuz_request_id", default=None)


def current() -> str | None:
    """The id of the request being served here, or None outside one."""
    return _current.get()


def new_request_id() -> str:
    """A fresh random id: 16 hex digits, 64 bits (no client value is ever used as an id). It correlates, it
    guards nothing, and one is made for every request: `token_hex` costs under 1 µs, a base-62 draw about 6."""
    return "req_" + secrets.token_hex(8)


def begin(request_id: str | None = None) -> contextvars.Token[str | None]:
    """Make `request_id` (a fresh one when None) the current request's id; `end(token)` restores the last."""
    return _current.set(request_id or new_request_id())


def end(token: contextvars.Token[str | None]) -> None:
    _current.reset(token)
