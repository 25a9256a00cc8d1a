"""Two brands on one HTTP pack, against a local server that checks credentials: per-brand settings give each
brand its own token, `{{ brand }}` and `{{ key_id }}` carry the verified caller into paths, queries, headers
and bodies. No key of one brand ever reads the other's rows, also as a property over keys, tools and
arguments through the real governed path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qaqnuz_pack_http
from qaqnuz import ConfigError
from qaqnuz.testing import start_kernel, write_config

BRANDS = ("northwind", "southwind")
TICKETS = {
    "northwind": [{"id": 1, "tenant": "northwind", "subject": "Printer on fire"}],
    "southwind": [{"id": 11, "tenant": "southwind", "subject": "Password reset"}],
}
#: token -> the tenant it may read ("*": a directory token that may read any tenant named in the path).
TOKENS = {"nw-helpdesk-token-1234": "northwind", "sw-helpdesk-token-5678": "southwind", "directory-token-9": "*"}


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        split = urlsplit(self.path)
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        allowed = TOKENS.get(token)
        seen = {"path": split.path, "query": dict(parse_qsl(split.query)), "token": token, "body": body,
                "key_header": self.headers.get("X-Caller-Key")}  # fmt: skip
        with self.server.lock:
            self.server.seen.append(seen)
        parts = split.path.strip("/").split("/")
        if allowed is None:
            return self._send(401, {"error": "bad token"})
        if parts == ["tickets"]:  # the token's own tenant
            if allowed == "*":
                return self._send(403, {"error": "a directory token has no tenant"})
            return self._send(200, TICKETS[allowed])
        if len(parts) == 3 and parts[0] == "tenants" and parts[2] == "tickets":
            tenant = parts[1]
            if allowed not in ("*", tenant):
                return self._send(403, {"error": "not your tenant"})
            return self._send(200, TICKETS.get(tenant, []))
        if parts == ["echo"]:
            return self._send(200, {"query": seen["query"], "body": body, "key_header": seen["key_header"]})
        return self._send(404, {"error": "no such path"})

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


BRAND_TABLE = """\
[brands.{brand}]
plan = "growth"
roles = {{ agent = ["tickets.read"] }}
tools.my_tickets = {{ exposable = true }}
tools.tenant_tickets = {{ exposable = true }}
tools.directory_tickets = {{ exposable = true }}
tools.echo_caller = {{ exposable = true }}
"""

PACKS = """
[packs.helpdesk]
type = "http"
base_url = "{url}"
allow_private = true
brands = ["northwind", "southwind"]
auth = {{ type = "bearer", token = {{ env = "NW_HELPDESK_TOKEN" }} }}

[brands.southwind.packs.helpdesk]
auth = {{ type = "bearer", token = {{ env = "SW_HELPDESK_TOKEN" }} }}

[[packs.helpdesk.tools]]
name = "my_tickets"
description = "The tickets of the caller's brand (its own helpdesk token decides)."
scope = "tickets.read"
path = "/tickets"

[[packs.helpdesk.tools]]
name = "tenant_tickets"
description = "The tickets under the caller's tenant path."
scope = "tickets.read"
path = "/tenants/{{{{ brand }}}}/tickets"

[packs.directory]
type = "http"
base_url = "{url}"
allow_private = true
auth = {{ type = "bearer", token = {{ env = "DIRECTORY_TOKEN" }} }}

[[packs.directory.tools]]
name = "directory_tickets"
description = "Tickets through one shared token; the brand comes only from the verified caller."
scope = "tickets.read"
path = "/tenants/{{{{ brand }}}}/tickets"

[[packs.directory.tools]]
name = "echo_caller"
description = "Echo the caller as the upstream sees it."
scope = "tickets.read"
method = "POST"
path = "/echo"
query = {{ brand = "{{{{ brand }}}}", note = "{{{{ note }}}}" }}
headers = {{ X-Caller-Key = "{{{{ key_id }}}}" }}
body = {{ brand = "{{{{ brand }}}}", key_name = "{{{{ key_name }}}}", role = "{{{{ role }}}}", \
note = "{{{{ note }}}}" }}
input = {{ note = {{ type = "string", required = false, max_length = 40 }} }}
"""


def config(url: str) -> str:
    brands = "\n".join(BRAND_TABLE.format(brand=b) for b in (*BRANDS, "initech"))
    return brands + PACKS.format(url=url)


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NW_HELPDESK_TOKEN", "nw-helpdesk-token-1234")
    monkeypatch.setenv("SW_HELPDESK_TOKEN", "sw-helpdesk-token-5678")
    monkeypatch.setenv("DIRECTORY_TOKEN", "directory-token-9")


async def keys_for(kernel: Any, brands: tuple[str, ...] = (*BRANDS, "initech")) -> list[Any]:
    principals = []
    for brand in brands:
        for i in range(2):
            raw, _ = await kernel.keys.mint(brand=brand, role="agent", scopes=["tickets.read"], name=f"{brand}-{i}")
            principals.append(await kernel.authenticate(raw))
    return principals


def tenants(data: Any) -> set[str]:
    return {row["tenant"] for row in data} if isinstance(data, list) else set()


@pytest.mark.anyio
@pytest.mark.usefixtures("tokens")
async def test_each_brand_uses_its_own_token_and_reads_only_its_tickets(tmp_path: Path, upstream: Upstream) -> None:
    kernel = await start_kernel(write_config(tmp_path, config(upstream.url)), plugins=[qaqnuz_pack_http])
    try:
        for principal in await keys_for(kernel, BRANDS):
            for tool in ("my_tickets", "tenant_tickets", "directory_tickets"):
                with upstream.lock:
                    upstream.seen.clear()
                outcome = await kernel.host.call_tool(principal, tool, {}, transport="test")
                assert not outcome.is_error, (tool, outcome.result)
                assert tenants(outcome.result.data) == {principal.brand}
                [request] = upstream.seen
                expected = {"northwind": "nw-helpdesk-token-1234", "southwind": "sw-helpdesk-token-5678"}
                assert request["token"] == (
                    "directory-token-9" if tool == "directory_tickets" else expected[principal.brand]
                )
    finally:
        await kernel.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("tokens")
async def test_the_caller_reaches_paths_queries_headers_and_bodies(tmp_path: Path, upstream: Upstream) -> None:
    kernel = await start_kernel(write_config(tmp_path, config(upstream.url)), plugins=[qaqnuz_pack_http])
    try:
        [principal, _] = await keys_for(kernel, ("southwind",))
        outcome = await kernel.host.call_tool(principal, "echo_caller", {"note": "hi"}, transport="test")
        assert outcome.result.data == {
            "query": {"brand": "southwind", "note": "hi"},
            "body": {"brand": "southwind", "key_name": "southwind-0", "role": "agent", "note": "hi"},
            "key_header": principal.key_id,
        }
        smuggled = await kernel.host.call_tool(principal, "echo_caller", {"brand": "northwind"}, transport="test")
        assert smuggled.result.error_class == "validation"
    finally:
        await kernel.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("tokens")
async def test_a_brand_outside_the_packs_brands_sees_and_calls_none_of_its_tools(
    tmp_path: Path, upstream: Upstream
) -> None:
    kernel = await start_kernel(write_config(tmp_path, config(upstream.url)), plugins=[qaqnuz_pack_http])
    try:
        [principal, _] = await keys_for(kernel, ("initech",))
        assert kernel.host.list_tools(principal).names == {"directory_tickets", "echo_caller"}
        hidden = await kernel.host.call_tool(principal, "my_tickets", {}, transport="test")
        unknown = await kernel.host.call_tool(principal, "nope", {}, transport="test")
        assert hidden.result == unknown.result
    finally:
        await kernel.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ('base_path = "/v2"', "[brands.southwind.packs.helpdesk] base_path: unknown key; valid keys: allow_private,"),
        (
            'auth = { type = "bearer", token = "sw-inline" }',
            "[brands.southwind.packs.helpdesk.auth] token: a secret is given by reference, never written into config",
        ),
        ('variables = { brand = "northwind" }', "[brands.southwind.packs.helpdesk] variables.brand: 'brand' is filled"),
    ],
    ids=["unknown setting", "inline secret", "variable named like the caller"],
)
@pytest.mark.usefixtures("tokens")
async def test_bad_per_brand_settings_are_located(
    tmp_path: Path, upstream: Upstream, override: str, expected: str
) -> None:
    text = config(upstream.url).replace(
        '[brands.southwind.packs.helpdesk]\nauth = { type = "bearer", token = { env = "SW_HELPDESK_TOKEN" } }',
        f"[brands.southwind.packs.helpdesk]\n{override}",
    )
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, text), plugins=[qaqnuz_pack_http])
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


# -- the property ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[tuple[Any, Any, list[Any]]]:
    folder = tmp_path_factory.mktemp("http-tenancy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NW_HELPDESK_TOKEN", "nw-helpdesk-token-1234")
        patch.setenv("SW_HELPDESK_TOKEN", "sw-helpdesk-token-5678")
        patch.setenv("DIRECTORY_TOKEN", "directory-token-9")
        with anyio.from_thread.start_blocking_portal() as portal:
            kernel = portal.call(
                lambda: start_kernel(write_config(folder, config(upstream.url)), plugins=[qaqnuz_pack_http])
            )
            principals = portal.call(keys_for, kernel)
            try:
                yield portal, kernel, principals
            finally:
                portal.call(kernel.aclose)


ARGUMENTS = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"note": st.text(max_size=10)}),
    st.fixed_dictionaries({"brand": st.sampled_from(BRANDS)}),
    st.fixed_dictionaries({"key_id": st.just("someone-else")}),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(min_value=0, max_value=5),
    tool=st.sampled_from(["my_tickets", "tenant_tickets", "directory_tickets", "echo_caller"]),
    arguments=ARGUMENTS,
)
def test_no_key_ever_reads_another_brands_tickets(
    served: tuple[Any, Any, list[Any]], index: int, tool: str, arguments: dict[str, Any]
) -> None:
    portal, kernel, principals = served
    principal = principals[index]
    outcome = portal.call(lambda: kernel.host.call_tool(principal, tool, arguments, transport="property"))
    accepted = {"note"} if tool == "echo_caller" else set()
    if principal.brand == "initech" and tool in ("my_tickets", "tenant_tickets"):
        assert outcome.result.error_class == "permission"  # the pack serves two brands only
        return
    if set(arguments) - accepted:
        assert outcome.result.error_class == "validation"  # `brand` or `key_id` can never be sent
        return
    assert not outcome.is_error, outcome.result
    data = outcome.result.data
    if tool == "echo_caller":
        assert data["query"]["brand"] == data["body"]["brand"] == principal.brand
        assert data["key_header"] == principal.key_id
    else:
        assert tenants(data) <= {principal.brand}
        assert data or principal.brand == "initech"


ACCOUNTS = """
[brands.northwind]
plan = "growth"
roles = {{ agent = ["tickets.read"] }}
tools.account_echo = {{ exposable = true }}

[brands.southwind]
plan = "growth"
roles = {{ agent = ["tickets.read"] }}
tools.account_echo = {{ exposable = true }}

[packs.accounts]
type = "http"
base_url = "{url}"
allow_private = true
auth = {{ type = "bearer", token = {{ env = "DIRECTORY_TOKEN" }} }}
variables = {{ account = "nw-account" }}

[brands.southwind.packs.accounts]
variables = {{ account = "sw-account" }}

[[packs.accounts.tools]]
name = "account_echo"
description = "Echo the account the brand's variables name."
scope = "tickets.read"
method = "POST"
path = "/echo"
query = {{ account = "{{{{ account }}}}" }}
input_schema = {{ type = "object", properties = {{ note = {{ type = "string" }} }} }}
"""


@pytest.mark.anyio
@pytest.mark.usefixtures("tokens")
async def test_an_undeclared_argument_never_overrides_a_brands_variables(tmp_path: Path, upstream: Upstream) -> None:
    kernel = await start_kernel(write_config(tmp_path, ACCOUNTS.format(url=upstream.url)), plugins=[qaqnuz_pack_http])
    try:
        for brand, account in (("northwind", "nw-account"), ("southwind", "sw-account")):
            raw, _ = await kernel.keys.mint(brand=brand, role="agent", scopes=["tickets.read"], name=brand)
            principal = await kernel.authenticate(raw)
            other = "sw-account" if brand == "northwind" else "nw-account"
            # the schema is open to other properties, so validation lets `account` through; the template must not
            smuggled = await kernel.host.call_tool(principal, "account_echo", {"account": other}, transport="t")
            assert smuggled.result.data["query"] == {"account": account}
    finally:
        await kernel.aclose()
