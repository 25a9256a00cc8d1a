"""The console's sign-in and request checks, over real HTTP against a real server: sessions, CSRF, Origin,
throttling, roles and brands, MCP keys refused as console credentials, and nothing secret in the logs."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import httpx
import pytest
from conftest import PASSWORD, Server, console_config

from qaqnuz_console.sessions import PRE_COOKIE, SESSION_COOKIE


def client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base, follow_redirects=False, timeout=10)


def login_form(http: httpx.Client) -> str:
    page = http.get("/console/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def sign_in(http: httpx.Client, server: Server, name: str, password: str = PASSWORD) -> httpx.Response:
    csrf = login_form(http)
    return http.post("/console/login", data={"name": name, "password": password, "csrf": csrf},
                     headers={"origin": server.base})  # fmt: skip


def csrf_of(http: httpx.Client) -> str:
    me = http.get("/console/api/me")
    assert me.status_code == 200, me.text
    return str(me.json()["csrf_token"])


def key_form(brand: str, name: str) -> dict[str, Any]:
    return {"brand": brand, "name": name, "role": "viewer", "scopes": ["orders.read"]}


def keys_of(server: Server, brand: str = "acme") -> list[Any]:
    return list(server.run(server.kernel.keys.list(brand)))


def test_without_a_session_pages_go_to_sign_in_and_the_api_answers_401(console_server: Any) -> None:
    server = console_server()
    with client(server) as http:
        for path in ("/console/keys", "/console/approvals", "/console/calls", "/console/tools", "/console/status",
                     "/console/connect"):  # fmt: skip
            page = http.get(path)
            assert page.status_code == 303, path
            assert page.headers["location"].startswith("/console/login?next=")
        assert http.get("/console").headers["location"] == "/console/keys"
        for path in ("/console/api/me", "/console/api/keys", "/console/api/calls", "/console/api/status"):
            answer = http.get(path)
            assert answer.status_code == 401 and "sign in" in answer.json()["error"]
        posted = http.post("/console/api/keys", json={"brand": "acme"})
        assert posted.status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie_and_pages_carry_a_csp(console_server: Any) -> None:
    server = console_server()
    server.add_user("alice", "admin")
    with client(server) as http:
        done = sign_in(http, server, "alice")
        assert done.status_code == 303 and done.headers["location"] == "/console/keys"
        cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # loopback over plain HTTP
        page = http.get("/console/keys")
        assert page.status_code == 200 and "Keys of acme" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "same-origin"
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script"
        assert page.headers["cache-control"] == "no-store"


def test_cookies_are_secure_when_not_on_loopback(console_server: Any) -> None:
    server = console_server(console_config("secure_cookies = true"))
    server.add_user("alice", "admin")
    with client(server) as http:
        page = http.get("/console/login")
        assert "Secure" in page.headers["set-cookie"]


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(console_server: Any) -> None:
    server = console_server()
    server.add_user("alice", "admin")
    server.mint("laptop")
    key_id = keys_of(server)[0].key_id
    with client(server) as http:
        sign_in(http, server, "alice")
        token = csrf_of(http)
        form = {"brand": "acme", "name": "x", "role": "viewer", "scopes": "orders.read", "expires_in": "1d"}
        altered = token[:-2] + ("AB" if token[-2:] != "AB" else "BA")  # one that differs, whatever the token
        for csrf in (None, "", "wrong", altered):
            data = dict(form) if csrf is None else {**form, "csrf": csrf}
            assert http.post("/console/keys", data=data, headers={"origin": server.base}).status_code == 403
            assert http.post(f"/console/keys/{key_id}/revoke", data=data).status_code == 403
            headers = {} if csrf is None else {"x-csrf-token": csrf}
            assert http.post("/console/api/keys", json=form, headers=headers).status_code == 403
        assert [k.key_id for k in keys_of(server)] == [key_id] and keys_of(server)[0].revoked_at is None
        # From another origin, even with the right token: refused by the console too.
        other = http.post(
            "/console/api/keys", json=form, headers={"x-csrf-token": token, "origin": "http://127.0.0.1:1"}
        )
        assert other.status_code == 403
        # The right token from this origin works.
        made = http.post("/console/api/keys", json={**form, "scopes": ["orders.read"]}, headers={"x-csrf-token": token})
        assert made.status_code == 201, made.text
        assert len(keys_of(server)) == 2


def test_an_mcp_key_is_never_a_console_credential(console_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = console_server()
    server.add_user("alice", "admin")
    key = server.mint("laptop")
    caplog.set_level(logging.DEBUG)
    with client(server) as http:
        refused = sign_in(http, server, "alice", key)
        assert refused.status_code == 401 and f"{SESSION_COOKIE}=" not in refused.headers.get("set-cookie", "")
        for path in ("/console/api/me", "/console/api/keys"):
            assert http.get(path, headers={"authorization": f"Bearer {key}"}).status_code == 401
        assert http.get(f"/console/api/me?token={key}").status_code == 401
        assert http.get("/console/keys", headers={"authorization": f"Bearer {key}"}).status_code == 303
    assert key not in server_logs(caplog)


def server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (not the test's own HTTP client, which logs the headers it receives)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("qaqnuz", "uvicorn")))


def test_a_session_cookie_from_another_server_secret_is_refused(console_server: Any) -> None:
    first, second = console_server(), console_server()
    for server in (first, second):
        server.add_user("alice", "admin")
    with client(first) as http:
        sign_in(http, first, "alice")
        cookie = http.cookies.get(SESSION_COOKIE, path="/console")
        assert cookie and http.get("/console/api/me").status_code == 200
    with client(second) as other:
        other.cookies.set(SESSION_COOKIE, cookie, path="/console")
        assert other.get("/console/api/me").status_code == 401
        assert other.get("/console/keys").status_code == 303
    with client(first) as edited:  # one byte changed
        edited.cookies.set(SESSION_COOKIE, cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), path="/console")
        assert edited.get("/console/api/me").status_code == 401


def test_signing_out_ends_the_session_everywhere(console_server: Any) -> None:
    server = console_server()
    server.add_user("alice", "admin")
    with client(server) as http:
        sign_in(http, server, "alice")
        cookie = http.cookies.get(SESSION_COOKIE, path="/console")
        token = csrf_of(http)
        time.sleep(0.01)  # the sign-out time must be after the session's
        out = http.post("/console/logout", data={"csrf": token}, headers={"origin": server.base})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
    with client(server) as replay:
        replay.cookies.set(SESSION_COOKIE, str(cookie), path="/console")
        assert replay.get("/console/api/me").status_code == 401


def test_an_idle_session_ends(console_server: Any) -> None:
    server = console_server(console_config('session_idle = "1s"'))
    server.add_user("alice", "admin")
    with client(server) as http:
        sign_in(http, server, "alice")
        assert http.get("/console/api/me").status_code == 200
        time.sleep(1.5)
        assert http.get("/console/api/me").status_code == 401


def test_brute_force_is_throttled_without_locking_out_others(console_server: Any) -> None:
    server = console_server(console_config("login_attempts = 3\nsource_attempts = 50"))
    server.add_user("alice", "admin")
    server.add_user("bob", "auditor")
    with client(server) as http:
        for _ in range(3):
            assert sign_in(http, server, "alice", "not the password!").status_code == 401
        throttled = sign_in(http, server, "alice", "not the password!")
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in throttled.text
        # Even the right password waits (the guesser learns nothing), but only for this name from here...
        assert sign_in(http, server, "alice").status_code == 429
        # ...bob, from the same address, is not locked out.
        assert sign_in(http, server, "bob").status_code == 303


def test_the_source_limit_holds_a_guesser_who_tries_many_names(console_server: Any) -> None:
    server = console_server(console_config("login_attempts = 3\nsource_attempts = 4"))
    server.add_user("alice", "admin")
    with client(server) as http:
        for name in ("a1", "a2", "a3", "a4"):
            assert sign_in(http, server, name, "not the password!").status_code == 401
        assert sign_in(http, server, "alice").status_code == 429


def test_a_brand_admin_sees_and_changes_only_their_brand(console_server: Any) -> None:
    server = console_server()
    server.add_user("gina", "brand-admin", "globex")
    server.mint("acme-laptop", brand="acme")
    acme_key = keys_of(server, "acme")[0].key_id
    with client(server) as http:
        sign_in(http, server, "gina")
        token = csrf_of(http)
        assert http.get("/console/api/keys?brand=acme").status_code == 404
        assert http.get("/console/api/keys").json()["brand"] == "globex"
        assert "acme-laptop" not in http.get("/console/keys").text
        assert http.get("/console/keys?brand=acme").status_code == 404
        revoke = http.post(f"/console/api/keys/{acme_key}/revoke", headers={"x-csrf-token": token})
        assert revoke.status_code == 404
        made = http.post("/console/api/keys", headers={"x-csrf-token": token}, json=key_form("acme", "sneaky"))
        assert made.status_code == 404
        assert keys_of(server, "acme")[0].revoked_at is None and len(keys_of(server, "acme")) == 1
        own = http.post("/console/api/keys", headers={"x-csrf-token": token}, json=key_form("globex", "ok"))
        assert own.status_code == 201


def test_an_auditor_reads_but_cannot_change_anything(console_server: Any) -> None:
    server = console_server()
    server.add_user("audrey", "auditor")
    server.mint("laptop")
    key_id = keys_of(server)[0].key_id
    with client(server) as http:
        sign_in(http, server, "audrey")
        token = csrf_of(http)
        assert http.get("/console/api/keys").status_code == 200
        page = http.get("/console/keys")
        assert "laptop" in page.text and "Create a key" not in page.text and "Revoke" not in page.text
        writes = [(f"/console/api/keys/{key_id}/revoke", None), (f"/console/api/keys/{key_id}/rotate", None),
                  ("/console/api/keys", key_form("acme", "x"))]  # fmt: skip
        for path, body in writes:
            answer = http.post(path, headers={"x-csrf-token": token}, json=body)
            assert answer.status_code == 403 and "only read" in answer.json()["error"]
        form = http.post(f"/console/keys/{key_id}/revoke", data={"csrf": token}, headers={"origin": server.base})
        assert form.status_code == 403
        assert keys_of(server)[0].revoked_at is None and len(keys_of(server)) == 1


def test_no_key_password_or_session_id_in_any_log(console_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = console_server(console_config(http="access_log = true"))
    server.add_user("alice", "admin")
    with client(server) as http:
        sign_in(http, server, "alice", "a wrong password here")
        sign_in(http, server, "alice")
        session = str(http.cookies.get(SESSION_COOKIE, path="/console"))
        pre = str(http.cookies.get(PRE_COOKIE, path="/console") or "")
        token = csrf_of(http)
        made = http.post("/console/api/keys", headers={"x-csrf-token": token}, json=key_form("acme", "laptop"))
        key = made.json()["key"]
        http.get("/console/keys")
        http.post("/console/keys", data={"csrf": "wrong"}, headers={"origin": server.base})
    audit = server.folder / "qaqnuz-audit.jsonl"
    text = server_logs(caplog) + audit.read_text()
    assert "signed in" in text and "POST /console/* 303" in text and '"signed_in"' in text
    for secret in (PASSWORD, "a wrong password here", key, session, session.split(".")[0], token):
        assert secret and secret not in text
    if pre:
        assert pre not in text


def test_a_burst_of_guesses_sent_at_once_is_throttled_too(console_server: Any) -> None:
    import concurrent.futures

    server = console_server(console_config("login_attempts = 3\nsource_attempts = 50"))
    server.add_user("alice", "admin")
    with client(server) as http:
        csrf = login_form(http)
        cookies = dict(http.cookies.items())

    def guess(_: int) -> int:
        with client(server) as one:
            for name, value in cookies.items():
                one.cookies.set(name, value, path="/console")
            form = {"name": "alice", "password": "not the password!", "csrf": csrf}
            return one.post("/console/login", data=form, headers={"origin": server.base}).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(guess, range(12)))
    assert answers.count(401) == 3 and answers.count(429) == 9  # only 3 passwords were ever checked


def test_a_removed_user_added_again_does_not_get_old_sessions_back(console_server: Any) -> None:
    server = console_server()
    server.add_user("bob", "admin")
    with client(server) as http:
        sign_in(http, server, "bob")
        assert http.get("/console/api/me").status_code == 200
        server.run(server.kernel.admin.users.remove("bob"))
        assert http.get("/console/api/me").status_code == 401
        server.add_user("bob", "auditor", password="a brand new password")
        assert http.get("/console/api/me").status_code == 401


def test_a_key_or_password_typed_as_the_name_is_never_written_down(
    console_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = console_server()
    key = server.mint("laptop")
    with client(server) as http:
        for typed in (key, "my secret password with spaces"):
            assert sign_in(http, server, typed, "whatever it is").status_code == 401
    written = server_logs(caplog) + (server.folder / "qaqnuz-audit.jsonl").read_text()
    assert key not in written and "my secret password" not in written
    assert written.count('"user":"(withheld)"') == 2


def test_behind_a_trusted_proxy_sign_ins_are_counted_per_real_client(console_server: Any) -> None:
    server = console_server(
        console_config("login_attempts = 2\nsource_attempts = 2", 'trusted_proxies = ["127.0.0.1"]')
    )
    server.add_user("alice", "admin")
    with client(server) as http:
        http.headers["x-forwarded-for"] = "203.0.113.9"
        for _ in range(2):
            assert sign_in(http, server, "mallory", "not the password!").status_code == 401
        assert sign_in(http, server, "alice").status_code == 429  # this client's source limit
        http.headers["x-forwarded-for"] = "203.0.113.10"  # another person behind the same proxy
        assert sign_in(http, server, "alice").status_code == 303
    audit = (server.folder / "qaqnuz-audit.jsonl").read_text()
    assert '"source":"203.0.113.9"' in audit and '"source":"203.0.113.10"' in audit


def test_a_weak_hash_is_upgraded_at_sign_in_and_the_session_stays(console_server: Any) -> None:
    server = console_server()
    server.add_user("alice", "admin")  # made with the tests' cheap parameters
    before = server.run(server.kernel.admin.users.get("alice"))
    assert "m=1024" in before.password_hash
    with client(server) as http:
        assert sign_in(http, server, "alice").status_code == 303
        after = server.run(server.kernel.admin.users.get("alice"))
        assert "m=65536" in after.password_hash and after.sessions_after == before.sessions_after
        assert http.get("/console/api/me").status_code == 200
    with client(server) as again:
        assert sign_in(again, server, "alice").status_code == 303  # the same password, the new hash
