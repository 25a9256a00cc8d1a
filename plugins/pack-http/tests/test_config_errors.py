"""Configuration mistakes are ConfigErrors with their location, found at load, never at call time."""

from __future__ import annotations

import pytest
from httppack_kit import config, echo_pack

import qaqnuz_pack_http
from qaqnuz import ConfigError

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:9"


async def problems(qaqnuz_kernel, pack: str, tools=("echo",)) -> str:
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(config(pack, list(tools)), plugins=[qaqnuz_pack_http])
    return "\n".join(caught.value.problems)


def tool(body: str, name: str = "t") -> str:
    return f'\n[[packs.api.tools]]\nname = "{name}"\ndescription = "T."\nscope = "api.read"\n{body}\n'


async def test_unknown_placeholders_are_located(qaqnuz_kernel):
    pack = echo_pack(BASE) + tool(
        'path = "/x/{{ x }}"\nquery = { a = "{{ y }}" }\nheaders = { X-A = "{{ z }}" }\n'
        'method = "POST"\nbody = { outer = { inner = "{{ w }}" }, list = ["{{ v }}"] }'
    )
    text = await problems(qaqnuz_kernel, pack)
    assert "[packs.api] tools[1] path: unknown placeholder 'x'" in text
    assert "[packs.api] tools[1] query.a: unknown placeholder 'y'" in text
    assert "[packs.api] tools[1] headers.X-A: unknown placeholder 'z'" in text
    assert "[packs.api] tools[1] body.outer.inner: unknown placeholder 'w'" in text
    assert "[packs.api] tools[1] body.list[0]: unknown placeholder 'v'" in text


async def test_plain_string_secret_is_refused(qaqnuz_kernel):
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "bearer", token = "sk-live-plain-123" }'))
    assert "[packs.api.auth] token: a secret is given by reference" in text
    assert "sk-live-plain-123" not in text


async def test_missing_env_secret_is_located(qaqnuz_kernel, monkeypatch):
    monkeypatch.delenv("QZ_NOT_SET", raising=False)
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "bearer", token = { env = "QZ_NOT_SET" } }'))
    assert "[packs.api.auth] token: environment variable QZ_NOT_SET is not set" in text


async def test_missing_secret_file_and_wrong_auth_fields(qaqnuz_kernel):
    text = await problems(
        qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "basic", username = "u", password = { file = "nope.txt" } }')
    )
    assert "[packs.api.auth] password: cannot read secret file" in text
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "header", value = { env = "X" } }'))
    assert "[packs.api.auth] header: required for type = 'header'" in text
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "oauth" }'))
    assert "[packs.api.auth] type" in text


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("ftp://files.example.com", "[packs.api] base_url: must be an http:// or https:// URL (got scheme 'ftp')"),
        ("file:///etc/passwd", "[packs.api] base_url: must be an http:// or https:// URL"),
        ("https://user:pw@api.example.com", "[packs.api] base_url: must not contain credentials"),
        ("https://api.example.com/v1?key=1", "[packs.api] base_url: must not have a query or fragment"),
    ],
)
async def test_bad_base_urls(qaqnuz_kernel, base, expected):
    assert expected in await problems(qaqnuz_kernel, echo_pack(base))


async def test_template_rules(qaqnuz_kernel):
    pack = echo_pack(BASE, extra='variables = { q = "clash", region = "eu" }') + tool(
        'path = "users/{{ region }}"', "no_slash"
    )
    pack += tool('path = "/a/../b"', "dots") + tool('path = "/a?x=1"', "query_in_path")
    pack += tool('path = "/u/{{ opt }}"\ninput = { opt = { type = "string", required = false } }', "optional_in_path")
    pack += tool('path = "/u"\nbody = { a = 1 }', "get_with_body")
    pack += tool('path = "/u/{{ region"', "malformed")
    pack += tool('path = "/u"\nheaders = { Host = "evil" }', "reserved_header")
    text = await problems(qaqnuz_kernel, pack)
    assert "[packs.api] tools[0] input.q: 'q' is also a pack variable" in text
    assert "[packs.api] tools[1] path: must start with '/'" in text
    assert "[packs.api] tools[2] path: '.' and '..' segments are not allowed" in text
    assert "[packs.api] tools[3] path: only URL-safe characters" in text
    assert "[packs.api] tools[4] path: placeholder 'opt' is an optional argument without a default" in text
    assert "[packs.api] tools[5] body: a GET request has no body" in text
    assert "[packs.api] tools[6] path: malformed placeholder" in text
    assert "[packs.api] tools[7] headers.Host: Host is set by the HTTP client" in text


async def test_pack_level_settings(qaqnuz_kernel):
    extra = (
        'timeout = "soon"\nmax_response_bytes = 0\nretries = 9\nunknown_key = 1\n'
        'headers = { Authorization = "Bearer plain" }'
    )
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "bearer", token = { env = "PATH" } }', extra))
    assert "[packs.api] unknown_key: unknown key" in text
    extra = 'timeout = "soon"\nmax_response_bytes = 0\nretries = 9\nheaders = { Authorization = "Bearer plain" }'
    text = await problems(qaqnuz_kernel, echo_pack(BASE, 'auth = { type = "bearer", token = { env = "PATH" } }', extra))
    assert "[packs.api] timeout: 'soon' is not a duration" in text
    assert "[packs.api] max_response_bytes: at least 1" in text
    assert "[packs.api] retries: between 0 and 5" in text
    assert "[packs.api] headers.Authorization: Authorization is set by [auth]" in text


async def test_duplicate_tool_names_and_bad_shared_fields(qaqnuz_kernel):
    pack = echo_pack(BASE) + tool('path = "/a"', "echo")
    pack += '\n[[packs.api.tools]]\nname = "bad"\ndescription = "B."\nscope = "Bad Scope"\npath = "/b"\n'
    text = await problems(qaqnuz_kernel, pack)
    assert "tools[1] name: 'echo' is already used by" in text
    assert "[packs.api] tools[2] scope: 'Bad Scope' must be" in text


async def test_problems_name_the_right_pack_when_there_are_several(qaqnuz_kernel):
    first = echo_pack(BASE)
    second = (
        echo_pack("http://127.0.0.1:8")
        .replace("[packs.api]", "[packs.other]")
        .replace("[[packs.api.tools]]", "[[packs.other.tools]]")
        .replace('name = "echo"', 'name = "echo2"')
        .replace('path = "/echo"', 'path = "/echo/{{ nope }}"')
    )
    text = await problems(qaqnuz_kernel, first + "\n" + second, tools=("echo", "echo2"))
    assert "[packs.other] tools[0] path: unknown placeholder 'nope'" in text
    assert "[packs.api]" not in text
