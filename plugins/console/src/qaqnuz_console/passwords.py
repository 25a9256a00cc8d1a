"""Console passwords: argon2id hashes, checked without revealing whether a user exists.

A console password guards the whole server (keys, approvals, every brand's calls), and its hash sits in the
same store as everything else; if the store leaks, each guess must cost an attacker real memory and time.
argon2id is the memory-hard KDF RFC 9106 recommends, and the default parameters are at least its second
recommended option (t=3, m=64 MiB, p=4). Hashes are self-describing (`$argon2id$v=19$m=...,t=...,p=...$`),
so parameters can be raised later: `needs_rehash` says when a stored hash is weaker than today's choice,
and the console re-hashes it at the next successful sign-in.

This module loads argon2 itself; the `qaqnuz console users ...` commands import it only when they run, so
merely loading the plugin (for `qaqnuz --help`, say) stays light.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError

from qaqnuz import UsageError, looks_like_key

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "HashParams",
    "check_new_password",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class HashParams:
    """argon2id cost parameters. The defaults are RFC 9106's second recommended option (section 4): 3 passes
    over 64 MiB with 4 lanes, about a tenth of a second on a server core. Tests pass cheaper ones; products
    should not go below the defaults."""

    #: Passes over memory.
    time_cost: int = 3
    #: Memory in KiB (65536 KiB = 64 MiB).
    memory_cost: int = 64 * 1024
    #: Lanes (threads) used.
    parallelism: int = 4
    #: Length of the derived tag, in bytes.
    hash_len: int = 32
    #: Length of the random salt, in bytes.
    salt_len: int = 16


DEFAULT_PARAMS = HashParams()

# Hashed once per parameter set (lazily), then verified against whenever there is no real hash to check, so
# an unknown or OIDC-only user costs the same as a real one. Its password is irrelevant: nobody verifies it.
_DUMMY_PASSWORD = "qaqnuz console: no such user, constant work"  # noqa: S105 - not a credential


@functools.lru_cache(maxsize=8)
def _hasher(params: HashParams) -> PasswordHasher:
    return PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=params.hash_len,
        salt_len=params.salt_len,
        type=Type.ID,
    )


@functools.lru_cache(maxsize=8)
def _dummy_hash(params: HashParams) -> str:
    return _hasher(params).hash(_DUMMY_PASSWORD)


def hash_password(password: str, params: HashParams = DEFAULT_PARAMS) -> str:
    """The encoded argon2id hash of `password` (with a fresh random salt), the only form a store keeps.

    Check a new password with `check_new_password` first; this hashes whatever it is given."""
    return _hasher(params).hash(password)


def verify_password(encoded: str | None, password: str, params: HashParams = DEFAULT_PARAMS) -> bool:
    """Whether `password` matches the stored hash `encoded`. Never raises for a wrong password, a malformed
    or foreign hash, or a password that is not encodable text: each is simply False.

    With `encoded` None (no such user, or a user who signs in only through OpenID Connect) it still runs one
    full verification, against a dummy hash made with `params`, and returns False: a sign-in form then takes
    as long for a name that does not exist as for a wrong password, so its timing does not reveal which
    names are users. A malformed stored hash spends the same work, for the same reason.
    """
    hasher = _hasher(params)
    if encoded is not None:
        try:
            return hasher.verify(encoded, password)
        except VerificationError:  # the wrong password (VerifyMismatchError) or a failed check
            return False
        except ValueError:  # InvalidHashError, or a password that is not encodable text
            pass  # fall through to the same work as a missing user
    try:
        hasher.verify(_dummy_hash(params), password)
    except (VerificationError, ValueError):
        pass
    return False


def needs_rehash(encoded: str, params: HashParams = DEFAULT_PARAMS) -> bool:
    """Whether `encoded` was made with other parameters (or another variant) than `params`, so it should be
    replaced by `hash_password(password, params)` once the password has been verified. A hash that cannot be
    read at all also says True: whatever it is, it is not today's choice."""
    try:
        return _hasher(params).check_needs_rehash(encoded)
    except ValueError:  # InvalidHashError
        return True


def check_new_password(password: str) -> None:
    """Raise `UsageError` (with the fix) unless `password` may become a console password.

    Length is what makes a password hard to guess, so at least 12 characters (a passphrase of a few words
    is fine); at most 1024, which is plenty and keeps a sign-in request from carrying megabytes to hash.
    An MCP API key is refused outright: keys are handed to programs, pasted into configs and rotated, and
    one that also opened the console would turn a leaked client key into full control of the server.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the console password is not valid text (unpaired surrogates); type it again") from None
    if not password.strip():
        raise UsageError(
            f"the console password is empty or only whitespace; choose one of at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(
            f"the console password is too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a passphrase of a few words will do)"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UsageError(f"the console password is too long: use at most {MAX_PASSWORD_LENGTH} characters")
    if looks_like_key(password):
        raise UsageError(
            "the console password is shaped like an MCP API key, and an MCP key is never a console "
            "credential; choose a separate password"
        )
