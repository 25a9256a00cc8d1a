"""The plugin as users install it: entry point, documented settings, safe defaults."""

from __future__ import annotations

import msgspec
import pytest
from httpkit import ROOT

import qaqnuz_http
from qaqnuz import ProviderKind, UsageError
from qaqnuz.plugins import Plugins
from qaqnuz_http.guard import _strip_query_token, host_allowed
from qaqnuz_http.settings import HttpSettings, check, is_loopback
from qaqnuz_http.transport import HttpTransport


def test_entry_point_registers_the_http_transport():
    plugins = Plugins(autoload=False, explicit=["http"])
    registered = plugins.providers[ProviderKind.TRANSPORT]["http"]
    assert registered.plugin.distribution == "qaqnuz-http"
    assert registered.plugin.version == "0.1.0"
    assert registered.provider.settings_type is HttpSettings
    assert qaqnuz_http.qaqnuz_transports()[0].name == "http"


def test_every_setting_is_documented_with_an_example():
    readme = (ROOT / "plugins/http/README.md").read_text()
    assert readme.count("## What it provides") == 1
    for field in msgspec.structs.fields(HttpSettings):
        assert f"`{field.name}`" in readme, field.name
        assert f"\n{field.name} = " in readme, f"{field.name} has no line in the README's example"


def test_defaults_are_loopback_only():
    settings = HttpSettings()
    assert is_loopback(settings.host) and settings.port == 8000 and settings.query_token
    assert settings.max_body_bytes == 4 * 1024 * 1024 and settings.metrics and settings.access_log
    for host in ("127.0.0.1:8000", "localhost", "[::1]:1"):
        assert host_allowed(host, settings.allowed_hosts), host
    for host in ("evil.example.com", "localhost:80.evil.com", "127.0.0.1.nip.io:80", "localhost.evil.com"):
        assert not host_allowed(host, settings.allowed_hosts), host
    assert not host_allowed("http://localhost:1@evil.com", settings.allowed_origins)


def test_query_token_is_removed_from_query_and_raw_path():
    scope = {"query_string": b"session_id=ab&%74oken=SECRET", "raw_path": b"/messages/?token=SECRET"}
    _strip_query_token(scope)
    assert scope["query_string"] == b"session_id=ab"
    assert scope["raw_path"] == b"/messages/"
    assert [c.value for c in scope["qaqnuz.query_token"]] == ["SECRET"]
    assert "SECRET" not in repr(scope)


@pytest.mark.anyio
async def test_a_loopback_only_auth_provider_refuses_a_public_bind():
    class Host:
        loopback_only = True

    transport = HttpTransport(HttpSettings(host="0.0.0.0", query_token=False), check(HttpSettings()))
    with pytest.raises(UsageError, match=r"refusing to listen on 0\.0\.0\.0"):
        await transport.serve(Host())  # type: ignore[arg-type]
