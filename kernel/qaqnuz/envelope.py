"""The one result envelope every tools/call answer takes, and the texts callers may see.

Callers only ever see fixed, sanitised texts chosen here (or a message a tool author explicitly marked
public): never exception text, stack traces, SQL, paths, ids or arguments.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import msgspec

_encoder = msgspec.json.Encoder()


class ErrorClass(enum.StrEnum):
    VALIDATION = "validation"
    PERMISSION = "permission"
    RETRYABLE = "retryable"
    DEPENDENCY = "dependency"
    TERMINAL = "terminal"


class RetryHint(msgspec.Struct, frozen=True):
    retry_after_ms: int
    max_attempts: int = 3
    backoff: str = "exponential"


class Success(msgspec.Struct, frozen=True):
    ok: bool
    data: Any
    truncated: bool


class Failure(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    error_class: ErrorClass
    sanitized_error: str
    retry_hint: RetryHint | None = None
    approval_id: str | None = None
    #: A public reference to the server's log line for this failure (terminal and dependency failures).
    incident_id: str | None = None


@attrs.frozen
class Outcome:
    """What one call came to: the envelope, its content text, and what the audit line and metrics need.

    `blocks` are the MCP content blocks a tool added after its payload (already cut to the byte budget).
    """

    step: str
    outcome: str
    result: Success | Failure
    text: str
    approval_id: str | None = None
    blocks: tuple[Any, ...] = ()
    incident_id: str | None = None

    @property
    def is_error(self) -> bool:
        return isinstance(self.result, Failure)

    @property
    def error_class(self) -> str:
        return str(self.result.error_class) if isinstance(self.result, Failure) else ""


# Fixed texts. The permission text for invisible tools is one string whatever the reason, so a caller
# cannot tell an unknown tool from a hidden one.
NOT_PERMITTED = "This tool is not available to this key."
NOT_ENTITLED = "This brand's plan does not include MCP access."
POLICY_DENIED = "This call is not permitted by policy."
RATE_LIMITED = "Rate limit exceeded. Please wait before sending more requests."
KEY_BUSY = (
    "Too many calls from this key are running at once (at most {limit}: [server] max_in_flight_per_key). "
    "Retry when one has finished."
)
SERVER_BUSY = (
    "The server is running as many calls at once as it allows ({limit}: [server] max_in_flight). Retry shortly."
)
LIMITER_UNAVAILABLE = "Rate limiting is temporarily unavailable. Please retry shortly."
APPROVAL_UNAVAILABLE = "Approvals are temporarily unavailable, so this call cannot run. Please retry later."
DEPENDENCY_FAILED = "A service this tool depends on failed or timed out. Please retry with backoff."
TERMINAL_FAILED = "The tool failed. This is a permanent error; retrying the same call will not help."
AUTH_FAILED = "Unauthorized: the API key is missing, invalid, expired or revoked."
AUDIT_UNAVAILABLE = "The audit log cannot be written right now, so no call can run. Please retry shortly."
TOO_MANY_PENDING = "Too many approval requests from this key are waiting for a decision. Retry once some are decided."


def approval_required(approval_id: str) -> str:
    return f"Tool call requires approval (approval_id={approval_id}). Re-issue the same call after it is approved."


def approval_denied(approval_id: str) -> str:
    return (
        f"Tool call approval was denied (approval_id={approval_id}). Re-issuing the call opens a new approval request."
    )


def approval_expired(approval_id: str) -> str:
    return (
        f"Tool call approval expired before use (approval_id={approval_id}). "
        f"Re-issuing the call opens a new approval request."
    )


def success(data: Any, max_bytes: int) -> tuple[str, Success]:
    """(content text, envelope), cutting the payload to fit `max_bytes` as valid JSON."""
    text = _encoder.encode(data)
    if len(text) <= max_bytes:
        return text.decode("utf-8"), Success(ok=True, data=data, truncated=False)
    cut = truncate(data, max_bytes)
    return _encoder.encode(cut).decode("utf-8"), Success(ok=True, data=cut, truncated=True)


def failure(
    error_class: ErrorClass,
    message: str,
    *,
    retry_after_ms: int | None = None,
    approval_id: str | None = None,
    incident_id: str | None = None,
) -> Failure:
    hint = RetryHint(retry_after_ms=max(1, retry_after_ms)) if retry_after_ms is not None else None
    return Failure(
        ok=False,
        error_class=error_class,
        sanitized_error=message,
        retry_hint=hint,
        approval_id=approval_id,
        incident_id=incident_id,
    )


def to_builtins(envelope: Success | Failure) -> dict[str, Any]:
    built: dict[str, Any] = msgspec.to_builtins(envelope)
    return built


def truncate(data: Any, max_bytes: int) -> Any:
    """The largest prefix of `data` whose JSON fits: whole items of a list, else a string prefix.

    A list keeps its shape (rows stay rows); anything else becomes the prefix of its JSON text, cut on a
    UTF-8 character boundary, as a JSON string.
    """
    if isinstance(data, list):
        lo, hi = 0, len(data)
        while lo < hi:  # largest n with encode(data[:n]) fitting
            mid = (lo + hi + 1) // 2
            if len(_encoder.encode(data[:mid])) <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        if lo > 0:
            return data[:lo]
    text = _encoder.encode(data).decode("utf-8")
    budget = max(0, max_bytes - 2)
    # Encoded length of a prefix grows monotonically; binary search on characters.
    lo, hi = 0, min(len(text), budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_encoder.encode(text[:mid])) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]
