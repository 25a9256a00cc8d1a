"""Arguments against input schemas: jsonschema-rs decides, messages name path and rule and never the value."""

from __future__ import annotations

import http.server
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from qaqnuz.records import SideEffect, Tool
from qaqnuz.registry import _prepare
from qaqnuz.validation import NOT_JSON, ArgumentsValidator

ORDER = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_[0-9]{1,12}$"},
        "qty": {"type": "integer", "minimum": 1, "maximum": 99},
        "note": {"type": "string", "maxLength": 20},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3, "uniqueItems": True},
        "when": {"type": "string", "format": "date"},
    },
    "required": ["order_id", "qty"],
    "additionalProperties": False,
}


OK = {"order_id": "ord_1", "qty": 2}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"qty": 1}, "$: missing required property 'order_id' (rule: required)."),
        ({**OK, "qty": 0}, "$.qty: must be >= 1 (rule: minimum)."),
        ({**OK, "qty": "SECRET-7"}, "$.qty: expected type integer (rule: type)."),
        ({**OK, "order_id": "x-SECRET"}, "$.order_id: must match the required pattern (rule: pattern)."),
        ({**OK, "note": "SECRET" * 5}, "$.note: must be at most 20 characters (rule: maxLength)."),
        ({**OK, "tags": ["a", "SECRET"]}, "$.tags[1]: must be one of the allowed values (rule: enum)."),
        ({**OK, "tags": ["a", "a"]}, "$.tags: items must be unique (rule: uniqueItems)."),
        ({**OK, "when": "SECRET-13-45"}, "$.when: must be a valid date (rule: format)."),
        ({**OK, "SECRET": 1}, "$: unexpected properties are not allowed (rule: additionalProperties)."),
    ],
)
def test_a_refusal_names_the_path_and_the_rule_and_never_the_value(arguments, message):
    validator = ArgumentsValidator(ORDER)
    assert validator.problem(arguments) == "Invalid arguments at " + message
    assert "SECRET" not in message
    assert validator.problem({"order_id": "ord_1001", "qty": 2, "tags": ["a", "b"], "when": "2026-12-01"}) is None


def test_patterns_follow_ecma_262_so_dollar_does_not_match_before_a_trailing_newline():
    validator = ArgumentsValidator(ORDER)
    assert Draft202012Validator(ORDER).is_valid({"order_id": "ord_1001\n", "qty": 1})  # Python's `re` accepts it
    assert validator.problem({"order_id": "ord_1001\n", "qty": 1}) is not None
    assert validator.problem({"order_id": "ord_1001", "qty": 1}) is None


def test_arguments_that_are_not_json_data_are_refused():
    """Arguments handed in process may hold what JSON cannot (a non-string key): refused, never unchecked."""
    assert ArgumentsValidator(ORDER).problem({"order_id": "ord_1", "qty": 2, 5: "x"}) == NOT_JSON
    assert ArgumentsValidator({"type": "object"}).problem({5: "x"}) == NOT_JSON


def test_the_server_never_loads_the_jsonschema_package(tmp_path):
    """Schemas are checked and arguments validated by jsonschema-rs alone (jsonschema is about 10 MB resident)."""
    import subprocess
    import sys

    code = (
        "import sys, qaqnuz.registry, qaqnuz.pipeline, qaqnuz.kernel\n"
        "from qaqnuz.validation import ArgumentsValidator\n"
        "ArgumentsValidator({'type': 'object'}).problem({})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jsonschema'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def _noop(arguments):
    return {}


def test_nothing_remote_is_ever_fetched_and_a_remote_reference_refuses_only_its_tool():
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/schema.json"
        remote_ref = {"type": "object", "properties": {"x": {"$ref": url}}}
        remote_meta = {"$schema": url, "type": "object"}
        tools = [
            Tool("remote_ref", "Refers to a schema elsewhere.", remote_ref, "x.read", SideEffect.READ, _noop),
            Tool("remote_meta", "Names a metaschema elsewhere.", remote_meta, "x.read", SideEffect.READ, _noop),
            Tool("plain", "Nothing remote.", {"type": "object"}, "x.read", SideEffect.READ, _noop),
        ]
        ref, meta, plain = _prepare("p", tools, {})  # one bad schema is that tool's problem, not the sync's
        assert ref.validator is None and ref.problem and "cannot be compiled" in ref.problem
        assert meta.problem is None and meta.validator is not None  # read as 2020-12, its `$schema` never fetched
        assert meta.validator.problem({}) is None and meta.validator.problem([]) is not None
        assert plain.problem is None and plain.validator is not None
        assert hits == []
    finally:
        server.shutdown()


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-200, 200) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=25),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip
_arguments = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.sampled_from(["ord_1", "ord_123456789012", "ord_", "x", "ord_1234567890123"]) | _values,
        "qty": st.integers(-2, 120) | _values,
        "note": st.text(max_size=30) | _values,
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=4) | _values,
        "when": st.sampled_from(["2026-12-01", "2026-02-30", "yesterday"]) | _values,
        "extra": _values,
    },
)


@settings(max_examples=400, deadline=None)
@given(arguments=_arguments)
def test_both_validators_agree_on_every_argument_set_without_newlines(arguments):
    """Outside the regular-expression dialects (no newline in the data), the compiled validator decides exactly as
    the reference `jsonschema` validator with formats asserted, and the message is the one it would give."""
    reference = Draft202012Validator(ORDER, format_checker=Draft202012Validator.FORMAT_CHECKER)
    if "\n" in repr(arguments):
        return
    expected_valid = reference.is_valid(arguments)
    problem = ArgumentsValidator(ORDER).problem(arguments)
    assert (problem is None) == expected_valid, (arguments, problem)


def _suite_cases() -> list[tuple[str, dict, object, bool]]:
    """Every case of the official JSON Schema Test Suite's pattern files (tests/support/json_schema_test_suite)."""
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "support" / "json_schema_test_suite"
    cases = []
    for path in sorted(folder.glob("*.json")):
        for group in json.loads(path.read_text(encoding="utf-8")):
            for case in group["tests"]:
                name = f"{path.stem}: {group['description']}: {case['description']}"
                cases.append((name, group["schema"], case["data"], case["valid"]))
    return cases


SUITE = _suite_cases()


def test_the_suite_files_are_there():
    assert len(SUITE) >= 100  # pattern, patternProperties and optional/ecmascript-regex


@pytest.mark.parametrize(("name", "schema", "data", "valid"), SUITE, ids=[case[0] for case in SUITE])
def test_the_official_pattern_cases(name, schema, data, valid):
    assert (ArgumentsValidator(schema).problem(data) is None) is valid, name
