"""The plugin as users install and configure it: its entry point, its settings and their errors, and a
password that is only ever a secret reference and never shows up in a log line, an error or a repr."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import redis
from redis_kit import UNLIMITED, config, limiter, start

import qaqnuz_redis
from qaqnuz import ConfigError, LimiterUnavailable, ProviderKind
from qaqnuz.plugins import Plugins
from qaqnuz.testservers import RedisServer, free_port
from qaqnuz_redis.settings import RedisSettings, check

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PASSWORD = "s3cret-Redis-pass-7f1c"


def test_the_entry_point_registers_the_redis_limiter() -> None:
    registered = Plugins(autoload=False, explicit=["redis"]).providers[ProviderKind.LIMITER]["redis"]
    assert registered.plugin.distribution == "qaqnuz-redis"
    assert registered.provider.settings_type is RedisSettings
    assert qaqnuz_redis.qaqnuz_rate_limiters()[0].name == "redis"


def test_the_entry_module_imports_no_redis_client() -> None:
    code = "import sys, qaqnuz_redis; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_defaults() -> None:
    options, problems = check(RedisSettings(url="redis://cache.internal"), "[plugins.redis]")
    assert problems == [] and options is not None
    assert (options.host, options.port, options.db, options.tls) == ("cache.internal", 6379, 0, False)
    assert (options.connect_timeout, options.timeout, options.breaker_cooldown) == (1.0, 0.05, 1.0)
    assert (options.pool_size, options.key_prefix, options.username) == (32, "qaqnuz:", None)
    tls, _ = check(RedisSettings(url="rediss://alice@[::1]:6380/3", timeout="250ms"), "[plugins.redis]")
    assert tls is not None and (tls.host, tls.port, tls.db, tls.tls, tls.username) == ("::1", 6380, 3, True, "alice")
    assert tls.timeout == 0.25 and tls.endpoint == "rediss://[::1]:6380/3"  # no user in log lines


def test_every_setting_is_documented_in_the_readme_with_its_default() -> None:
    assert README.count("## What it provides") == 1
    for field in msgspec.structs.fields(RedisSettings):
        row = re.search(rf"^\| `{field.name}` \|([^|]*)\|", README, re.M)
        assert row is not None, f"{field.name} has no row in the README's settings table"
        if field.default is not msgspec.NODEFAULT:
            shown = row.group(1).strip().strip("`").strip('"')
            default = "none" if field.default is None else str(field.default)
            assert shown == default, (field.name, shown, default)


@pytest.mark.anyio
async def test_the_readme_example_loads(qaqnuz_kernel, monkeypatch) -> None:
    monkeypatch.setenv("QAQNUZ_REDIS_PASSWORD", "for-the-docs-test")
    example = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    text = '[server]\nstore = "sqlite:///qaqnuz.db"\nsecret_file = "qaqnuz.secret"\n\n' + example
    kernel = await qaqnuz_kernel(text, plugins=["redis"])  # built, not connected: the first call connects
    assert repr(kernel.runtime.limiter) == "RedisLimiter(rediss://redis.internal:6380/0)"


# -- errors ---------------------------------------------------------------------------------------------
def problems_of(url: str, **settings) -> list[str]:
    return check(RedisSettings(url=url, **settings), "[plugins.redis]")[1]


def test_a_password_in_the_url_is_refused_without_repeating_it() -> None:
    for url in (f"redis://:{PASSWORD}@cache:6379/0", f"rediss://app:{PASSWORD}@cache/0", "redis://app:@cache"):
        (problem,) = problems_of(url)
        assert problem.startswith("[plugins.redis] url: must not carry a password")
        assert 'password = { env = "NAME" }' in problem
        assert PASSWORD not in problem and "cache" not in problem


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://cache:6379", "must start with redis:// or rediss://"),
        ("cache:6379", "must start with redis:// or rediss://"),
        ("unix:///run/redis.sock", "must start with redis:// or rediss://"),
        ("redis://cache:6379/0?socket_timeout=5", "takes no '?' options"),
        ("redis://cache:6379/0?password=x", "takes no '?' options"),
        ("redis://:6379/0", "names no host"),
        ("redis://cache:99999/0", "not a valid URL"),
        ("redis://cache:0/0", "port 0"),
        ("redis://cache:6379/zero", "a database number"),
    ],
)
def test_a_bad_url_is_located_and_says_how_to_write_one(url: str, fragment: str) -> None:
    (problem,) = problems_of(url)
    assert problem.startswith("[plugins.redis] url: ") and fragment in problem


def test_every_bad_setting_is_reported_at_once() -> None:
    problems = problems_of(
        "redis://alice@cache/0",
        username="bob",
        key_prefix="app{1}:",
        connect_timeout="soon",
        timeout="0ms",
        breaker_cooldown="-1s",
        pool_size=0,
    )
    located = sorted(p.split(":")[0] for p in problems)
    assert located == [
        "[plugins.redis] breaker_cooldown",
        "[plugins.redis] connect_timeout",
        "[plugins.redis] key_prefix",
        "[plugins.redis] pool_size",
        "[plugins.redis] timeout",
        "[plugins.redis] username",
    ], problems


@pytest.mark.anyio
async def test_the_kernel_refuses_a_bad_table_and_a_password_written_into_config(qaqnuz_kernel, tmp_path) -> None:
    bad = config(f"redis://:{PASSWORD}@127.0.0.1:1/0", redis='pool_size = 0\npassword = "plain-text"\n')
    with pytest.raises(ConfigError) as refused:
        await qaqnuz_kernel(bad, plugins=["redis"])
    text = str(refused.value)
    assert "[plugins.redis] password: a secret is given by reference" in text
    assert PASSWORD not in text and "plain-text" not in text
    missing = config("redis://127.0.0.1:1/0", redis='password = { env = "QZ_NOT_SET_ANYWHERE" }\n')
    with pytest.raises(ConfigError, match=r"\[plugins.redis\] password: environment variable QZ_NOT_SET_ANYWHERE"):
        await qaqnuz_kernel(missing, plugins=["redis"], folder=tmp_path / "missing")
    url_password = config(f"redis://:{PASSWORD}@127.0.0.1:1/0", redis="pool_size = 0\n")
    with pytest.raises(ConfigError) as both:
        await qaqnuz_kernel(url_password, plugins=["redis"], folder=tmp_path / "both")
    assert "url: must not carry a password" in str(both.value) and "pool_size: must be at least 1" in str(both.value)
    assert PASSWORD not in str(both.value)


# -- a password, by reference, against a Redis that requires one -----------------------------------------
def require_password(url: str, *acl_user: str) -> None:
    admin = redis.Redis.from_url(url)
    try:
        if acl_user:
            admin.execute_command("ACL", "SETUSER", acl_user[0], "on", f">{PASSWORD}", "~*", "+@all")
        admin.config_set("requirepass", PASSWORD)
    finally:
        admin.close()


@pytest.mark.anyio
async def test_a_password_from_the_environment_opens_a_redis_that_requires_one(
    qaqnuz_redis, qaqnuz_kernel, qaqnuz_client, monkeypatch, tmp_path, caplog
) -> None:
    require_password(qaqnuz_redis.url, "limiter")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("QZ_TEST_REDIS_PASSWORD", PASSWORD)
    for folder, lines in (
        ("default-user", 'password = { env = "QZ_TEST_REDIS_PASSWORD" }\n'),
        ("acl-user", 'username = "limiter"\npassword = { env = "QZ_TEST_REDIS_PASSWORD" }\n'),
    ):
        kernel, pack = await start(qaqnuz_kernel, qaqnuz_redis.url, folder=tmp_path / folder, redis=lines)
        key, _ = await kernel.keys.mint(brand="acme", scopes=["count.run"], name=folder)
        async with qaqnuz_client(kernel, key) as client:
            assert not (await client.call_tool("bump", {})).is_error
        assert pack.executions == 1 and (await kernel.readiness())["limiter"] is True
        assert PASSWORD not in repr(kernel.runtime.limiter) and PASSWORD not in repr(kernel.runtime.limiter.options)
    # without the password the same Redis refuses, and the call with it
    kernel, pack = await start(qaqnuz_kernel, qaqnuz_redis.url, folder=tmp_path / "none")
    key, _ = await kernel.keys.mint(brand="acme", scopes=["count.run"], name="none")
    async with qaqnuz_client(kernel, key) as client:
        refused = await client.call_tool("bump", {})
    assert refused.is_error and refused.structured_content["error_class"] == "retryable" and pack.executions == 0
    assert PASSWORD not in caplog.text


@pytest.mark.anyio
async def test_a_wrong_password_never_reaches_a_log_line_or_an_error(qaqnuz_redis, caplog) -> None:
    """Straight to the limiter, past the kernel's log masking: the limiter itself must not say it."""
    require_password(qaqnuz_redis.url)
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Redis-pass-0b5e"
    for password in (wrong, PASSWORD):
        lim = limiter(qaqnuz_redis.url, logger="test.redis.wrongpass", password=password)
        assert password not in repr(lim) and password not in repr(lim.options)
        try:
            if password == wrong:
                with pytest.raises(LimiterUnavailable) as refused:
                    await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
                cause = refused.value.__cause__
                assert wrong not in str(refused.value) and wrong not in repr(refused.value)
                assert cause is not None and wrong not in str(cause) and wrong not in repr(cause)
            else:
                assert (await lim.admit("k", UNLIMITED, "acme", UNLIMITED)).admitted
        finally:
            await lim.aclose()
    assert "failed (AuthenticationError" in caplog.text  # the failure was logged, once, by type and Redis's words
    assert wrong not in caplog.text and PASSWORD not in caplog.text


# -- TLS -------------------------------------------------------------------------------------------------
@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server on a TLS port only, with a self-signed certificate for `localhost` (and no IP)."""

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    server = RedisServer()  # only for its binary and its folder; started here with TLS arguments
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [server.binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no",
         "--dir", str(server.base), "--logfile", str(server.base / "redis.log")],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the TLS redis-server did not start"
                time.sleep(0.05)
        yield port, cert
    finally:
        process.kill()
        process.wait(10)
        server.close()


@pytest.mark.anyio
async def test_rediss_verifies_the_servers_certificate_and_host_name(tls_redis, monkeypatch) -> None:
    port, cert = tls_redis
    lim = limiter(f"rediss://localhost:{port}/0")
    try:
        with pytest.raises(LimiterUnavailable) as untrusted:  # a certificate no trusted authority signed
            await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
        assert "certificate verify failed: self-signed certificate" in str(untrusted.value.__cause__)
    finally:
        await lim.aclose()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it (OpenSSL's default store reads this)
    lim = limiter(f"rediss://localhost:{port}/0")
    try:
        assert (await lim.admit("k", UNLIMITED, "acme", UNLIMITED)).admitted
    finally:
        await lim.aclose()
    lim = limiter(f"rediss://127.0.0.1:{port}/0")  # the certificate names localhost only
    try:
        with pytest.raises(LimiterUnavailable) as mismatch:
            await lim.admit("k", UNLIMITED, "acme", UNLIMITED)
        assert "certificate is not valid for '127.0.0.1'" in str(mismatch.value.__cause__)
    finally:
        await lim.aclose()
    plain = limiter(f"redis://localhost:{port}/0")  # plain text to a TLS port: no answer it understands
    try:
        with pytest.raises(LimiterUnavailable):
            await plain.admit("k", UNLIMITED, "acme", UNLIMITED)
    finally:
        await plain.aclose()
