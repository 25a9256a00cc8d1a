"""Fuzzing config files: mutations of the testkit config (random keys and values, wrong types,
unknown tables, huge numbers, bad durations, a password in the store URL), cut or scribbled-on TOML text, and
bytes that are not TOML, loaded with `qaqnuz.config.load_config`. Invariants: it loads, or it raises
`ConfigError` (never another exception); every problem names its location; no message holds a traceback; a
secret placed in the config (marker `HUNTER` + digits) never appears in a message.

Two inputs once escaped as other exceptions (a file that is not UTF-8, an integer of over 4,300 digits); each has
its own test below.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import canary_text, fuzz_settings, huge_numbers
from kit import kit_config
from qaqnuz.config import load_config
from qaqnuz.errors import ConfigError

pytestmark = pytest.mark.fuzz
BASE = tomllib.loads(kit_config())
SECRET_RE = re.compile(r"HUNTER\d+")
SECRET_KEYS = ("password", "token", "secret", "api_key", "authorization", "dsn")


def secrets_() -> st.SearchStrategy[str]:
    return st.integers(0, 10**9).map(lambda n: f"HUNTER{n}")


def toml_value(value: Any) -> str:
    """A value as TOML (inline tables and arrays; TOML has no null: an empty string stands in)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '""'


def toml_text(data: dict[str, Any]) -> str:
    lines = []
    for key, value in data.items():
        lines.append(f"{json.dumps(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def config_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), huge_numbers(python=True), st.floats(),
        canary_text(10), secrets_(),
        st.sampled_from(["5s", "-5s", "0s", "1e400s", "99999999999999999999d", "5 fortnights", "", "60/0s", "0/60s",
                         "9" * 400 + "/60s", "sqlite:///", "postgresql://", "qx_live_", "*", "orders.*"]),
        st.lists(st.one_of(canary_text(6), st.integers()), max_size=3),
        st.dictionaries(canary_text(6), st.one_of(st.integers(), canary_text(6)), max_size=3),
    )  # fmt: skip


def _set(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(BASE)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    data = json.loads(json.dumps(BASE))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["set", "add", "drop", "table", "secret", "store"]))
        if how == "set":
            _set(data, list(draw(st.sampled_from(PATHS))), draw(config_values()))
        elif how == "add":
            parent = list(draw(st.sampled_from(PATHS)))[: draw(st.integers(0, 3))]
            _set(data, [*parent, draw(st.sampled_from(["x", "CANARY1", "", " ", "tools", "plan", "type"]))],
                 draw(config_values()))  # fmt: skip
        elif how == "drop":
            path = draw(st.sampled_from(PATHS))
            node: Any = data
            for part in path[:-1]:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(path[-1], None)
        elif how == "table":
            data[draw(canary_text(6))] = draw(st.dictionaries(canary_text(4), config_values(), max_size=3))
        elif how == "secret":  # a secret-looking key, anywhere, holding a secret
            parent = list(draw(st.sampled_from(PATHS)))[: draw(st.integers(0, 3))]
            _set(data, [*parent, draw(st.sampled_from(SECRET_KEYS))], draw(secrets_()))
        else:  # a password written into the store URL, or a malformed URL holding one
            secret = draw(secrets_())
            data.setdefault("server", {})["store"] = draw(
                st.sampled_from([
                    f"postgresql://user:{secret}@db.example/qaqnuz", f"sqlite:///qaqnuz.db?password={secret}",
                    f"postgresql://db.example/qaqnuz?sslmode=require&password={secret}", f"user:{secret}@nowhere",
                    f"POSTGRES://u:{secret}@h/db", f"{secret}",
                ])
            )  # fmt: skip
    return toml_text(data)


def check_load(path: Path) -> None:
    try:
        load_config(path, env={})
    except ConfigError as exc:
        message = str(exc)
        assert exc.problems, "a ConfigError with no problem"
        for problem in exc.problems:
            assert problem.startswith(("[", str(path), "env ")), f"a problem without its location: {problem!r}"
        assert "Traceback" not in message and 'File "' not in message, message
        assert not SECRET_RE.search(message), f"a secret in the message: {message}"


@fuzz_settings(ci_examples=150)
@given(text=mutated_configs())
def test_mutated_configs_load_or_fail_with_located_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "qaqnuz.toml"
    path.write_text(text, encoding="utf-8")
    check_load(path)


@fuzz_settings(ci_examples=100)
@given(
    cut=st.integers(0, 10**6),
    junk=st.one_of(canary_text(10), st.sampled_from(["[", "]", "=", '"', "[[", "\\", "\x00", "\ufeff", "\n[x]\n"])),
)
def test_cut_or_scribbled_text(tmp_path: Path, cut: int, junk: str) -> None:
    base = kit_config()
    at = cut % (len(base) + 1)
    path = tmp_path / "qaqnuz.toml"
    path.write_text(base[:at] + junk + base[at:] if cut % 2 else base[:at], encoding="utf-8")
    check_load(path)


@fuzz_settings(ci_examples=100)
@given(data=st.binary(max_size=300).filter(lambda b: _utf8(b)))
def test_bytes_that_are_utf8_but_not_toml(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "qaqnuz.toml"
    path.write_bytes(data)
    check_load(path)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "qaqnuz.toml"
    path.write_bytes(b'[server]\nname = "\xff\xfe"\n')
    check_load(path)


def test_an_integer_too_long_for_python(tmp_path: Path) -> None:
    path = tmp_path / "qaqnuz.toml"
    path.write_text("[approvals]\nmax_pending_per_key = " + "9" * 5000 + "\n")
    check_load(path)


@pytest.mark.parametrize(
    ("table", "line", "location"),
    [
        ("[approvals]", "wait_seconds = nan", "[approvals] wait_seconds"),
        ("[approvals]", "wait_seconds = inf", "[approvals] wait_seconds"),
        ("[server]", "last_used_flush = nan", "[server] last_used_flush"),
        ("[server]", 'last_used_flush = "' + "9" * 400 + 's"', "[server] last_used_flush"),
    ],
)
def test_numbers_that_are_not_finite_are_refused(tmp_path: Path, table: str, line: str, location: str) -> None:
    from kit import kit_config
    from qaqnuz import ConfigError
    from qaqnuz.config import load_config
    from qaqnuz.testing import write_config

    text = kit_config()
    text = text.replace(f"{table}\n", f"{table}\n{line}\n", 1) if table in text else text + f"\n{table}\n{line}\n"
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, text))
    assert location in str(raised.value)
