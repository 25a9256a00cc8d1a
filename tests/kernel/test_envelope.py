"""Truncation: an oversized payload is cut to fit max_bytes as valid UTF-8 JSON, lists keep their shape."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from qaqnuz import envelope as env


def encoded(value) -> bytes:
    """The bytes the wire carries (the envelope encodes with msgspec)."""
    return msgspec.json.encode(value)


def test_list_keeps_its_shape_and_fits() -> None:
    rows = [{"row": i, "text": "x" * 40} for i in range(200)]
    cut = env.truncate(rows, 1000)
    assert isinstance(cut, list)
    assert 0 < len(cut) < len(rows)
    assert cut == rows[: len(cut)]  # whole rows, in order, a prefix
    assert len(encoded(cut)) <= 1000
    assert len(encoded(rows[: len(cut) + 1])) > 1000  # the largest prefix that fits


def test_non_list_becomes_a_fitting_string_prefix() -> None:
    data = {"rows": [{"n": i, "text": "y" * 30} for i in range(100)]}
    full = encoded(data).decode("utf-8")
    cut = env.truncate(data, 500)
    assert isinstance(cut, str)
    assert full.startswith(cut)
    assert len(cut) > 400  # not needlessly short
    assert len(encoded(cut)) <= 500


def test_list_whose_first_item_does_not_fit_becomes_a_string() -> None:
    rows = [{"blob": "z" * 1000}, {"blob": "small"}]
    cut = env.truncate(rows, 200)
    assert isinstance(cut, str)
    assert len(encoded(cut)) <= 200


def test_multibyte_utf8_is_never_split() -> None:
    # "é" is 2 bytes, "€" 3, "😀" 4 (a surrogate pair if anything worked in UTF-16)
    for char in ("é", "€", "😀"):
        text = char * 1000
        for max_bytes in range(64, 90):
            cut = env.truncate(text, max_bytes)
            raw = encoded(cut)
            assert len(raw) <= max_bytes
            raw.decode("utf-8", errors="strict")
            assert set(json.loads(raw)) <= {char, '"'}


def test_success_marks_truncation_and_content_is_valid_json() -> None:
    rows = [{"row": i, "text": "é" * 50} for i in range(2000)]
    text, envelope = env.success(rows, 4096)
    assert envelope.truncated is True
    assert len(text.encode("utf-8")) <= 4096
    assert json.loads(text) == envelope.data
    assert envelope.data == rows[: len(envelope.data)]
    small_text, small = env.success({"a": 1}, 4096)
    assert small.truncated is False
    assert json.loads(small_text) == {"a": 1}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=8), children, max_size=8),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, max_bytes=st.integers(min_value=2, max_value=400))
def test_truncated_value_always_fits_and_is_valid_json(value, max_bytes) -> None:
    cut = env.truncate(value, max_bytes)
    raw = encoded(cut)
    assert len(raw) <= max_bytes
    decoded = json.loads(raw.decode("utf-8", errors="strict"))
    if isinstance(value, list) and isinstance(decoded, list):
        assert decoded == json.loads(encoded(value[: len(decoded)]))
    else:
        assert isinstance(decoded, str)
        assert encoded(value).decode("utf-8").startswith(decoded)
