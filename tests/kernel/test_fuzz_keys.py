"""Fuzzing key strings: `qaqnuz.keys.parse_key`, `looks_like_key` and the API key provider
(`kernel.runtime.auth.authenticate`, and the kernel's own `authenticate`) on arbitrary strings: unicode, huge,
the minted key with one character changed, cut or padded, and well-formed keys with a valid checksum but
random ids. Invariants: nothing raises; only the exact minted key authenticates; `parse_key` accepts only
well-formed keys with a valid checksum."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from kit import kit_config
from qaqnuz.keys import ALPHABET, CHECKSUM_LEN, KEY_ID_LEN, SECRET_LEN, checksum, looks_like_key, parse_key
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.fuzz
PREFIX = "qx_live_"


class Minted:
    """A started kernel (on a loop in its own thread) and one key minted on it."""

    def __init__(self, folder: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.kernel: Any = self.run(start_kernel(write_config(folder, kit_config()), plugins=["testkit_pack.plugin"]))
        raw, _ = self.run(self.kernel.keys.mint(brand="acme", scopes=["orders.read"], name="fuzz"))
        self.key = str(raw)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.run(self.kernel.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def minted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minted]:
    holder = Minted(tmp_path_factory.mktemp("fuzz-keys"))
    try:
        yield holder
    finally:
        holder.close()


def b62_text(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=ALPHABET, min_size=size, max_size=size)


def well_formed() -> st.SearchStrategy[str]:
    """A key with the right shape and a valid checksum, for a random id and secret (never minted)."""
    return st.builds(lambda i, s: f"{PREFIX}{i}_{s}", b62_text(KEY_ID_LEN), b62_text(SECRET_LEN)).map(
        lambda body: body + checksum(body)
    )


@st.composite
def near_keys(draw: st.DrawFn, key: str) -> str:
    how = draw(st.sampled_from(["change", "cut", "pad", "case", "insert"]))
    at = draw(st.integers(0, len(key) - 1))
    char = draw(st.sampled_from(ALPHABET) | st.characters())
    if how == "change":
        return key[:at] + char + key[at + 1 :]
    if how == "cut":
        return key[:at] + key[at + 1 :]
    if how == "insert":
        return key[:at] + char + key[at:]
    if how == "pad":
        return draw(st.sampled_from([" ", "\t", "\n", "\x00", "\u200b", "\ufeff"])) + key
    return key.swapcase()


def candidates(key: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=300),
        st.text(max_size=80).map(lambda t: PREFIX + t),
        st.integers(257, 200_000).map(lambda n: PREFIX + "A" * n),
        near_keys(key),
        well_formed(),
        st.just(key),
    )


def _check(minted: Minted, text: str) -> None:
    parsed = parse_key(text, PREFIX)
    if parsed is not None:
        assert parsed.raw == text and len(text) == len(PREFIX) + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
        assert checksum(text[:-CHECKSUM_LEN]) == text[-CHECKSUM_LEN:]
    assert looks_like_key(text) in (True, False)
    principal = minted.run(minted.kernel.runtime.auth.authenticate(text))
    via_kernel = minted.run(minted.kernel.authenticate(text, transport="fuzz"))
    if text == minted.key:
        assert principal is not None and via_kernel is not None and principal.brand == "acme"
        assert parsed is not None and looks_like_key(text)
    else:
        assert principal is None and via_kernel is None, f"{text[:80]!r} authenticated"


@fuzz_settings(ci_examples=200)
@given(data=st.data())
def test_only_the_minted_key_authenticates(minted: Minted, data: st.DataObject) -> None:
    _check(minted, data.draw(candidates(minted.key), label="credential"))


def test_the_minted_key_itself_and_none(minted: Minted) -> None:
    _check(minted, minted.key)
    assert parse_key(None, PREFIX) is None
    assert minted.run(minted.kernel.runtime.auth.authenticate(None)) is None


@fuzz_settings(ci_examples=200)
@given(text=st.text(max_size=500) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_looks_like_key_and_parse_key_never_raise(text: str) -> None:
    assert looks_like_key(text) in (True, False)
    for prefix in (PREFIX, "", text[:8]):
        parsed = parse_key(text, prefix)
        assert parsed is None or parsed.raw == text
