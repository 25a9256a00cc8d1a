"""Single sign-on through the console itself: the console's routes, a real server and a real local identity
provider (fakeidp), driven over HTTP the way a browser would (each redirect followed by hand, cookies kept).
The token checks themselves are covered one by one in test_oidc.py; here each refusal is shown to end with
no session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Server, console_config
from fakeidp import FakeIdP

from qaqnuz_console.sessions import SESSION_COOKIE


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP(claims={"sub": "u-1", "email": "ada@example.com", "groups": ["staff", "acme-ops"]}) as provider:
        yield provider


def sso_config(idp: FakeIdP, extra: str = "") -> str:
    return console_config(f"""\
passwords = true

[plugins.console.oidc]
issuer = "{idp.issuer}"
client_id = "{idp.client_id}"
client_secret = {{ file = "oidc-client-secret" }}
roles = {{ "qaqnuz-admins" = "admin", "acme-ops" = "brand-admin:acme" }}
{extra}
""")


def start(console_server: Any, idp: FakeIdP, extra: str = "") -> Server:
    server: Server = console_server(sso_config(idp, extra))
    return server


def sign_in(server: Server, http: httpx.Client) -> httpx.Response:
    """The browser's path: start → provider → callback; returns the callback's answer."""
    started = http.get("/console/oidc/start")
    assert started.status_code == 303, started.text
    authorize = started.headers["location"]
    assert authorize.startswith(f"{urlsplit(authorize).scheme}://127.0.0.1")
    back = httpx.get(authorize, follow_redirects=False)  # the provider's own origin: no console cookie sent
    assert back.status_code == 302, back.text
    callback = back.headers["location"]
    assert callback.startswith(f"{server.base}/console/oidc/callback?")
    return http.get(callback.removeprefix(server.base))


@pytest.fixture
def secret_file(tmp_path: Any, idp: FakeIdP) -> None:
    for folder in ("server0", "server1"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "oidc-client-secret").write_text(str(idp.client_secret))


def test_sign_in_with_the_identity_provider(console_server: Any, idp: FakeIdP, secret_file: None) -> None:
    server = start(console_server, idp)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        login = http.get("/console/login")
        assert "Sign in with single sign-on" in login.text
        answer = sign_in(server, http)
        assert answer.status_code == 200, answer.text
        # A same-site page moves on (a SameSite=Strict cookie is not sent within the provider's redirect chain).
        assert re.search(r'http-equiv="refresh" content="0; url=/console/keys"', answer.text)
        assert http.cookies.get(SESSION_COOKIE, path="/console")
        me = http.get("/console/api/me").json()
        assert (me["name"], me["role"], me["brand"]) == ("ada@example.com", "brand-admin", "acme")
        assert http.get("/console/api/keys?brand=globex").status_code == 404
    user = server.run(server.kernel.admin.users.get("ada@example.com"))
    assert user is not None and user.password_hash is None  # remembered for its sessions, no password
    audit = (server.folder / "qaqnuz-audit.jsonl").read_text()
    assert '"method":"oidc"' in audit and '"outcome":"signed_in"' in audit


@pytest.mark.parametrize(
    ("knob", "value", "reason"),
    [
        ("sign_with_other_key", True, "signature"),
        ("audience", "someone-else", "client"),
        ("expired_by", 600, "expired"),
        ("alg_none", True, "algorithm"),
    ],
)
def test_a_bad_id_token_ends_with_no_session(
    console_server: Any, idp: FakeIdP, secret_file: None, knob: str, value: Any, reason: str
) -> None:
    server = start(console_server, idp)
    setattr(idp, knob, value)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        answer = sign_in(server, http)
        assert answer.status_code == 401
        assert "Single sign-on refused" in answer.text and reason in answer.text.lower()
        assert not http.cookies.get(SESSION_COOKIE, path="/console")
        assert http.get("/console/api/me").status_code == 401


def test_a_replayed_callback_is_refused(console_server: Any, idp: FakeIdP, secret_file: None) -> None:
    server = start(console_server, idp)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        started = http.get("/console/oidc/start")
        pre = dict(http.cookies.items())
        back = httpx.get(started.headers["location"], follow_redirects=False)
        callback = back.headers["location"].removeprefix(server.base)
        assert http.get(callback).status_code == 200
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as attacker:
        for name, value in pre.items():  # the same sign-in in progress, presented again
            attacker.cookies.set(name, value, path="/console")
        again = attacker.get(callback)
        assert again.status_code == 401 and "replayed" in again.text
        assert attacker.get("/console/api/me").status_code == 401


def test_a_user_whose_groups_map_to_no_role_is_refused(console_server: Any, idp: FakeIdP, secret_file: None) -> None:
    idp.claims = {"sub": "u-2", "email": "eve@example.com", "groups": ["visitors"]}
    server = start(console_server, idp)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        answer = sign_in(server, http)
        assert answer.status_code == 401 and "no group of yours maps to a console role" in answer.text
    assert server.run(server.kernel.admin.users.get("eve@example.com")) is None


def test_the_callback_without_a_sign_in_under_way_is_refused(
    console_server: Any, idp: FakeIdP, secret_file: None
) -> None:
    server = start(console_server, idp)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        answer = http.get("/console/oidc/callback?code=abc&state=def")
        assert answer.status_code == 400 and "not started here" in answer.text


def test_an_unverified_email_names_nobody(console_server: Any, idp: FakeIdP, secret_file: None) -> None:
    idp.claims = {"sub": "u-3", "email": "ada@example.com", "email_verified": False, "groups": ["qaqnuz-admins"]}
    server = start(console_server, idp)
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        answer = sign_in(server, http)
        assert answer.status_code == 401 and "email_verified" in answer.text
        assert http.get("/console/api/me").status_code == 401


def test_single_sign_on_never_takes_over_a_local_account(console_server: Any, idp: FakeIdP, secret_file: None) -> None:
    server = start(console_server, idp)
    local = server.add_user("ada@example.com", "admin")
    with httpx.Client(base_url=server.base, follow_redirects=False, timeout=10) as http:
        answer = sign_in(server, http)
        assert answer.status_code == 401 and "a local account has this name" in answer.text
        assert http.get("/console/api/me").status_code == 401
    assert server.run(server.kernel.admin.users.get("ada@example.com")) == local  # role and password kept
