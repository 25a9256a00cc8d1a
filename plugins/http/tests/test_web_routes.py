"""Web routes from plugins (`qaqnuz_web_routes`), mounted beside /mcp: only those `[plugins] routes` names,
each with its own authentication. An MCP key never reaches a route unless it asks for one (`mcp_key`); then
the transport authenticates it and hands the route the principal, never the key."""

from __future__ import annotations

import httpx
import pytest

from kit import kit_config
from qaqnuz import UsageError

ROUTES = '[plugins]\nroutes = ["fakeroute", "fakekeyed"]\n\n[plugins.fakeroute]\npassword = "swordfish"\n\n'
FAKE = ("fakehooks.plugin",)


def config(routes: str = ROUTES) -> str:
    return routes + kit_config()


def test_a_route_with_its_own_auth_never_sees_an_mcp_key(http_server):
    server = http_server(config(), extra_plugins=FAKE)
    key = server.mint()
    with httpx.Client(base_url=server.base) as client:
        own = client.get("/fake/hello", headers={"X-Route-Password": "swordfish"}).json()
        header = client.get("/fake/hello", headers={"Authorization": f"Bearer {key}"}).json()
        query = client.get(f"/fake/hello?token={key}&x=1").json()
        other = client.get("/fake", headers={"Authorization": "Bearer its-own-session-token"}).json()
    assert own["own_auth"] is True and own["path"] == "/fake/hello" and own["server"] == "qaqnuz-mcp"
    for seen in (header, query):
        assert seen["authorization"] is None and seen["principal"] is None
        assert key not in str(seen) and "qaqnuz.query_token" not in seen["scope_keys"]
    assert query["query"] == "x=1"
    assert other["authorization"] == "Bearer its-own-session-token"  # the route's own credentials pass


def test_a_route_that_takes_mcp_keys_gets_the_principal_and_never_the_key(http_server):
    server = http_server(config(), extra_plugins=FAKE)
    key = server.mint()
    key_id = server.call(server.kernel.store.list_keys())[0].key_id
    with httpx.Client(base_url=server.base) as client:
        refused = [client.get("/fake-keyed"), client.get("/fake-keyed", headers={"Authorization": "Bearer nope"})]
        allowed = client.get("/fake-keyed/x", headers={"Authorization": f"Bearer {key}"})
    assert [r.status_code for r in refused] == [401, 401]
    assert refused[0].content == refused[1].content
    assert allowed.status_code == 200
    seen = allowed.json()
    assert seen["principal"] == {"brand": "acme", "key_id": key_id}
    assert seen["authorization"] is None and key not in allowed.text


def test_routes_config_does_not_name_are_not_mounted(http_server):
    server = http_server(config('[plugins]\nroutes = ["fakekeyed"]\n\n'), extra_plugins=FAKE)
    with httpx.Client(base_url=server.base) as client:
        assert client.get("/fake/hello").status_code == 404
        assert client.get("/fake-keyed").status_code == 401


def test_an_unknown_route_name_is_a_located_config_error(http_server):
    with pytest.raises(Exception) as caught:
        http_server(config('[plugins]\nroutes = ["console"]\n\n'), extra_plugins=FAKE)
    assert "[plugins] routes: unknown web route 'console'; valid names: fakekeyed, fakeroute" in str(caught.value)


def test_a_route_on_a_transport_path_is_refused():
    from qaqnuz import MountedRoute
    from qaqnuz_http.app import build_app
    from qaqnuz_http.settings import HttpSettings, check

    class Host:
        server_name, version, loopback_only, metrics_registry = "t", "0", False, None

        def on_change(self, listener):
            return lambda: None

        def web_routes(self):
            return [MountedRoute("bad", "/mcp/admin", object())]

    with pytest.raises(UsageError, match=r"route 'bad' wants /mcp/admin, which the HTTP transport serves itself"):
        build_app(Host(), HttpSettings(), check(HttpSettings()))  # type: ignore[arg-type]


def test_a_route_gets_the_same_body_limit_as_the_mcp_endpoints(http_server):
    server = http_server(config(), extra_plugins=FAKE, max_body_bytes=2048)
    with httpx.Client(base_url=server.base) as client:
        small = client.post("/fake/form", content=b"x" * 1000, headers={"X-Route-Password": "swordfish"})
        big = client.post("/fake/form", content=b"x" * 5000)
        chunked = client.post("/fake/form", content=iter([b"x" * 1500, b"x" * 1500]))
    assert small.status_code == 200 and small.json()["own_auth"] is True
    assert (big.status_code, big.text) == (413, "Request body too large")
    assert chunked.status_code == 413
