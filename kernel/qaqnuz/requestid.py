"""The id of the request being served, shared by every log line and audit record it causes.

A transport sets it when a request arrives (`begin`) and every log record and audit record made while that
request is served (in its task, or a task it started) carries it, so an SRE can follow one request from its
access line to its decision and its audit record. A context variable: each request's tasks see their own.
"""

from __future__ import annotations

import contextvars

from qaqnuz.keys import random_b62

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("qaqnuz_request_id", default=None)


def current() -> str | None:
    """The id of the request being served here, or None outside one."""
    return _current.get()


def new_request_id() -> str:
    """A fresh random id: 16 base-62 characters (no client value is ever used as an id)."""
    return "req_" + random_b62(16)


def begin(request_id: str | None = None) -> contextvars.Token[str | None]:
    """Make `request_id` (a fresh one when None) the current request's id; `end(token)` restores the last."""
    return _current.set(request_id or new_request_id())


def end(token: contextvars.Token[str | None]) -> None:
    _current.reset(token)
