"""Hypothesis strategies for fuzzing qaqnuz's inputs, and the checks every answer must pass.

Shared by the fuzz tests of every transport (stdio now, HTTP later), tool arguments, config files and key
strings:

* `wire_messages()`: one JSON-RPC message as the bytes of one line: valid MCP requests and notifications,
  near-valid ones (a field missing, of the wrong type, or extra), and garbage (random bytes, invalid UTF-8,
  duplicate keys, huge numbers, deep nesting, long strings, batches, truncations). The JSON text is built by
  hand (`encode`), so it can say what `json.dumps` never would.
* every string the caller chooses carries a canary (`CANARY` + digits): an answer that contains one echoed the
  caller's input (`canaries_in`). Request ids carry canaries too; JSON-RPC asks for the id to be repeated, so
  checks look at answers without their `id` (`check_answer` does).
* `check_answer(line)`: one answer line is a well-formed JSON-RPC 2.0 response with no canary, no exception
  text and no parser or pydantic message (`leaks`).

Profiles: `ci` (the default: bounded, derandomized, no example database, so a CI run is reproducible) and
`long` (many examples), chosen by `QAQNUZ_FUZZ_PROFILE`. Tests take their settings from `fuzz_settings()`,
never from a global profile, so other hypothesis tests in the same run keep theirs. The longer run:

    QAQNUZ_FUZZ_PROFILE=long uv run pytest -q -m fuzz
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# -- profiles --------------------------------------------------------------------------------------------
PROFILE_ENV = "QAQNUZ_FUZZ_PROFILE"
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture]  # fmt: skip
settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=_HEALTH,
)  # fmt: skip
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=_HEALTH, print_blob=True)


def profile_name() -> str:
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in ("ci", "long"):
        raise ValueError(f"{PROFILE_ENV}={name!r}: use 'ci' (the default) or 'long'")
    return name


def fuzz_settings(ci_examples: int | None = None, **overrides: Any) -> settings:
    """Settings for one fuzz test: the selected profile; `ci_examples` bounds the example count in the `ci`
    profile only (the `long` profile keeps its own)."""
    name = profile_name()
    parent = settings.get_profile(name)
    if name == "ci" and ci_examples is not None:
        overrides.setdefault("max_examples", ci_examples)
    return settings(parent, **overrides)


# -- canaries and leak markers ----------------------------------------------------------------------------
CANARY = "CANARY"
CANARY_RE = re.compile(r"CANARY\d+")
#: Texts only a leaked parser message, validation error, exception or traceback would contain.
LEAK_MARKERS = (
    "Traceback",
    "validation error",
    "Validation error",
    "pydantic",
    "Input should be",
    "input_value",
    "Field required",
    "type=",
    "For further information",
    "errors.pydantic.dev",
    'File "',
    "line 1 column",
    "msgspec",
)
#: An exception class name (`KeyError`, `ValidationError`, `JSONDecodeError`, `RecursionError`, ...).
EXCEPTION_NAME_RE = re.compile(r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception)\b")


def canaries() -> st.SearchStrategy[str]:
    return st.integers(0, 10**9).map(lambda n: f"{CANARY}{n}")


def canary_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Any text (no surrogates) with a canary somewhere in it."""
    return st.builds(lambda a, c, b: a + c + b, st.text(max_size=max_size), canaries(), st.text(max_size=max_size))


def canaries_in(text: str) -> list[str]:
    return CANARY_RE.findall(text)


def leaks(text: str) -> list[str]:
    """The leak markers and exception class names found in `text`."""
    found = [marker for marker in LEAK_MARKERS if marker in text]
    return found + EXCEPTION_NAME_RE.findall(text)


# -- hand-built JSON ---------------------------------------------------------------------------------------
@attrs.frozen
class Raw:
    """Bytes put into the JSON text verbatim (a huge number literal, invalid UTF-8, a cut-off value)."""

    text: bytes


@attrs.frozen
class Pairs:
    """A JSON object written from its (key, value) pairs in order: keys may repeat."""

    items: tuple[tuple[str, Any], ...]


def encode(value: Any) -> bytes:
    """JSON text for `value`, which may hold `Raw` and `Pairs` anywhere. Strings are written with non-ASCII
    characters as they are (UTF-8); huge ints as their digits. Iterative only where it matters: deep nesting
    comes from `Raw`, not from Python nesting."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return b"{" + b",".join(encode(k) + b":" + encode(v) for k, v in value.items) + b"}"
    if isinstance(value, dict):
        return encode(Pairs(tuple(value.items())))
    if isinstance(value, list | tuple):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value).encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return json.dumps(value).encode()  # NaN and Infinity come out as JS literals: not JSON, on purpose
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    raise TypeError(f"cannot encode {type(value).__name__}")


def nested(depth: int, inner: bytes = b"1", kind: str = "array") -> Raw:
    """`depth` levels of arrays or objects around `inner`, as raw text (no Python recursion)."""
    if kind == "array":
        return Raw(b"[" * depth + inner + b"]" * depth)
    return Raw(b'{"a":' * depth + inner + b"}" * depth)


# -- JSON values ---------------------------------------------------------------------------------------------
HUGE_NUMBERS = (Raw(b"1e400"), Raw(b"-1e400"), Raw(b"1E+99999"), 10**400, -(10**400), Raw(b"9" * 5000),
                Raw(b"0.000000000000000000000000000000000000000000000000001e-400"), 2**63, 2**64, -(2**63) - 1,
                2**53 + 1)  # fmt: skip


#: The same in Python values (what an in-process caller can hand over).
PY_HUGE_NUMBERS = (10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 2**53 + 1, 1e308, -1e308, 5e-324)


def huge_numbers(*, python: bool = False) -> st.SearchStrategy[Any]:
    return st.sampled_from(PY_HUGE_NUMBERS if python else HUGE_NUMBERS)


def scalars(*, huge: bool = True, python: bool = False) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        canary_text(),
    ]
    if huge:
        options.append(huge_numbers(python=python))
    return st.one_of(options)


def json_values(*, max_leaves: int = 12, huge: bool = True, python: bool = False) -> st.SearchStrategy[Any]:
    """Any JSON value (strings carry canaries; keys too). `python`: only plain Python values (no `Raw`)."""
    return st.recursive(
        scalars(huge=huge, python=python),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(canary_text(8), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(*, huge: bool = True, python: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(canary_text(8), json_values(huge=huge, python=python), max_size=5)


def long_strings(min_size: int = 10_000, max_size: int = 200_000) -> st.SearchStrategy[str]:
    """A long string (one repeated character, cheap to generate) with a canary at each end."""
    return st.builds(
        lambda c, ch, n: c + ch * n + c,
        canaries(),
        st.sampled_from(["x", "é", "€", "\U0001f600", "\\", '"', "\x00"]),
        st.integers(min_size, max_size),
    )


# -- JSON-RPC messages for MCP methods ---------------------------------------------------------------------
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
REQUEST_METHODS = ("initialize", "tools/list", "tools/call", "resources/list", "resources/templates/list",
                   "prompts/list", "ping", "completion/complete", "logging/setLevel")  # fmt: skip
NOTIFICATION_METHODS = ("notifications/initialized", "notifications/cancelled", "notifications/progress",
                        "notifications/roots/list_changed")  # fmt: skip
#: Tool names any server might have; callers pass their own (a pack's tools) to `tool_call_params`.
DEFAULT_TOOL_NAMES = ("echo", "write_tool", "get_order_status", "create_order")


def request_ids() -> st.SearchStrategy[Any]:
    """Ids JSON-RPC allows: a string (carrying a canary) or an integer."""
    return st.one_of(st.integers(-(2**53) + 1, 2**53 - 1), canary_text(8))


def tool_names(names: Sequence[str] = DEFAULT_TOOL_NAMES) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(tuple(names)), canary_text(8))


def tool_call_params(
    names: Sequence[str] = DEFAULT_TOOL_NAMES, arguments: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    args = arguments if arguments is not None else json_objects()
    with_arguments = st.builds(lambda name, a: {"name": name, "arguments": a}, tool_names(names), args)
    return with_arguments | st.builds(lambda name: {"name": name}, tool_names(names))


def _params_for(method: str, names: Sequence[str], arguments: st.SearchStrategy[Any] | None) -> st.SearchStrategy:
    if method == "initialize":
        return st.fixed_dictionaries(
            {
                "protocolVersion": st.sampled_from(HANDSHAKE_VERSIONS) | canary_text(4),
                "capabilities": st.just({}) | json_objects(huge=False),
                "clientInfo": st.fixed_dictionaries({"name": canary_text(8), "version": canary_text(4)}),
            }
        )
    if method == "tools/call":
        return tool_call_params(names, arguments)
    if method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        return st.just({}) | st.fixed_dictionaries({"cursor": canary_text(8)})
    if method == "logging/setLevel":
        return st.fixed_dictionaries({"level": st.sampled_from(["debug", "info", "error"]) | canary_text(4)})
    if method == "completion/complete":
        return st.fixed_dictionaries(
            {
                "ref": st.fixed_dictionaries({"type": st.just("ref/prompt"), "name": canary_text(6)}),
                "argument": st.fixed_dictionaries({"name": canary_text(6), "value": canary_text(6)}),
            }
        )
    if method == "notifications/cancelled":
        return st.fixed_dictionaries({"requestId": request_ids(), "reason": canary_text(8)})
    if method == "notifications/progress":
        return st.fixed_dictionaries({"progressToken": request_ids(), "progress": st.floats(0, 100)})
    return st.just({})


def _with_meta(params: Any, meta: Mapping[str, Any] | None) -> Any:
    if meta is None or not isinstance(params, dict):
        return params
    return {**params, "_meta": {**meta, **params.get("_meta", {})}}


def requests(
    *,
    methods: Sequence[str] = REQUEST_METHODS,
    tools: Sequence[str] = DEFAULT_TOOL_NAMES,
    arguments: st.SearchStrategy[Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid JSON-RPC requests for MCP methods, as dicts. `meta` is merged into every `params` (the
    2026-07-28 era's per-request `_meta` envelope); None for the handshake era and stdio."""
    method = st.sampled_from(tuple(methods))
    if "tools/call" in methods:  # the governed path is where most of the code is: call it more often
        method = st.one_of(st.just("tools/call"), method)
    return method.flatmap(
        lambda method: st.builds(
            lambda rid, params: {"jsonrpc": "2.0", "id": rid, "method": method, "params": _with_meta(params, meta)},
            request_ids(),
            _params_for(method, tools, arguments),
        )
    )


def notifications(*, meta: Mapping[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid notifications (no id: never answered), known and unknown."""
    method = st.sampled_from(NOTIFICATION_METHODS) | canary_text(6).map(lambda c: f"notifications/{c}")
    return method.flatmap(
        lambda m: _params_for(m, DEFAULT_TOOL_NAMES, None).map(
            lambda params: {"jsonrpc": "2.0", "method": m, "params": _with_meta(params, meta)}
        )
    )


def unknown_methods(*, meta: Mapping[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda rid, method, params: {"jsonrpc": "2.0", "id": rid, "method": method, "params": _with_meta(params, meta)},
        request_ids(),
        canary_text(8) | canary_text(4).map(lambda c: f"tools/{c}"),
        json_objects(),
    )


def answers() -> st.SearchStrategy[dict[str, Any]]:
    """What a client sends back to a server's request: well formed, or with a `result` or `error` of any shape
    (the SDK's own check of those quotes the values)."""
    error = st.one_of(
        st.fixed_dictionaries({"code": st.integers(-40000, 40000), "message": canary_text(8)}),
        st.fixed_dictionaries({"code": wrong_values(), "message": wrong_values()}),
        wrong_values(),
    )
    return st.one_of(
        st.builds(
            lambda i, r: {"jsonrpc": "2.0", "id": i, "result": r}, request_ids(), json_objects() | wrong_values()
        ),
        st.builds(lambda i, e: {"jsonrpc": "2.0", "id": i, "error": e}, request_ids(), error),
    )


def valid_messages(
    *, tools: Sequence[str] = DEFAULT_TOOL_NAMES, meta: Mapping[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(requests(tools=tools, meta=meta), notifications(meta=meta), unknown_methods(meta=meta), answers())


# -- near-valid: one thing wrong ------------------------------------------------------------------------------
def wrong_values(*, python: bool = False) -> st.SearchStrategy[Any]:
    """A value of a type a field does not take."""
    return st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False), huge_numbers(python=python), canary_text(6),
        st.lists(scalars(huge=False), max_size=3), json_objects(huge=False),
    )  # fmt: skip


def _mutate(message: dict[str, Any], how: str, field: str, value: Any, extra: str) -> dict[str, Any]:
    out = dict(message)
    if how == "drop":
        out.pop(field, None)
    elif how == "retype":
        out[field] = value
    elif how == "extra":
        out[extra] = value
    elif how == "answer_and_request":  # a request that also claims to be a response
        out["result" if value is None else "error"] = value if value is not None else {}
    elif how == "params_retype" and isinstance(out.get("params"), dict) and out["params"]:
        params = dict(out["params"])
        params[sorted(params)[0]] = value
        out["params"] = params
    elif how == "params_extra" and isinstance(out.get("params"), dict):
        out["params"] = {**out["params"], extra: value}
    return out


def near_valid_messages(
    *, tools: Sequence[str] = DEFAULT_TOOL_NAMES, meta: Mapping[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """A valid message with one field dropped, of the wrong type, or with an extra field."""
    return st.builds(
        _mutate,
        valid_messages(tools=tools, meta=meta),
        st.sampled_from(["drop", "retype", "extra", "answer_and_request", "params_retype", "params_extra"]),
        st.sampled_from(["jsonrpc", "id", "method", "params"]),
        wrong_values(),
        canary_text(6),
    )


# -- garbage -------------------------------------------------------------------------------------------------
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82")


def _with_invalid_utf8(line: bytes, bad: bytes, at: int) -> bytes:
    """`bad` put inside the first string of the text, or at `at` (modulo the length) when there is none."""
    quote = line.find(b'"')
    where = quote + 1 if quote >= 0 else at % (len(line) + 1)
    return line[:where] + bad + line[where:]


def _deep(message: dict[str, Any], depth: int, kind: str, where: str) -> Any:
    value = nested(depth, b"1", kind)
    if where == "top":
        return value
    out = dict(message)
    params = out.get("params") if isinstance(out.get("params"), dict) else {}
    if where == "arguments":
        out["params"] = {**params, "arguments": {"deep": value}}
    else:
        out["params"] = {**params, "_meta": {"deep": value}}
    return out


def _long(message: dict[str, Any], text: str, where: str) -> dict[str, Any]:
    out = dict(message)
    if where == "method":
        out["method"] = text
    elif where == "id":
        out["id"] = text
    else:
        params = out.get("params") if isinstance(out.get("params"), dict) else {}
        out["params"] = {**params, "arguments": {"message": text}, "name": params.get("name", "echo")}
    return out


def _duplicated(message: dict[str, Any], field: str, value: Any, first: bool) -> Pairs:
    """The message with `field` written twice: `value` first or last (which one a parser keeps differs)."""
    items = list(message.items())
    dup = (field, value)
    return Pairs(tuple([dup, *items] if first else [*items, dup]))


def _huge_in(message: dict[str, Any], number: Any, where: str) -> dict[str, Any]:
    out = dict(message)
    if where == "id":
        out["id"] = number
    else:
        params = out.get("params") if isinstance(out.get("params"), dict) else {}
        out["params"] = {**params, "arguments": {"message": "x", "times": number, "n": number}}
    return out


def garbage_lines(
    *, tools: Sequence[str] = DEFAULT_TOOL_NAMES, meta: Mapping[str, Any] | None = None
) -> st.SearchStrategy[bytes]:
    """Bytes that are not one valid JSON-RPC message, or that stress its parser: random bytes, invalid UTF-8,
    truncated text, scalars, batches, duplicate keys, huge numbers, deep nesting, long strings."""
    base = valid_messages(tools=tools, meta=meta)
    one_line = st.one_of(base.map(encode), near_valid_messages(tools=tools, meta=meta).map(encode))
    return st.one_of(
        st.binary(max_size=200),
        canary_text(40).map(lambda t: t.encode("utf-8")),
        st.builds(_with_invalid_utf8, one_line, st.sampled_from(INVALID_UTF8), st.integers(0, 10_000)),
        st.builds(lambda line, cut: line[: cut % max(1, len(line))], one_line, st.integers(0, 10_000)),  # cut short
        json_values().map(encode),  # a scalar, an array, an object without jsonrpc
        st.lists(st.one_of(base, near_valid_messages(tools=tools, meta=meta)), max_size=4).map(encode),  # batch
        st.builds(
            _duplicated,
            base,
            st.sampled_from(["id", "method", "jsonrpc", "params"]),
            wrong_values() | base,
            st.booleans(),
        ).map(encode),
        st.builds(
            lambda m, name, first: encode(
                _duplicated(m, "params", Pairs((("name", name), ("name", "echo"))[:: 1 if first else -1]), False)
            ),
            requests(methods=["tools/call"], tools=tools, meta=meta),
            tool_names(tools),
            st.booleans(),
        ),
        st.builds(_huge_in, base, huge_numbers(), st.sampled_from(["id", "arguments"])).map(encode),
        st.builds(
            _deep,
            base,
            st.integers(100, 5000),
            st.sampled_from(["array", "object"]),
            st.sampled_from(["top", "arguments", "meta"]),
        ).map(encode),
        st.builds(_long, base, long_strings(), st.sampled_from(["method", "id", "arguments"])).map(encode),
        st.builds(lambda m: encode(m) + b" " + encode(m), base),  # two messages on one line
        st.builds(lambda m: b"\xef\xbb\xbf" + encode(m), base),  # a byte-order mark
        base.map(lambda m: encode(m).replace(b'"2.0"', b"2.0", 1)),  # jsonrpc as a number
    )


def wire_messages(
    *, tools: Sequence[str] = DEFAULT_TOOL_NAMES, meta: Mapping[str, Any] | None = None
) -> st.SearchStrategy[bytes]:
    """One line's bytes (no newline added; a garbage line may hold one): valid, near-valid or garbage."""
    return st.one_of(
        valid_messages(tools=tools, meta=meta).map(encode),
        near_valid_messages(tools=tools, meta=meta).map(encode),
        garbage_lines(tools=tools, meta=meta),
    )


# -- what an answer must be ---------------------------------------------------------------------------------
def check_answer(line: bytes | str) -> dict[str, Any]:
    """Assert `line` is one JSON-RPC 2.0 response with no canary (outside its id and a successful tool
    payload) and no leaked exception, parser or pydantic text; returns it decoded."""
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    answer = json.loads(text)
    assert isinstance(answer, dict), f"not a JSON object: {text[:300]!r}"
    assert answer.get("jsonrpc") == "2.0", f"jsonrpc is not '2.0': {text[:300]!r}"
    assert "id" in answer, f"no id: {text[:300]!r}"
    assert isinstance(answer["id"], str | int | None) and not isinstance(answer["id"], bool), text[:300]
    assert ("result" in answer) != ("error" in answer), f"not exactly one of result/error: {text[:300]!r}"
    assert set(answer) <= {"jsonrpc", "id", "result", "error"}, f"unexpected members: {sorted(answer)}"
    body = {k: v for k, v in answer.items() if k != "id"}
    if "error" in answer:
        error = answer["error"]
        assert isinstance(error, dict), text[:300]
        assert type(error.get("code")) is int, f"error.code is not an int: {text[:300]!r}"
        assert isinstance(error.get("message"), str), f"error.message is not a string: {text[:300]!r}"
    else:
        result = answer["result"]
        assert isinstance(result, dict), text[:300]
        if result.get("isError") is False:  # a tool's own payload may hold what the caller sent (echo)
            return answer
    shown = json.dumps(body, ensure_ascii=False)
    assert not canaries_in(shown), f"the answer echoes the caller's input: {shown[:500]!r}"
    assert not leaks(shown), f"the answer leaks {leaks(shown)}: {shown[:500]!r}"
    return answer


# -- tool arguments from a tool's input schema -----------------------------------------------------------------
def from_schema(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values a JSON Schema accepts, for the subset tool packs use (type, properties, required,
    additionalProperties, enum, const, min/max, min/maxLength, pattern, default). hypothesis-jsonschema is not a
    dependency; anything this does not know becomes any JSON value (the call may then be refused: fine)."""
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "object":
        properties = schema.get("properties", {})
        required = [name for name in schema.get("required", []) if name in properties]
        optional = {name: from_schema(sub) for name, sub in properties.items() if name not in required}
        base = st.fixed_dictionaries({name: from_schema(properties[name]) for name in required}, optional=optional)
        if schema.get("additionalProperties", True) is False or (not properties and "properties" in schema):
            return base
        return st.builds(lambda b, extra: {**extra, **b}, base, json_objects(huge=False))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: not s.endswith("\n"))
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        return st.builds(
            lambda c, t: (c + t)[: high if high is not None else None], canaries(), st.text(max_size=30)
        ).filter(lambda s: len(s) >= low) | st.text(min_size=low, max_size=high if high is not None else 30)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(low, high, allow_nan=False, allow_infinity=False) | st.integers(
            None if low is None else int(low) + 1, None if high is None else int(high)
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=5)
    if kind == "null":
        return st.none()
    return json_values(huge=False)


ERROR_CLASSES = ("validation", "permission", "retryable", "dependency", "terminal")
_FAILURE_KEYS = {"ok", "error_class", "sanitized_error", "retry_hint", "approval_id", "incident_id"}


def check_envelope(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """Assert a tools/call result (its wire form: `isError`, `content`, `structuredContent`) is SPEC §3's
    envelope, and that a failure's text echoes no canary and leaks nothing; returns `structuredContent`."""
    envelope = result.get("structuredContent")
    assert isinstance(envelope, dict), f"no envelope: {result}"
    content = result.get("content")
    assert isinstance(content, list) and content and content[0].get("type") == "text", f"no text content: {result}"
    if result.get("isError") is False:
        assert envelope.get("ok") is True and set(envelope) == {"ok", "data", "truncated"}, envelope
        assert isinstance(envelope["truncated"], bool)
        assert json.loads(content[0]["text"]) == envelope["data"], "content[0] is not the payload's JSON"
        return envelope
    assert result.get("isError") is True, f"isError is not a boolean: {result}"
    assert envelope.get("ok") is False and set(envelope) <= _FAILURE_KEYS, envelope
    assert envelope.get("error_class") in ERROR_CLASSES, envelope
    assert isinstance(envelope.get("sanitized_error"), str) and envelope["sanitized_error"], envelope
    assert content[0]["text"] == envelope["sanitized_error"], "content[0] is not the sanitized error"
    if envelope["error_class"] == "retryable":
        hint = envelope.get("retry_hint")
        assert isinstance(hint, dict) and set(hint) == {"retry_after_ms", "max_attempts", "backoff"}, envelope
    shown = json.dumps(result, ensure_ascii=False)
    assert not canaries_in(shown), f"the error echoes the caller's input: {shown[:500]!r}"
    assert not leaks(shown), f"the error leaks {leaks(shown)}: {shown[:500]!r}"
    return envelope
