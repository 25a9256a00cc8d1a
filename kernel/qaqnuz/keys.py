"""API key format: `<prefix><key_id>_<secret><checksum>`.

The key id is public (it names the key in lists, logs and audit lines); the secret carries 256 random
bits; the checksum (CRC32 of everything before it, base62, 6 characters) lets secret scanners and the
server reject a mistyped key without touching the store. Only HMAC-SHA-256(server secret, key) is
stored, and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

import attrs

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LEN = 12
SECRET_LEN = 43  # 62**43 > 2**256
CHECKSUM_LEN = 6
KEY_ID_RE = re.compile(rf"[0-9A-Za-z]{{{KEY_ID_LEN}}}")
_BODY_RE = re.compile(
    rf"(?P<key_id>[0-9A-Za-z]{{{KEY_ID_LEN}}})_(?P<secret>[0-9A-Za-z]{{{SECRET_LEN}}})"
    rf"(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_LEN}}})"
)


def b62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def random_b62(length: int) -> str:
    """`length` uniform random base-62 characters: one draw below 62**length, written in base 62 (a draw per
    character cost ~28 µs for 16, too much for an id made on every request)."""
    return b62(secrets.randbelow(62**length), length)


def checksum(text: str) -> str:
    return b62(zlib.crc32(text.encode("ascii")), CHECKSUM_LEN)


@attrs.frozen
class ParsedKey:
    key_id: str
    raw: str = attrs.field(repr=False)


def new_key(prefix: str) -> ParsedKey:
    """Mint a fresh key. The raw value is shown to the operator once and never stored."""
    key_id = random_b62(KEY_ID_LEN)
    body = f"{prefix}{key_id}_{random_b62(SECRET_LEN)}"
    return ParsedKey(key_id=key_id, raw=body + checksum(body))


def parse_key(raw: str | None, prefix: str) -> ParsedKey | None:
    """The key's id if the string is well formed and its checksum holds; None otherwise."""
    if not raw or len(raw) > 256 or not raw.startswith(prefix):
        return None
    match = _BODY_RE.fullmatch(raw[len(prefix) :])
    if match is None:
        return None
    if not hmac.compare_digest(checksum(raw[:-CHECKSUM_LEN]), match.group("checksum")):
        return None
    return ParsedKey(key_id=match.group("key_id"), raw=raw)


_ANY_KEY = re.compile(r"[a-z][a-z0-9]{0,15}_(?:[a-z0-9]{1,16}_)?[0-9A-Za-z]{12}_[0-9A-Za-z]{49}")


def looks_like_key(text: str) -> bool:
    """Whether `text` has the shape of an API key of any prefix (no store lookup, no checksum check)."""
    return _ANY_KEY.fullmatch(text.strip()) is not None


def key_hash(server_secret: bytes, raw: str) -> str:
    return hmac.new(server_secret, raw.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_matches(server_secret: bytes, raw: str, stored: str) -> bool:
    return hmac.compare_digest(key_hash(server_secret, raw), stored)
