"""Console sessions: a signed cookie, checked against the user's row on every request.

The cookie holds who signed in, when, when last seen and a random nonce, signed with HMAC-SHA-256 under a key
derived from the server secret for this purpose only: a cookie made by another server (another secret) or
edited in any byte is refused. It is not a bearer of rights by itself: each request re-reads the user, so a
removed user, a changed role or password, or signing out (the user's `sessions_after` moves) ends it at
once on every worker and replica. The CSRF token is an HMAC of the session's nonce under another derived
key, so it changes with every sign-in and cannot be made without the server secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import msgspec

#: The session cookie, and the short-lived one that carries the sign-in form's CSRF token and an OpenID
#: Connect sign-in in progress.
SESSION_COOKIE = "qaqnuz_console"
PRE_COOKIE = "qaqnuz_console_pre"
#: How often a live session's cookie is re-issued to move its "last seen" time (idle expiry).
REFRESH_SECONDS = 60.0


class Session(msgspec.Struct, array_like=True, frozen=True):
    """What the session cookie carries (signed, encoded as it is)."""

    user: str
    issued: float
    seen: float
    nonce: str


class Pre(msgspec.Struct, array_like=True, frozen=True):
    """Before sign-in: a nonce the sign-in form's CSRF token is bound to, and an OpenID Connect sign-in under
    way as (state, nonce, verifier, begun)."""

    nonce: str
    created: float
    oidc: tuple[str, str, str, float] | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """`value.mac` cookies under one key; anything malformed, unsigned or signed with another key is None."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "Signer()"

    def sign(self, payload: bytes) -> str:
        body = _b64(payload)
        return f"{body}.{_b64(hmac.new(self._key, body.encode('ascii'), hashlib.sha256).digest())}"

    def unsign(self, value: str | None) -> bytes | None:
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        expected = _b64(hmac.new(self._key, body.encode("ascii", "replace"), hashlib.sha256).digest())
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")):
            return None
        try:
            return _unb64(body)
        except (binascii.Error, ValueError):
            return None


class Sessions:
    """Makes and reads session and pre-sign-in cookies, and the CSRF tokens bound to them."""

    def __init__(self, session_key: bytes, csrf_key: bytes, *, idle: float, absolute: float) -> None:
        self._signer = Signer(session_key)
        self._csrf_key = csrf_key
        self.idle = idle
        self.absolute = absolute

    def __repr__(self) -> str:
        return "Sessions()"

    # -- sessions ----------------------------------------------------------------------------------------
    def new(self, user: str, now: float) -> Session:
        return Session(user, now, now, secrets.token_urlsafe(24))

    def encode(self, session: Session) -> str:
        return self._signer.sign(msgspec.msgpack.encode(session))

    def decode(self, value: str | None, now: float) -> Session | None:
        """The session in the cookie, or None: unsigned, edited, from another server, idle or too old."""
        payload = self._signer.unsign(value)
        if payload is None:
            return None
        try:
            session = msgspec.msgpack.decode(payload, type=Session)
        except msgspec.DecodeError:
            return None
        if now - session.seen > self.idle or now - session.issued > self.absolute or session.issued > now + 60:
            return None
        return session

    def touched(self, session: Session, now: float) -> Session | None:
        """The session with `seen` moved to now, when it is time to re-issue the cookie (else None)."""
        if now - session.seen < REFRESH_SECONDS:
            return None
        return msgspec.structs.replace(session, seen=now)

    def max_age(self, session: Session, now: float) -> int:
        """The cookie's lifetime: until the idle or the absolute expiry, whichever is first."""
        return max(1, int(min(session.seen + self.idle, session.issued + self.absolute) - now))

    # -- before sign-in ----------------------------------------------------------------------------------
    def new_pre(self, now: float, oidc: tuple[str, str, str, float] | None = None) -> Pre:
        return Pre(secrets.token_urlsafe(24), now, oidc)

    def encode_pre(self, pre: Pre) -> str:
        return self._signer.sign(b"pre" + msgspec.msgpack.encode(pre))

    def decode_pre(self, value: str | None, now: float, max_age: float = 900.0) -> Pre | None:
        payload = self._signer.unsign(value)
        if payload is None or not payload.startswith(b"pre"):
            return None
        try:
            pre = msgspec.msgpack.decode(payload[3:], type=Pre)
        except msgspec.DecodeError:
            return None
        return pre if 0 <= now - pre.created <= max_age else None

    # -- CSRF --------------------------------------------------------------------------------------------
    def csrf(self, nonce: str) -> str:
        """The CSRF token for a session's (or a pre-sign-in cookie's) nonce."""
        return _b64(hmac.new(self._csrf_key, nonce.encode("ascii"), hashlib.sha256).digest())

    def csrf_ok(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(nonce).encode(), str(token).encode("ascii", "replace"))
