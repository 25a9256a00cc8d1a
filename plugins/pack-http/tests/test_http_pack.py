"""The http pack through a real kernel and the governed path, against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import time

import pytest
from httppack_kit import SECRET_BODY, config, echo_pack

import qaqnuz_pack_http
from qaqnuz_pack_http import OVERSIZED, Upstream

pytestmark = pytest.mark.anyio

TOKEN = "tok-SECRET-8c1f2e7a9b"
TOOLS = ["get_user", "create_item", "status", "slow", "huge", "declared_huge", "text", "empty", "redirect", "flaky"]


def api_pack(base_url: str) -> str:
    return f"""\
[packs.api]
type = "http"
base_url = "{base_url}/v1"
allow_private = true
timeout = "500ms"
max_response_bytes = 65536
variables = {{ tenant = "acme co/1" }}
headers = {{ X-Static = "static-value" }}
auth = {{ type = "bearer", token = {{ env = "QZ_HTTP_TOKEN" }} }}

[[packs.api.tools]]
name = "get_user"
description = "Fetch a user."
scope = "api.read"
path = "/users/{{{{ id }}}}/profile"
query = {{ tenant = "{{{{ tenant }}}}", q = "{{{{ q }}}}", fields = "name,email", limit = 5 }}
headers = {{ X-Tenant = "{{{{ tenant }}}}", X-Trace = "trace-{{{{ trace }}}}" }}

[packs.api.tools.input]
id = {{ type = "string" }}
q = {{ type = "string", required = false }}
trace = {{ type = "string", required = false }}

[[packs.api.tools]]
name = "create_item"
description = "Create an item."
scope = "api.write"
side_effect = "write"
method = "POST"
path = "/tenants/{{{{ tenant }}}}/items"

[packs.api.tools.input]
name = {{ type = "string" }}
count = {{ type = "integer" }}
urgent = {{ type = "boolean", default = false }}
note = {{ type = "string", required = false }}

[packs.api.tools.body]
name = "{{{{ name }}}}"
count = "{{{{ count }}}}"
urgent = "{{{{ urgent }}}}"
label = "item {{{{ name }}}} x{{{{ count }}}}"
note = "{{{{ note }}}}"
tags = ["{{{{ name }}}}", "fixed", "{{{{ note }}}}"]
meta = {{ tenant = "{{{{ tenant }}}}", version = 2 }}

[[packs.api.tools]]
name = "status"
description = "Answer with a status code."
scope = "api.read"
path = "/status/{{{{ code }}}}"
input = {{ code = {{ type = "integer" }} }}

[[packs.api.tools]]
name = "slow"
description = "Slow."
scope = "api.read"
path = "/slow"

[[packs.api.tools]]
name = "huge"
description = "Huge."
scope = "api.read"
path = "/huge"

[[packs.api.tools]]
name = "declared_huge"
description = "Declares a huge body."
scope = "api.read"
path = "/declared-huge"

[[packs.api.tools]]
name = "text"
description = "Plain text."
scope = "api.read"
path = "/text"

[[packs.api.tools]]
name = "empty"
description = "No content."
scope = "api.read"
path = "/empty"

[[packs.api.tools]]
name = "redirect"
description = "Redirects."
scope = "api.read"
path = "/redirect"

[[packs.api.tools]]
name = "flaky"
description = "429 once."
scope = "api.read"
path = "/flaky"
"""


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("QZ_HTTP_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
async def api(qaqnuz_kernel, upstream, token):
    kernel = await qaqnuz_kernel(config(api_pack(upstream.url), TOOLS), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read", "api.write"], name="test")
    return kernel, key


def data(result):
    assert not result.is_error, result.structured_content
    return result.structured_content["data"]


def error(result):
    assert result.is_error
    return result.structured_content["error_class"], result.structured_content["sanitized_error"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_templating_path_query_headers_and_auth(api, upstream, qaqnuz_client, mode):
    kernel, key = api
    async with qaqnuz_client(kernel, key, mode=mode) as client:
        result = await client.call_tool("get_user", {"id": "42", "q": "a b&c=d", "trace": "t1"})
        without_q = await client.call_tool("get_user", {"id": "7"})
    echoed = data(result)
    assert echoed["path"] == "/v1/users/42/profile"
    assert echoed["query"] == [["tenant", "acme co/1"], ["q", "a b&c=d"], ["fields", "name,email"], ["limit", "5"]]
    seen = upstream.requests[0]["headers"]
    assert seen["authorization"] == f"Bearer {TOKEN}"
    assert seen["x-static"] == "static-value"
    assert seen["x-tenant"] == "acme co/1"
    assert seen["x-trace"] == "trace-t1"
    assert "x-trace" not in upstream.requests[1]["headers"]  # left out with its optional argument
    assert ["q", ""] not in data(without_q)["query"]  # an optional argument left out leaves its query value out
    assert [k for k, _ in data(without_q)["query"]] == ["tenant", "fields", "limit"]
    assert key not in upstream.everything()  # checklist 16: the caller's key never goes downstream


async def test_json_body_gets_typed_values_and_drops_absent_optionals(api, upstream, qaqnuz_client):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        full = data(await client.call_tool("create_item", {"name": "widget", "count": 3, "note": "n"}))
        partial = data(await client.call_tool("create_item", {"name": "gadget", "count": 0}))
    assert full["method"] == "POST"
    assert full["path"] == "/v1/tenants/acme%20co%2F1/items"  # a variable in the path is one encoded segment
    assert json.loads(full["body"]) == {
        "name": "widget",
        "count": 3,
        "urgent": False,
        "label": "item widget x3",
        "note": "n",
        "tags": ["widget", "fixed", "n"],
        "meta": {"tenant": "acme co/1", "version": 2},
    }
    assert json.loads(partial["body"]) == {
        "name": "gadget",
        "count": 0,
        "urgent": False,
        "label": "item gadget x0",
        "tags": ["gadget", "fixed"],
        "meta": {"tenant": "acme co/1", "version": 2},
    }
    assert upstream.requests[0]["headers"]["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("hostile", "encoded"),
    [
        ("../admin", "..%2Fadmin"),
        ("a/b?c=d#e", "a%2Fb%3Fc%3Dd%23e"),
        ("with space", "with%20space"),
        ("zürich-東京", "z%C3%BCrich-%E6%9D%B1%E4%BA%AC"),
        ("%2e%2e", "%252e%252e"),
        ("a\r\nX-Injected: 1", "a%0D%0AX-Injected%3A%201"),
    ],
)
async def test_hostile_values_land_encoded_in_the_path(api, upstream, qaqnuz_client, hostile, encoded):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("get_user", {"id": hostile, "q": hostile})
    assert not result.is_error
    request = upstream.requests[0]
    assert request["target"].split("?")[0] == f"/v1/users/{encoded}/profile"
    assert ("q", hostile) in request["query"]  # query values round-trip exactly (httpx encodes them)
    assert "x-injected" not in request["headers"]


@pytest.mark.parametrize("segment", [".", "..", ""])
async def test_dot_segments_and_empty_path_values_are_refused(api, upstream, qaqnuz_client, segment):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("get_user", {"id": segment})
    assert error(result)[0] == "terminal"
    assert upstream.requests == []


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "nul\x00", "zürich"])
async def test_header_injection_and_non_ascii_are_refused(qaqnuz_kernel, qaqnuz_client, upstream, value):
    pack = echo_pack(upstream.url).replace('path = "/echo"', 'path = "/echo"\nheaders = { X-Q = "{{ q }}" }')
    kernel = await qaqnuz_kernel(config(pack, ["echo"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("echo", {"q": value})
    assert error(result) == ("terminal", qaqnuz_pack_http.client.BAD_HEADER_ARGUMENT)
    assert upstream.requests == []


async def test_timeout_500_and_503_are_dependency_404_is_terminal_without_details(api, upstream, qaqnuz_client):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        started = time.monotonic()
        slow = await client.call_tool("slow", {})
        elapsed = time.monotonic() - started
        five = await client.call_tool("status", {"code": 500})
        busy = await client.call_tool("status", {"code": 503})
        missing = await client.call_tool("status", {"code": 404})
        forbidden = await client.call_tool("status", {"code": 403})
    assert error(slow)[0] == "dependency" and elapsed < 1.4  # the pack's 500ms read timeout, not the server's 1.5s
    assert error(five)[0] == "dependency"
    assert error(busy)[0] == "dependency"
    assert error(missing) == ("terminal", "The upstream service rejected the request (HTTP 404).")
    assert error(forbidden) == ("terminal", "The upstream service rejected the request (HTTP 403).")
    for result in (five, busy, missing, forbidden):
        text = result.content[0].text + json.dumps(result.structured_content)
        assert SECRET_BODY not in text and "127.0.0.1" not in text and "/v1/" not in text
    assert upstream.counters["/v1/status/503"] == 2  # GET is retried once on 503, then given up


async def test_connection_refused_is_dependency(qaqnuz_kernel, qaqnuz_client, closed_port):
    kernel = await qaqnuz_kernel(
        config(echo_pack(f"http://127.0.0.1:{closed_port}"), ["echo"]), plugins=[qaqnuz_pack_http]
    )
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("echo", {"q": "x"})
    assert error(result)[0] == "dependency"


async def test_tls_failure_is_dependency(qaqnuz_kernel, qaqnuz_client, upstream):
    """https:// to a plain-HTTP server: the TLS handshake fails, nothing is answered, the call is dependency."""
    base = upstream.url.replace("http://", "https://")
    kernel = await qaqnuz_kernel(config(echo_pack(base), ["echo"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("echo", {"q": "x"})
    assert error(result)[0] == "dependency"
    assert upstream.requests == []  # the handshake bytes never made a request


async def test_retry_after_is_honoured_and_bounded(qaqnuz_kernel, qaqnuz_client, upstream):
    pack = echo_pack(upstream.url).replace('path = "/echo"', 'path = "/flaky"')
    pack += (
        pack.split("[[packs.api.tools]]")[1]
        .join(["[[packs.api.tools]]", ""])
        .replace('name = "echo"', 'name = "busy"')
        .replace('path = "/flaky"', 'path = "/busy"')
    )
    kernel = await qaqnuz_kernel(config(pack, ["echo", "busy"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        started = time.monotonic()
        flaky = await client.call_tool("echo", {"q": "x"})
        waited = time.monotonic() - started
        started = time.monotonic()
        busy = await client.call_tool("busy", {"q": "x"})
        gave_up = time.monotonic() - started
    assert data(flaky) == {"attempt": 2} and waited >= 0.9  # 429 + Retry-After: 1, then success
    assert error(busy)[0] == "dependency" and gave_up < 1.0  # Retry-After: 120 > max_retry_wait: no waiting
    assert upstream.counters["/busy"] == 1


async def test_oversized_responses_are_cut_at_the_cap(api, upstream, qaqnuz_client):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        huge = await client.call_tool("huge", {})
        declared = await client.call_tool("declared_huge", {})
    assert error(huge) == ("terminal", OVERSIZED)
    assert error(declared) == ("terminal", OVERSIZED)
    assert upstream.huge_sent < 32 * 1024 * 1024  # the server was stopped long before its 64 MiB


async def test_the_reader_never_holds_more_than_the_cap():
    """Unit level: an endless body is abandoned after cap/chunk + 1 chunks."""
    pulled = 0

    class Endless:
        headers: dict = {}

        async def aiter_bytes(self):
            nonlocal pulled
            while True:
                pulled += 1
                yield b"x" * 1000

    upstream = Upstream("https://api.example.com", max_response_bytes=10_000)
    with pytest.raises(Exception) as caught:
        await upstream._read(Endless())
    assert type(caught.value).__name__ == "_Oversized"
    assert pulled == 11


async def test_text_empty_and_redirect(api, upstream, qaqnuz_client):
    kernel, key = api
    async with qaqnuz_client(kernel, key) as client:
        text = await client.call_tool("text", {})
        empty = await client.call_tool("empty", {})
        redirect = await client.call_tool("redirect", {})
    assert data(text) == {"text": "plain text, ünïcode"}
    assert data(empty) is None
    assert error(redirect) == (
        "terminal",
        "The upstream service answered with a redirect (HTTP 302), which this tool does not follow.",
    )
    assert [r["path"] for r in upstream.requests] == ["/v1/text", "/v1/empty", "/v1/redirect"]  # not followed


@pytest.mark.parametrize(
    ("auth", "env", "header", "expected"),
    [
        ('auth = { type = "bearer", token = { env = "QZ_A" } }', "bearer-secret-1", "authorization", "Bearer {}"),
        (
            'auth = { type = "header", header = "X-Api-Key", value = { env = "QZ_A" } }',
            "header-secret-2",
            "x-api-key",
            "{}",
        ),
        (
            'auth = { type = "basic", username = "svc", password = { env = "QZ_A" } }',
            "basic-secret-3",
            "authorization",
            None,
        ),
    ],
)
async def test_auth_from_env_reaches_the_server_and_the_caller_key_never_does(
    qaqnuz_kernel, qaqnuz_client, upstream, monkeypatch, auth, env, header, expected
):
    monkeypatch.setenv("QZ_A", env)
    kernel = await qaqnuz_kernel(config(echo_pack(upstream.url, auth), ["echo"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("echo", {"q": "hello"})
    assert not result.is_error
    seen = upstream.requests[0]["headers"][header]
    if expected is None:
        assert seen == "Basic " + base64.b64encode(f"svc:{env}".encode()).decode()
    else:
        assert seen == expected.format(env)
    assert key not in upstream.everything()
    assert env not in json.dumps(result.structured_content)


async def test_secret_from_a_file(qaqnuz_kernel, qaqnuz_client, upstream, tmp_path):
    (tmp_path / "api.token").write_text("file-secret-4\n")
    auth = 'auth = { type = "bearer", token = { file = "api.token" } }'
    kernel = await qaqnuz_kernel(config(echo_pack(upstream.url, auth), ["echo"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        await client.call_tool("echo", {"q": "x"})
    assert upstream.requests[0]["headers"]["authorization"] == "Bearer file-secret-4"


async def test_one_client_per_pack_closed_by_aclose(qaqnuz_kernel, qaqnuz_client, upstream):
    kernel = await qaqnuz_kernel(config(echo_pack(upstream.url), ["echo"]), plugins=[qaqnuz_pack_http])
    pack = kernel.runtime.packs["api"]
    assert pack.upstream._client is None  # created lazily
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        await client.call_tool("echo", {"q": "1"})
        first = pack.upstream._client
        await client.call_tool("echo", {"q": "2"})
    assert first is not None and pack.upstream._client is first
    await pack.aclose()
    assert pack.upstream._client is None and first.is_closed
