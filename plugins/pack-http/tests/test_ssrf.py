"""SSRF: internal addresses are refused before any connection; the address checked is the one used."""

from __future__ import annotations

import pytest
from httppack_kit import config, echo_pack

import qaqnuz_pack_http
from qaqnuz import TerminalError
from qaqnuz_pack_http import REFUSED_ADDRESS, GuardedBackend, is_internal
from qaqnuz_pack_http import guard as guard_module

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (CGNAT)
        "0.0.0.0",
        "224.0.1.1",  # multicast, even the globally scoped block
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:a00:1::1",  # 6to4 wrapping 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
    ],
)
def test_internal_addresses(address):
    assert is_internal(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert not is_internal(address)


async def _call(kernel, qaqnuz_client):
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        return await client.call_tool("echo", {"q": "x"})


def _refused(result):
    assert result.is_error
    assert result.structured_content["error_class"] == "terminal"
    assert result.structured_content["sanitized_error"] == REFUSED_ADDRESS
    return True


def _private_off(text: str) -> str:
    return text.replace("allow_private = true", "allow_private = false")


async def test_loopback_server_is_refused_without_allow_private_and_never_receives_a_request(
    qaqnuz_kernel, qaqnuz_client, upstream
):
    for base in (upstream.url, f"http://localhost:{upstream.port}"):
        kernel = await qaqnuz_kernel(config(_private_off(echo_pack(base)), ["echo"]), plugins=[qaqnuz_pack_http])
        assert _refused(await _call(kernel, qaqnuz_client))
        await kernel.aclose()
    assert upstream.requests == []  # the request was never sent
    # the same pack with allow_private = true reaches it (the refusal above was the guard, not the server)
    kernel = await qaqnuz_kernel(config(echo_pack(upstream.url), ["echo"]), plugins=[qaqnuz_pack_http])
    assert not (await _call(kernel, qaqnuz_client)).is_error
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "base",
    [
        "http://[::1]:9",
        "http://169.254.169.254",
        "https://10.0.0.8/api",
        "http://[::ffff:127.0.0.1]:9",
        "http://0.0.0.0:9",
    ],
)
async def test_private_literals_are_refused(qaqnuz_kernel, qaqnuz_client, base):
    kernel = await qaqnuz_kernel(config(_private_off(echo_pack(base)), ["echo"]), plugins=[qaqnuz_pack_http])
    assert _refused(await _call(kernel, qaqnuz_client))


@pytest.mark.parametrize(
    "answers",
    [["10.0.0.7"], ["93.184.216.34", "10.0.0.7"], ["2606:4700::1", "::1"], ["169.254.169.254"]],
)
async def test_a_hostname_resolving_to_any_internal_address_is_refused(
    qaqnuz_kernel, qaqnuz_client, monkeypatch, answers
):
    async def resolver(host, port):
        assert host == "api.internal.test"
        return answers

    monkeypatch.setattr(guard_module, "system_resolver", resolver)
    pack = _private_off(echo_pack("https://api.internal.test/v1"))
    kernel = await qaqnuz_kernel(config(pack, ["echo"]), plugins=[qaqnuz_pack_http])
    assert _refused(await _call(kernel, qaqnuz_client))


async def test_the_connection_goes_to_the_address_that_was_checked(qaqnuz_kernel, qaqnuz_client, upstream, monkeypatch):
    """DNS pinning: the name is resolved once by the guard and the socket opens to that answer, while the
    Host header keeps the name. `api.pinned.test` does not exist in real DNS, so reaching the server proves
    the connection used the checked address rather than a second lookup."""
    lookups = []

    async def resolver(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(guard_module, "system_resolver", resolver)
    pack = echo_pack(f"http://api.pinned.test:{upstream.port}")
    kernel = await qaqnuz_kernel(config(pack, ["echo"]), plugins=[qaqnuz_pack_http])
    result = await _call(kernel, qaqnuz_client)
    assert not result.is_error, result.structured_content
    assert upstream.requests[0]["headers"]["host"] == f"api.pinned.test:{upstream.port}"
    assert lookups == ["api.pinned.test"]


async def test_resolver_failure_is_a_dependency(qaqnuz_kernel, qaqnuz_client, monkeypatch):
    async def resolver(host, port):
        raise OSError("no such host")

    monkeypatch.setattr(guard_module, "system_resolver", resolver)
    kernel = await qaqnuz_kernel(
        config(_private_off(echo_pack("https://nowhere.test")), ["echo"]), plugins=[qaqnuz_pack_http]
    )
    result = await _call(kernel, qaqnuz_client)
    assert result.structured_content["error_class"] == "dependency"


async def test_unix_sockets_are_refused():
    backend = GuardedBackend(allow_private=True)
    with pytest.raises(qaqnuz_pack_http.BlockedAddress):
        await backend.connect_unix_socket("/var/run/docker.sock")


@pytest.mark.parametrize("path", ["/../admin", "/users/../../admin", "//evil.example.com/x", "/%2e%2e/admin"])
def test_urls_stay_under_the_base_url(path):
    upstream = qaqnuz_pack_http.Upstream("https://api.example.com/v1")
    try:
        url = upstream.url(path)
    except TerminalError as exc:
        assert exc.public == REFUSED_ADDRESS
    else:  # whatever was accepted is on the same origin and under /v1/
        assert (url.scheme, url.host, url.port) == ("https", "api.example.com", None)
        assert url.raw_path.startswith(b"/v1/")
