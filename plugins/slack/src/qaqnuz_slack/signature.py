"""Slack's v0 request signature: `v0=` + hex HMAC-SHA-256 of `v0:<timestamp>:<raw body>` with the signing
secret, compared in constant time, within five minutes of now (either way). Two secrets are tried during a
rotation. Nothing here parses the body: only the exact bytes Slack signed are verified."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

#: How far a request's timestamp may be from now, in seconds, before it is refused as stale.
WINDOW = 300.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify(secrets: Iterable[bytes], timestamp: str | None, signature: str | None, body: bytes, now: float) -> bool:
    """Whether one of `secrets` signed `body` at `timestamp`, and `timestamp` is within the window of `now`."""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > WINDOW:
        return False
    given = signature.encode("utf-8", "replace")
    matched = False
    for secret in secrets:  # every secret is tried, so timing says nothing about which one matched
        matched |= hmac.compare_digest(sign(secret, timestamp, body).encode("ascii"), given)
    return matched
