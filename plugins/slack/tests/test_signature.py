"""Slack's v0 signature, checked against an independent computation and every way it must fail."""

from __future__ import annotations

import hashlib
import hmac

from qaqnuz_slack.signature import sign, verify

SECRET, OLD = b"8f742231b10e8888abcd99yyyzzz85a5", b"the-previous-secret"
BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
NOW = 1_800_000_000.0
TS = str(int(NOW))


def expected(secret: bytes, ts: str, body: bytes) -> str:
    return "v0=" + hmac.new(secret, f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


def test_sign_matches_slacks_scheme():
    assert sign(SECRET, TS, BODY) == expected(SECRET, TS, BODY)


def test_a_valid_signature_verifies_with_either_secret_during_rotation():
    assert verify([SECRET], TS, expected(SECRET, TS, BODY), BODY, NOW)
    assert verify([OLD, SECRET], TS, expected(SECRET, TS, BODY), BODY, NOW)
    assert verify([OLD, SECRET], TS, expected(OLD, TS, BODY), BODY, NOW)


def test_everything_else_is_refused():
    good = expected(SECRET, TS, BODY)
    assert not verify([OLD], TS, good, BODY, NOW)  # another secret
    assert not verify([SECRET], TS, good, BODY + b"&x=1", NOW)  # body altered after signing
    assert not verify([SECRET], str(int(NOW) + 1), good, BODY, NOW)  # timestamp altered
    assert not verify([SECRET], TS, good.upper(), BODY, NOW)
    assert not verify([SECRET], TS, "v1=" + good[3:], BODY, NOW)
    for missing in (None, ""):
        assert not verify([SECRET], missing, good, BODY, NOW)
        assert not verify([SECRET], TS, missing, BODY, NOW)
    assert not verify([SECRET], "12a", good, BODY, NOW)
    assert not verify([SECRET], "١٢٣", good, BODY, NOW)  # non-ASCII digits
    assert not verify([], TS, good, BODY, NOW)


def test_the_five_minute_window_holds_both_ways():
    for offset, ok in ((-300, True), (300, True), (-301, False), (301, False)):
        ts = str(int(NOW) + offset)
        assert verify([SECRET], ts, expected(SECRET, ts, BODY), BODY, NOW) is ok
