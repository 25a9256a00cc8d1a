"""The console's OpenID Connect client against a real provider on 127.0.0.1 (tests/fakeidp.py): the whole
authorization code flow with PKCE over HTTP, and each way a sign-in must be refused."""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from qaqnuz import Secret
from qaqnuz_console.oidc import Identity, OidcClient, OidcError, Pending
from qaqnuz_console.settings import Oidc

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fakeidp import FakeIdP, rsa_key, s256  # noqa: E402

pytestmark = pytest.mark.anyio

REDIRECT_URI = "http://127.0.0.1:8000/console/oidc/callback"
LOGGER = logging.getLogger("qaqnuz.console.test_oidc")
# Every httpx client would otherwise load the CA bundle again (~50 ms each); nothing here speaks TLS anyway.
TLS = ssl.create_default_context()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """Wall time plus an offset a test can move forward, so ageing needs no sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def make_client(oidc: Oidc, clock: Clock) -> OidcClient:
    """The real client; the transport is httpx's own, given the shared TLS context."""
    return OidcClient(oidc, clock=clock, logger=LOGGER, transport=httpx.AsyncHTTPTransport(verify=TLS))


def options(issuer: str, **changes: Any) -> Oidc:
    base = Oidc(
        issuer=issuer,
        client_id="qaqnuz-console",
        client_secret=Secret("console-secret-7f3a"),
        scopes=("openid", "email", "profile"),
        username_claim="email",
        groups_claim="groups",
        roles=(
            ("admins", "admin", None),
            ("acme-admins", "brand-admin", "acme"),
            ("auditors", "auditor", None),
        ),
        default_role=None,
        label="Sign in with the test IdP",
        leeway=60.0,
        timeout=5.0,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def rsa_keys() -> None:
    # Generated once per session (functools.cache); made here so no test's own time includes it.
    rsa_key("key-1")
    rsa_key("unpublished")


@pytest.fixture
def idp(rsa_keys: None) -> Iterator[FakeIdP]:
    with FakeIdP() as provider:
        yield provider


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(idp: FakeIdP, clock: Clock) -> AsyncIterator[OidcClient]:
    oidc = make_client(options(idp.issuer), clock)
    yield oidc
    await oidc.aclose()


async def authorize(url: str) -> tuple[str, str]:
    """What a browser does: GET the authorization URL; the fake provider signs in at once and redirects back."""
    async with httpx.AsyncClient(follow_redirects=False, verify=TLS) as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert "error" not in query, query
    return query["code"][0], query["state"][0]


async def sign_in(client: OidcClient) -> Identity:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    return await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)


async def refused(
    client: OidcClient, idp: FakeIdP, *, pending_change: dict[str, Any] | None = None, state: str | None = None
) -> OidcError:
    """Run a sign-in expected to fail; check that the refusal repeats nothing secret."""
    url, pending = await client.begin(REDIRECT_URI)
    code, returned_state = await authorize(url)
    if pending_change:
        pending = dataclasses.replace(pending, **pending_change)
    with pytest.raises(OidcError) as caught:
        await client.finish(pending, code=code, state=state or returned_state, redirect_uri=REDIRECT_URI)
    assert_safe(caught.value, idp, code, pending)
    return caught.value


def assert_safe(exc: OidcError, idp: FakeIdP, code: str, pending: Pending) -> None:
    message = str(exc)
    assert code not in message
    assert pending.verifier not in message
    assert pending.nonce not in message
    assert "console-secret-7f3a" not in message
    for token in idp.id_tokens:
        assert token not in message
        for part in token.split("."):
            assert not part or part not in message


# -- the flow ------------------------------------------------------------------------------------------------


async def test_begin_builds_an_authorization_request_with_pkce(client: OidcClient, idp: FakeIdP) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{idp.issuer}/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": "qaqnuz-console",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": pending.state,
        "nonce": pending.nonce,
        "code_challenge": query["code_challenge"],
        "code_challenge_method": "S256",
    }
    assert query["code_challenge"] == s256(pending.verifier)
    assert 43 <= len(pending.verifier) <= 128
    assert len({pending.state, pending.nonce, pending.verifier}) == 3


async def test_sign_in_as_admin(idp: FakeIdP, clock: Clock) -> None:
    client = OidcClient(options(idp.issuer), clock=clock, logger=LOGGER)  # httpx's default transport
    try:
        identity = await sign_in(client)
    finally:
        await client.aclose()
    assert identity == Identity(
        username="ada@example.com", role="admin", brand=None, subject="user-1", issuer=idp.issuer
    )


async def test_discovery_and_keys_are_read_once(client: OidcClient, idp: FakeIdP) -> None:
    await sign_in(client)
    await sign_in(client)
    assert idp.requests.count("/.well-known/openid-configuration") == 1
    assert idp.requests.count("/jwks") == 1


@pytest.mark.parametrize(
    ("groups", "role", "brand"),
    [
        (["acme-admins"], "brand-admin", "acme"),
        ("auditors", "auditor", None),  # a single string is one group
        (["staff", "auditors", "acme-admins"], "brand-admin", "acme"),  # the roles table's order wins
        (["auditors", "admins"], "admin", None),
    ],
)
async def test_groups_map_to_roles(
    client: OidcClient, idp: FakeIdP, groups: str | list[str], role: str, brand: str | None
) -> None:
    idp.claims = {"sub": "user-2", "email": "bob@acme.example", "groups": groups}
    identity = await sign_in(client)
    assert (identity.username, identity.role, identity.brand, identity.subject) == (
        "bob@acme.example",
        role,
        brand,
        "user-2",
    )


async def test_default_role_for_unmapped_groups(idp: FakeIdP, clock: Clock) -> None:
    idp.claims = {"sub": "user-3", "email": "eve@example.com"}  # no groups claim at all
    client = make_client(options(idp.issuer, default_role=("auditor", None)), clock)
    try:
        identity = await sign_in(client)
    finally:
        await client.aclose()
    assert (identity.role, identity.brand) == ("auditor", None)


async def test_no_mapped_group_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.claims = {"sub": "user-4", "email": "mallory@example.com", "groups": ["staff"]}
    exc = await refused(client, idp)
    assert str(exc) == "no group of yours maps to a console role"


async def test_missing_username_claim_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.claims = {"sub": "user-5", "groups": ["admins"]}
    exc = await refused(client, idp)
    assert "'email'" in str(exc)


async def test_public_client_sends_client_id_in_the_form(idp: FakeIdP, clock: Clock) -> None:
    idp.client_secret = None
    client = make_client(options(idp.issuer, client_secret=None), clock)
    try:
        identity = await sign_in(client)
    finally:
        await client.aclose()
    assert identity.role == "admin"


async def test_wrong_client_secret_is_refused(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(options(idp.issuer, client_secret=Secret("not-the-secret")), clock)
    try:
        exc = await refused(client, idp)
    finally:
        await client.aclose()
    assert "invalid_client" in str(exc)
    assert "not-the-secret" not in str(exc)


# -- the ID token ----------------------------------------------------------------------------------------------


async def test_signature_by_another_key_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.sign_with_other_key = True
    exc = await refused(client, idp)
    assert "signature does not verify" in str(exc)


async def test_wrong_audience_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.audience = "some-other-app"
    exc = await refused(client, idp)
    assert "meant for another client" in str(exc)


async def test_several_audiences_need_azp(client: OidcClient, idp: FakeIdP) -> None:
    idp.audience = ["qaqnuz-console", "some-other-app"]
    exc = await refused(client, idp)
    assert "authorized party" in str(exc)
    idp.claims = {**idp.claims, "azp": "qaqnuz-console"}
    assert (await sign_in(client)).role == "admin"


async def test_expired_token_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.expired_by = 3600
    exc = await refused(client, idp)
    assert "expired" in str(exc)


async def test_token_not_valid_yet_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.claims = {**idp.claims, "nbf": int(time.time()) + 3600}
    exc = await refused(client, idp)
    assert "not valid yet" in str(exc)


async def test_wrong_issuer_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.token_issuer = "https://evil.example"
    exc = await refused(client, idp)
    assert "another issuer" in str(exc)


async def test_alg_none_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.alg_none = True
    exc = await refused(client, idp)
    assert "algorithm that is not allowed ('none')" in str(exc)


async def test_unknown_kid_is_refused_without_hammering_the_jwks(client: OidcClient, idp: FakeIdP) -> None:
    idp.unknown_kid = True
    exc = await refused(client, idp)
    assert "does not publish" in str(exc)
    exc = await refused(client, idp)
    assert idp.requests.count("/jwks") == 1  # read for the first token; too recently to read again


async def test_rotated_key_is_fetched(client: OidcClient, idp: FakeIdP, clock: Clock) -> None:
    await sign_in(client)
    idp.rotate_key()
    clock.offset += 61  # the JWKS was read over a minute ago: an unknown kid may read it again
    assert (await sign_in(client)).role == "admin"
    assert idp.requests.count("/jwks") == 2


async def test_nonce_mismatch_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.nonce = "a-nonce-from-another-sign-in"
    exc = await refused(client, idp)
    assert "nonce mismatch" in str(exc)


async def test_replayed_nonce_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)
    # The same sign-in again: the provider happily issues a second code (and a token) for the same nonce.
    code, state = await authorize(url)
    with pytest.raises(OidcError, match="replayed") as caught:
        await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)
    assert_safe(caught.value, idp, code, pending)


async def test_racing_callbacks_with_one_nonce_sign_in_once(client: OidcClient, idp: FakeIdP) -> None:
    """Both pass the early check (neither has finished); the record after verification lets only one through."""
    url, pending = await client.begin(REDIRECT_URI)
    codes = [await authorize(url) for _ in range(2)]
    outcomes: list[Identity | OidcError] = []

    async def finish(code: str, state: str) -> None:
        try:
            outcomes.append(await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI))
        except OidcError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        for code, state in codes:
            group.start_soon(finish, code, state)
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Identity", "OidcError"]
    assert any(isinstance(outcome, OidcError) and "replayed" in str(outcome) for outcome in outcomes)
    assert idp.requests.count("/token") == 2


# -- the callback -------------------------------------------------------------------------------------------


async def test_wrong_state_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    exc = await refused(client, idp, state="someone-elses-state")
    assert "state mismatch" in str(exc)
    assert "/token" not in idp.requests  # the code was not spent


async def test_old_pending_is_refused(client: OidcClient, idp: FakeIdP, clock: Clock) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    clock.offset += 601
    with pytest.raises(OidcError, match="took too long") as caught:
        await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)
    assert_safe(caught.value, idp, code, pending)


async def test_pkce_verifier_mismatch_is_refused_by_the_provider(client: OidcClient, idp: FakeIdP) -> None:
    exc = await refused(client, idp, pending_change={"verifier": "x" * 64})
    assert "invalid_grant" in str(exc)
    assert "PKCE" not in str(exc)  # the provider's description is not repeated


async def test_redirect_uri_mismatch_is_refused_by_the_provider(client: OidcClient, idp: FakeIdP) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    with pytest.raises(OidcError, match="invalid_grant"):
        await client.finish(pending, code=code, state=state, redirect_uri="http://127.0.0.1:9/elsewhere")


async def test_code_is_single_use(client: OidcClient, idp: FakeIdP) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    wrong = dataclasses.replace(pending, verifier="y" * 64)
    with pytest.raises(OidcError, match="invalid_grant"):
        await client.finish(wrong, code=code, state=state, redirect_uri=REDIRECT_URI)
    with pytest.raises(OidcError, match="invalid_grant"):  # the provider spent the code on the failed attempt
        await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)


# -- the provider ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_provider_down_at_begin(clock: Clock) -> None:
    client = make_client(options(f"http://127.0.0.1:{_closed_port()}"), clock)
    try:
        with pytest.raises(OidcError, match="could not be reached"):
            await client.begin(REDIRECT_URI)
    finally:
        await client.aclose()


async def test_provider_down_at_callback(client: OidcClient, idp: FakeIdP) -> None:
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    idp.stop()
    with pytest.raises(OidcError, match="could not be reached") as caught:
        await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)
    assert_safe(caught.value, idp, code, pending)


async def test_discovery_naming_another_issuer_is_refused(client: OidcClient, idp: FakeIdP) -> None:
    idp.discovery_issuer = "https://evil.example"
    with pytest.raises(OidcError, match="names another issuer"):
        await client.begin(REDIRECT_URI)


async def test_provider_error_status_is_not_echoed(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(options(idp.issuer + "/realms/other"), clock)
    try:
        with pytest.raises(OidcError, match="could not be reached") as caught:  # 404 for that discovery URL
            await client.begin(REDIRECT_URI)
    finally:
        await client.aclose()
    assert "404" in str(caught.value)
    assert "not_found" not in str(caught.value)


async def test_nothing_secret_is_logged(client: OidcClient, idp: FakeIdP, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER.name)
    url, pending = await client.begin(REDIRECT_URI)
    code, state = await authorize(url)
    await client.finish(pending, code=code, state=state, redirect_uri=REDIRECT_URI)
    idp.sign_with_other_key = True
    await refused(client, idp)
    text = caplog.text
    assert "sign-in verified" in text and "sign-in refused" in text
    for value in (code, pending.verifier, pending.nonce, pending.state, "console-secret-7f3a", *idp.id_tokens):
        assert value not in text
