"""Key format, checksum and hashing (SPEC §5; security checklist 1-3), against a real kernel and store."""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib

import pytest

from kit import kit_config
from qaqnuz import keys
from qaqnuz.builtin import apikey
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio

PREFIX = "qx_live_"
KEY_RE = re.compile(r"^qx_live_(?P<key_id>[0-9A-Za-z]{12})_(?P<secret>[0-9A-Za-z]{43})(?P<checksum>[0-9A-Za-z]{6})$")


def b62_decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + keys.ALPHABET.index(char)
    return value


def test_format_prefix_and_256_bit_secret():
    key = keys.new_key(PREFIX)
    match = KEY_RE.match(key.raw)
    assert match is not None, key.raw
    assert match.group("key_id") == key.key_id
    # 43 base62 characters carry at least 256 bits.
    assert 62 ** len(match.group("secret")) > 2**256


def test_ten_thousand_keys_are_unique():
    minted = [keys.new_key(PREFIX) for _ in range(10_000)]
    assert len({k.raw for k in minted}) == 10_000
    assert len({k.key_id for k in minted}) == 10_000
    assert len({KEY_RE.match(k.raw).group("secret") for k in minted}) == 10_000


def test_checksum_round_trips():
    for _ in range(200):
        key = keys.new_key(PREFIX)
        body, check = key.raw[:-6], key.raw[-6:]
        # The checksum is CRC32 of everything before it, in base62.
        assert b62_decode(check) == zlib.crc32(body.encode("ascii"))
        assert keys.checksum(body) == check
        parsed = keys.parse_key(key.raw, PREFIX)
        assert parsed is not None
        assert parsed.key_id == key.key_id
        assert parsed.raw == key.raw


def test_flipping_any_single_character_is_rejected():
    replacements = [*keys.ALPHABET, "_", "-", "."]
    for _ in range(5):
        raw = keys.new_key(PREFIX).raw
        assert keys.parse_key(raw, PREFIX) is not None
        for position, original in enumerate(raw):
            for replacement in replacements:
                if replacement == original:
                    continue
                flipped = raw[:position] + replacement + raw[position + 1 :]
                assert keys.parse_key(flipped, PREFIX) is None, (position, original, replacement)


@pytest.mark.parametrize(
    "bad",
    [None, "", "qx_live_", "qx_test_" + "A" * 12 + "_" + "B" * 49, "x" * 300, "qx_live_abc_def"],
)
def test_malformed_keys_are_rejected(bad):
    assert keys.parse_key(bad, PREFIX) is None


def test_truncated_and_extended_keys_are_rejected():
    raw = keys.new_key(PREFIX).raw
    assert keys.parse_key(raw[:-1], PREFIX) is None
    assert keys.parse_key(raw + "A", PREFIX) is None
    assert keys.parse_key(" " + raw, PREFIX) is None


def test_key_hash_is_hmac_sha256():
    secret = b"s" * 48
    raw = keys.new_key(PREFIX).raw
    expected = hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()
    assert keys.key_hash(secret, raw) == expected
    assert keys.key_hash(b"t" * 48, raw) != expected  # keyed by the server secret
    assert keys.hash_matches(secret, raw, expected)
    assert not keys.hash_matches(secret, raw, "0" * 64)


def test_hash_matches_uses_constant_time_compare(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    secret = b"s" * 48
    raw = keys.new_key(PREFIX).raw
    stored = keys.key_hash(secret, raw)
    assert keys.hash_matches(secret, raw, stored) is True
    assert calls == [(stored, stored)]
    calls.clear()
    assert keys.hash_matches(secret, raw, "f" * 64) is False
    assert calls == [(stored, "f" * 64)]


async def test_store_holds_the_hmac_of_the_key_and_not_the_key(tmp_path):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="hash")
        stored = await kernel.store.get_key(record.key_id)
        secret = (tmp_path / "qaqnuz.secret").read_bytes().strip()
        assert stored.hash == hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()
        assert raw not in repr(stored)
        assert "hash" not in stored.public()
    finally:
        await kernel.aclose()


async def test_auth_rejects_bad_checksum_without_store_lookup_and_unknown_id_costs_one_hmac(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="auth")
        auth = kernel.runtime.auth
        lookups: list[str] = []
        real_get = kernel.store.get_key

        async def counted_get(key_id, *, fresh=False):
            lookups.append(key_id)
            return await real_get(key_id, fresh=fresh)

        monkeypatch.setattr(kernel.store, "get_key", counted_get)
        hmacs: list[str] = []
        real_matches = apikey.hash_matches
        monkeypatch.setattr(
            apikey, "hash_matches", lambda secret, key, stored: hmacs.append(key) or real_matches(secret, key, stored)
        )

        bad_checksum = raw[:-1] + ("A" if raw[-1] != "A" else "B")
        assert await auth.authenticate(bad_checksum) is None
        assert await auth.authenticate("qx_live_nonsense") is None
        assert lookups == [] and hmacs == []

        unknown = keys.new_key(PREFIX).raw
        assert await auth.authenticate(unknown) is None
        assert len(lookups) == 1 and hmacs == [unknown]

        principal = await auth.authenticate(raw)
        assert principal is not None and principal.key_id == record.key_id and principal.brand == "acme"
    finally:
        await kernel.aclose()


async def test_rotating_a_key_without_expiry_keeps_it_without_expiry(tmp_path):
    from qaqnuz.store import KeyRecord

    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        _, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="forever")
        # an older store may hold keys without expiry: rotation must not turn them into expired ones
        await kernel.store.revoke_key(record.key_id, kernel.clock())
        eternal = KeyRecord(**{**record.public(), "key_id": "ETERNAL00001", "hash": record.hash, "expires_at": None,
                               "revoked_at": None})  # fmt: skip
        await kernel.store.insert_key(eternal, max_active=None, now=kernel.clock())
        _, new, old = await kernel.keys.rotate("ETERNAL00001")
        assert new.expires_at is None and new.active(kernel.clock() + 10**9)
        assert old.key_id == "ETERNAL00001"
    finally:
        await kernel.aclose()


async def test_key_operations_can_be_held_to_one_brand(tmp_path):
    from qaqnuz.errors import UsageError

    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="a")
        for operation in (
            kernel.keys.revoke(record.key_id, brand="globex"),
            kernel.keys.revoke(raw, brand="globex"),
            kernel.keys.rotate(record.key_id, brand="globex"),
            kernel.keys.update_scopes(record.key_id, ["orders.read"], brand="globex"),
        ):
            with pytest.raises(UsageError, match="no key"):
                await operation
        assert (await kernel.store.get_key(record.key_id)).active(kernel.clock())
        _, revoked = await kernel.keys.revoke(raw, brand="acme")
        assert revoked is True
    finally:
        await kernel.aclose()


async def test_a_verified_key_is_checked_again_on_every_request(tmp_path):
    """The auth provider remembers keys it verified (no parse or HMAC again), but asks the store each time: a
    re-scope, a revocation by another process and an expiry all take effect on the next request."""
    from qaqnuz.builtin.sqlite_store import SqliteStore

    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="a", role="manager")
        first = await kernel.authenticate(raw)
        assert first is not None and await kernel.authenticate(raw) is first  # remembered
        await kernel.keys.update_scopes(record.key_id, ["orders.read", "orders.write"])
        rescoped = await kernel.authenticate(raw)
        assert rescoped is not None and rescoped.scopes == {"orders.read", "orders.write"}
        other = SqliteStore(tmp_path / "qaqnuz.db")  # another process's connection, as `qaqnuz keys revoke` has
        try:
            assert await other.revoke_key(record.key_id, kernel.clock())
        finally:
            await other.aclose()
        assert await kernel.authenticate(raw) is None
        raw2, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="b", expires_in=3600)
        assert await kernel.authenticate(raw2) is not None
        now = kernel.clock()
        kernel.clock = lambda: now + 7200  # type: ignore[method-assign]
        kernel.runtime.auth.clock = kernel.clock
        assert await kernel.authenticate(raw2) is None  # expired, though its record did not change
    finally:
        await kernel.aclose()
