"""Raw HTTP against a real server: identical 401s, 400 for two credentials, session binding, DNS rebinding,
body limits, no-store headers, health, readiness and metrics."""

from __future__ import annotations

import time

import httpx2
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from qaqnuz import ConfigError, UsageError
from qaqnuz.keys import new_key

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def server(http_server):
    return http_server()


def post(url: str, headers: dict | None = None, json: dict | None = None, **kw) -> httpx2.Response:
    return httpx2.post(url, headers={**ACCEPT, **(headers or {})}, json=INIT if json is None else json, **kw)


def comparable(response: httpx2.Response) -> tuple:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in ("date", "server", "x-request-id"))
    return response.status_code, response.content, headers


def test_every_auth_failure_is_the_same_401(server):
    kernel = server.kernel
    revoked = server.mint("revoked")
    server.call(kernel.store.revoke_key(server.call(kernel.store.list_keys())[0].key_id, kernel.clock()))
    expired = server.mint("expired", expires_in=0.2)
    valid = server.mint("valid")
    unknown = new_key("qx_live_").raw
    bad_checksum = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    time.sleep(0.3)
    cases = {
        "missing": {},
        "unknown": {"Authorization": f"Bearer {unknown}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "bad checksum": {"Authorization": f"Bearer {bad_checksum}"},
        "lower-case scheme, bad key": {"Authorization": f"bearer {unknown}"},
        "other scheme": {"Authorization": f"Basic {valid}"},
        "bare scheme": {"Authorization": "Bearer"},
    }
    responses = {name: post(server.url, headers) for name, headers in cases.items()}
    responses["bad ?token="] = post(f"{server.url}?token={unknown}")
    responses["legacy sse"] = httpx2.get(f"{server.base}/sse", headers={"Authorization": f"Bearer {unknown}"})
    responses["legacy messages"] = post(f"{server.base}/messages/?session_id=00", {"Authorization": "Bearer x"})
    reference = comparable(responses["missing"])
    assert reference[0] == 401
    assert responses["missing"].headers["www-authenticate"].startswith('Bearer realm="qaqnuz"')
    assert responses["missing"].json()["error"] == "invalid_token"
    for name, response in responses.items():
        assert comparable(response) == reference, name
    families = {f.name: f for f in text_string_to_metric_families(httpx2.get(f"{server.base}/metrics").text)}
    failures = [s for s in families["qaqnuz_auth_failures"].samples if s.name == "qaqnuz_auth_failures_total"]
    assert failures[0].labels == {"transport": "http"} and failures[0].value >= len(responses)


def test_lower_case_scheme_with_a_good_key_is_accepted(server):
    key = server.mint()
    response = post(server.url, {"Authorization": f"bEaReR {key}"})
    assert response.status_code == 200
    assert response.headers["mcp-session-id"]
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["referrer-policy"] == "no-referrer"


def test_header_and_query_token_together_is_400(server):
    key = server.mint()
    response = post(f"{server.url}?token={key}", {"Authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert key not in response.text


def test_query_token_can_be_switched_off(http_server):
    server = http_server(query_token=False)
    key = server.mint()
    assert post(f"{server.url}?token={key}").status_code == 401
    assert post(server.url, {"Authorization": f"Bearer {key}"}).status_code == 200


def test_a_session_is_bound_to_the_key_that_opened_it(server):
    alice, bob = server.mint("alice"), server.mint("bob")
    opened = post(server.url, {"Authorization": f"Bearer {alice}"})
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post(server.url, {**headers, "Authorization": f"Bearer {alice}"}, initialized).status_code == 202
    assert post(server.url, {**headers, "Authorization": f"Bearer {bob}"}, listing).status_code == 404
    assert post(server.url, headers, listing).status_code == 401  # a session id never authenticates
    assert post(server.url, {**headers, "Authorization": f"Bearer {alice}"}, listing).status_code == 200


def test_dns_rebinding_is_refused(server):
    key = server.mint()
    auth = {"Authorization": f"Bearer {key}"}
    port = server.transport.port
    assert post(server.url, {**auth, "Host": "evil.example.com"}).status_code == 421
    assert post(server.url, {**auth, "Host": f"localhost:{port}.evil.example.com"}).status_code == 421
    assert post(server.url, {**auth, "Origin": "http://evil.example.com"}).status_code == 403
    assert post(server.url, {**auth, "Origin": f"http://localhost:{port}.evil.example.com"}).status_code == 403
    assert httpx2.get(f"{server.base}/sse", headers={**auth, "Host": "evil.example.com"}).status_code == 421
    assert httpx2.get(f"{server.base}/metrics", headers={"Origin": "http://evil.example.com"}).status_code == 403
    good = post(server.url, {**auth, "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
    assert good.status_code == 200


def test_oversized_bodies_get_413(server):
    key = server.mint()
    body = b'{"x":"' + b"a" * (10 * 1024 * 1024) + b'"}'
    for url in (server.url, f"{server.base}/messages/?session_id=00"):
        for headers in ({"Authorization": f"Bearer {key}"}, {}):
            response = httpx2.post(url, content=body, headers={**ACCEPT, **headers})
            assert response.status_code == 413, (url, headers)


@pytest.mark.anyio
async def test_health_readiness_and_metrics(server):
    assert httpx2.get(f"{server.base}/healthz").json() == {"status": "ok"}
    ready = httpx2.get(f"{server.base}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": True, "limiter": True, "registry": True, "audit": True},
    }
    key = server.mint()
    async with Client(f"{server.url}?token={key}") as client:
        for _ in range(3):
            await client.call_tool("echo", {"message": "m"})
        await client.call_tool("boom", {})
    text = httpx2.get(f"{server.base}/metrics").text
    assert key not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = {
        (s.labels["tool"], s.labels["outcome"], s.labels["error_class"]): s.value
        for s in families["qaqnuz_tool_calls"].samples
        if s.name == "qaqnuz_tool_calls_total" and s.labels["brand"] == "acme"
    }
    assert calls[("echo", "executed", "")] == 3
    assert [v for (tool, _, error_class), v in calls.items() if tool == "boom" and error_class == "terminal"] == [1]


def test_settings_are_checked(http_server, tmp_path):
    from qaqnuz_http import HttpSettings, qaqnuz_transports
    from qaqnuz_http.settings import check

    assert qaqnuz_transports()[0].name == "http"
    with pytest.raises(ConfigError, match="query_token: must be false when host is not a loopback"):
        check(HttpSettings(host="0.0.0.0"))
    check(HttpSettings(host="0.0.0.0", query_token=False))
    with pytest.raises(ConfigError, match="allowed_hosts"):
        check(HttpSettings(allowed_hosts=["*"]))
    server = http_server()
    with pytest.raises(UsageError, match="--bogus does not apply"):
        server.kernel.transport("http", {"bogus": 1})


def test_every_route_but_the_probes_checks_the_host_header(server):
    for path in ("/metrics", "/mcp", "/sse", "/messages/"):
        response = httpx2.get(f"{server.base}{path}", headers={"Host": "evil.example.com"})
        assert response.status_code == 421, path
    # An orchestrator probes the pod's own address: the probes answer any Host, and say only ok/ready.
    for host in ("10.1.2.3:8000", "evil.example.com"):
        assert httpx2.get(f"{server.base}/healthz", headers={"Host": host}).json() == {"status": "ok"}
        ready = httpx2.get(f"{server.base}/readyz", headers={"Host": host})
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert httpx2.post(f"{server.base}/healthz", headers={"Host": "evil.example.com"}).status_code == 421
    assert httpx2.get(f"{server.base}/healthz").status_code == 200


def test_no_slash_redirect_is_built_from_the_request_host(server):
    response = httpx2.post(
        f"{server.base}/messages?session_id=1", headers={"Host": f"localhost:{server.transport.port}"}, content=b"{}"
    )
    assert response.status_code == 404 and "location" not in response.headers


def test_access_log_lines_cannot_be_forged(server, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="qaqnuz.http.access"):
        httpx2.get(f"{server.base}/healthz%0A2026-01-01%20INFO%20qaqnuz.http.access:%20POST%20/mcp%20200")
    lines = [r.getMessage() for r in caplog.records if r.name == "qaqnuz.http.access"]
    assert lines and all("\n" not in line for line in lines)
    assert any(line.startswith("GET other 404 ") for line in lines)  # a route's name, never the path as sent
    assert not any("2026-01-01" in line for line in lines)


def test_repeated_bad_credentials_from_one_address_are_throttled_but_a_valid_key_from_it_is_served(server):
    # Measured before: after 30 failures from one address, a VALID key from it got 429 for 60 s, so one client
    # guessing behind a NAT or proxy locked out every other client there.
    valid = {"Authorization": f"Bearer {server.mint('behind-the-same-nat')}"}
    bad = {"Authorization": f"Bearer {new_key('qx_live_').raw}"}
    for _ in range(30):
        assert post(server.url, bad).status_code == 401
    throttled = post(server.url, bad)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert b"Too many failed authentications" in throttled.content
    served = post(server.url, valid)  # an initialize
    assert served.status_code == 200, served.text
    assert b"protocolVersion" in served.content
    assert post(server.url, bad).status_code == 429  # the valid key did not lift the block for the guesser
    counted = server.kernel.metrics.registry.get_sample_value("qaqnuz_auth_failures_total", {"transport": "http"})
    assert counted == 32  # every refusal is still an audited, counted authentication failure


def test_failure_limit_window_and_memory_bound():
    from qaqnuz_http.guard import FailureLimit

    now = [0.0]
    limit = FailureLimit(3, max_sources=2, clock=lambda: now[0])
    for _ in range(3):
        limit.failed("a")
    assert limit.blocked_for("a") == 60 and limit.blocked_for("b") == 0
    now[0] = 59.5
    assert limit.blocked_for("a") == 1
    now[0] = 60.0
    assert limit.blocked_for("a") == 0  # the first failure left the window
    limit.failed("b")
    limit.failed("c")  # a third address: the oldest entry is forgotten, memory stays bounded
    assert len(limit._failures) <= 2


def test_only_a_same_origin_referrer_policy_a_route_chose_is_kept() -> None:
    from qaqnuz_http.guard import secure_headers

    def policy(*headers: tuple[bytes, bytes]) -> bytes:
        return dict(secure_headers(list(headers)))[b"referrer-policy"]

    assert policy() == b"no-referrer"
    assert policy((b"referrer-policy", b"same-origin")) == b"same-origin"  # a page whose forms post to itself
    for weaker in (b"unsafe-url", b"origin", b"no-referrer-when-downgrade", b"strict-origin-when-cross-origin"):
        assert policy((b"Referrer-Policy", weaker)) == b"no-referrer"
    headers = secure_headers([(b"referrer-policy", b"same-origin"), (b"referrer-policy", b"unsafe-url")])
    assert [v for k, v in headers if k == b"referrer-policy"] == [b"no-referrer"]


@pytest.mark.parametrize("trusted", [False, True])
def test_behind_a_trusted_proxy_each_client_is_throttled_by_its_own_address(http_server, trusted):
    server = http_server(auth_failures_per_minute=3, **({"trusted_proxies": ["127.0.0.0/8"]} if trusted else {}))
    bad = {"Authorization": f"Bearer {new_key('qx_live_').raw}"}
    guesser = {**bad, "X-Forwarded-For": "198.51.100.7, 203.0.113.9"}  # the proxy saw 203.0.113.9
    for _ in range(3):
        assert post(server.url, guesser).status_code == 401
    assert post(server.url, guesser).status_code == 429
    # Another client behind the same proxy: its own address when the proxy is trusted; otherwise every
    # request is the proxy's, and the header (anyone can send it) is believed about nothing.
    other = post(server.url, {**bad, "X-Forwarded-For": "203.0.113.10"})
    assert other.status_code == (401 if trusted else 429)
    spoofed = post(server.url, {**bad, "X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
    assert spoofed.status_code == 429  # a trusted hop in the chain does not hide the client behind it


def test_trusted_proxies_must_be_addresses_or_networks():
    from qaqnuz_http.settings import HttpSettings, check

    with pytest.raises(ConfigError, match=r"trusted_proxies: 'proxy\.local' is not an IP address"):
        check(HttpSettings(trusted_proxies=["10.0.0.0/8", "proxy.local"]))


def test_metrics_can_require_a_bearer_token_and_a_source_network(http_server, monkeypatch, caplog):
    import logging

    token = "metrics-scrape-token-5b1f0c9e"
    monkeypatch.setenv("QAQNUZ_TEST_METRICS_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    server = http_server(metrics_auth={"token": {"env": "QAQNUZ_TEST_METRICS_TOKEN"}, "allow": ["127.0.0.1/32"]})
    metrics = f"{server.base}/metrics"
    missing = httpx2.get(metrics)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert httpx2.get(metrics, headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = httpx2.get(metrics, headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200 and "qaqnuz_tool_calls_total" in scraped.text
    assert httpx2.get(f"{server.base}/healthz").status_code == 200  # the probes stay open
    assert token not in "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("qaqnuz"))


def test_metrics_from_a_network_not_allowed_are_forbidden(http_server):
    closed = http_server(metrics_auth={"allow": ["10.0.0.0/8"]})
    assert httpx2.get(f"{closed.base}/metrics").status_code == 403
    # Behind a trusted proxy, the scraper's own address decides.
    proxied = http_server(metrics_auth={"allow": ["10.0.0.0/8"]}, trusted_proxies=["127.0.0.1"])
    assert httpx2.get(f"{proxied.base}/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert httpx2.get(f"{proxied.base}/metrics", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 403


def test_metrics_auth_is_checked_when_loaded():
    from qaqnuz_http.settings import HttpSettings, MetricsAuth, check

    with pytest.raises(ConfigError, match="give a token, an allow list of networks, or both"):
        check(HttpSettings(metrics_auth=MetricsAuth()))
    with pytest.raises(ConfigError, match=r"metrics_auth\.allow: 'office' is not an IP address"):
        check(HttpSettings(metrics_auth=MetricsAuth(allow=["office"])))


def test_an_unset_metrics_token_stops_the_start_naming_where(http_server, monkeypatch):
    monkeypatch.delenv("QAQNUZ_TEST_METRICS_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"metrics_auth\.token: environment variable QAQNUZ_TEST_METRICS_UNSET"):
        http_server(metrics_auth={"token": {"env": "QAQNUZ_TEST_METRICS_UNSET"}})
