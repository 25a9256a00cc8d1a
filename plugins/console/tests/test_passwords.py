"""Console password hashing: argon2id round trips, refusals that never raise, the same work for a missing
user as for a real one, re-hashing when parameters change, and which new passwords are refused."""

from __future__ import annotations

import secrets
import string

import argon2
import pytest

from qaqnuz import UsageError, looks_like_key
from qaqnuz_console import passwords
from qaqnuz_console.passwords import (
    DEFAULT_PARAMS,
    HashParams,
    check_new_password,
    hash_password,
    needs_rehash,
    verify_password,
)

CHEAP = HashParams(time_cost=1, memory_cost=256, parallelism=1)
PASSWORD = "correct horse battery staple"


def key_shaped() -> str:
    """A string of an MCP API key's shape (`<prefix>_<12 id chars>_<49 secret+checksum chars>`)."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(12))
    tail = "".join(secrets.choice(alphabet) for _ in range(49))
    return f"qz_{body}_{tail}"


def test_the_defaults_are_at_least_rfc_9106s_second_option():
    assert DEFAULT_PARAMS.time_cost >= 3
    assert DEFAULT_PARAMS.memory_cost >= 64 * 1024
    assert DEFAULT_PARAMS.parallelism >= 4
    with pytest.raises(AttributeError):
        DEFAULT_PARAMS.time_cost = 1


def test_a_hash_is_argon2id_with_the_given_parameters_and_round_trips():
    encoded = hash_password(PASSWORD, CHEAP)
    assert encoded.startswith("$argon2id$")
    assert PASSWORD not in encoded
    found = argon2.extract_parameters(encoded)
    assert (found.time_cost, found.memory_cost, found.parallelism) == (1, 256, 1)
    assert verify_password(encoded, PASSWORD, CHEAP) is True
    assert hash_password(PASSWORD, CHEAP) != encoded  # a fresh salt every time


def test_a_wrong_password_is_false():
    encoded = hash_password(PASSWORD, CHEAP)
    assert verify_password(encoded, PASSWORD + "!", CHEAP) is False
    assert verify_password(encoded, "", CHEAP) is False
    assert verify_password(encoded, "\udc80 not text", CHEAP) is False


@pytest.mark.parametrize(
    "encoded", ["", "garbage", "$argon2id$v=19$m=256,t=1,p=1$bad", "$2b$12$abcdefghijklmnopqrstuv"]
)
def test_a_malformed_hash_is_false_not_an_error(encoded):
    assert verify_password(encoded, PASSWORD, CHEAP) is False


class Spy:
    """Records every argon2 verification (the encoded hash it was checked against), then runs it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checked: list[str] = []
        real = argon2.PasswordHasher.verify

        def verify(hasher: argon2.PasswordHasher, encoded: str | bytes, password: str | bytes) -> bool:
            self.checked.append(encoded if isinstance(encoded, str) else encoded.decode())
            return real(hasher, encoded, password)

        monkeypatch.setattr(argon2.PasswordHasher, "verify", verify)


def test_no_hash_still_spends_one_full_verification_against_a_real_hash(monkeypatch):
    spy = Spy(monkeypatch)
    assert verify_password(None, PASSWORD, CHEAP) is False
    assert len(spy.checked) == 1
    dummy = spy.checked[0]
    # The same work a real user's check costs: a real argon2id hash, made with the same parameters.
    real = argon2.extract_parameters(hash_password(PASSWORD, CHEAP))
    assert dummy.startswith("$argon2id$")
    assert argon2.extract_parameters(dummy) == real
    # Even the dummy's own password does not open it.
    assert verify_password(None, passwords._DUMMY_PASSWORD, CHEAP) is False
    assert len(spy.checked) == 2


def test_a_malformed_hash_spends_the_same_work_as_no_hash(monkeypatch):
    spy = Spy(monkeypatch)
    assert verify_password("garbage", PASSWORD, CHEAP) is False
    assert spy.checked[-1].startswith("$argon2id$")
    assert argon2.extract_parameters(spy.checked[-1]) == argon2.extract_parameters(hash_password("x", CHEAP))


def test_a_known_user_is_checked_once_against_their_own_hash(monkeypatch):
    encoded = hash_password(PASSWORD, CHEAP)
    spy = Spy(monkeypatch)
    assert verify_password(encoded, "wrong password!!", CHEAP) is False
    assert spy.checked == [encoded]


def test_needs_rehash_when_the_parameters_change():
    encoded = hash_password(PASSWORD, CHEAP)
    assert needs_rehash(encoded, CHEAP) is False
    assert needs_rehash(encoded, HashParams(time_cost=2, memory_cost=256, parallelism=1)) is True
    assert needs_rehash(encoded, HashParams(time_cost=1, memory_cost=512, parallelism=1)) is True
    assert needs_rehash(encoded) is True  # the cheap test parameters are below the defaults
    argon2i = argon2.PasswordHasher(time_cost=1, memory_cost=256, parallelism=1, type=argon2.Type.I).hash(PASSWORD)
    assert needs_rehash(argon2i, CHEAP) is True
    assert needs_rehash("garbage", CHEAP) is True


def test_a_good_new_password_passes():
    check_new_password(PASSWORD)
    check_new_password("x" * 12)
    check_new_password("y" * 1024)
    check_new_password("  spaces are fine inside  ")


@pytest.mark.parametrize(
    ("password", "fix"),
    [
        ("", "at least 12"),
        ("            ", "whitespace"),
        ("\t\n  \t\n  \t\n  ", "whitespace"),
        ("short", "at least 12"),
        ("elevenchars", "at least 12"),
        ("z" * 1025, "at most 1024"),
        ("twelve chars\udc80", "not valid text"),
    ],
)
def test_a_bad_new_password_is_refused_with_the_fix(password, fix):
    with pytest.raises(UsageError, match=fix):
        check_new_password(password)


def test_an_mcp_key_is_never_a_console_password():
    key = key_shaped()
    assert looks_like_key(key)
    with pytest.raises(UsageError, match="an MCP key is never a console credential") as caught:
        check_new_password(key)
    assert key not in str(caught.value)
    with pytest.raises(UsageError, match="never a console credential"):
        check_new_password(f"  {key}\t")
