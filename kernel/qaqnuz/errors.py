"""Exceptions with a meaning to the kernel.

Operator-facing errors (`ConfigError`, `PluginError`, `UsageError`) carry messages that say what is
wrong and how to fix it; the CLI prints them and exits 2. Tool-facing errors (`DependencyError`,
`TerminalError`) are how a tool asks for a specific error class: their text never reaches a caller
unless the tool explicitly marks a message as public.
"""

from __future__ import annotations


class QaqnuzError(Exception):
    """Base of every error the kernel raises on purpose."""


class UsageError(QaqnuzError):
    """The operator asked for something impossible (bad arguments, a cap reached): exit code 2."""


class PluginError(UsageError):
    """A plugin could not be loaded or conflicts with another one."""


class ConfigError(UsageError):
    """One or more located configuration errors, all reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(QaqnuzError):
    """The store failed; callers treat it as a denial."""


class LimiterUnavailable(QaqnuzError):
    """A limiter cannot decide (its backend is down, or its circuit is open). The call is refused as
    `retryable`; `retry_after_ms` is when the limiter expects to be able to decide again."""

    def __init__(self, detail: str, *, retry_after_ms: int = 1000) -> None:
        super().__init__(detail)
        self.retry_after_ms = retry_after_ms


class CredentialsUnavailable(QaqnuzError):
    """A credential could not be checked (the store is not answering, the auth provider failed): the request
    is refused, but as one to retry shortly, never as a bad key (a client would drop a good key)."""


class PendingCapReached(QaqnuzError):
    """An approver refuses to open another request: the key already has its cap of requests waiting.

    The caller gets `retryable` (retry once some are decided)."""

    def __init__(self, pending: int, cap: int) -> None:
        super().__init__(f"{pending} approval requests pending, cap {cap}")
        self.pending = pending
        self.cap = cap


class ToolError(Exception):
    """Base for errors a tool raises to choose its error class.

    `public` is a message the tool author vouches is safe to show the caller; without it the envelope
    uses the class's fixed text.
    """

    def __init__(self, detail: str = "", *, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = public


class DependencyError(ToolError):
    """An upstream the tool relies on failed or timed out: the caller should retry with backoff."""


class TerminalError(ToolError):
    """A permanent failure: the caller should surface it, not retry."""
