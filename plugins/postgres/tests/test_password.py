"""A password in the store URL (or from a secret reference) is used, and never shown: not in an error, a repr,
a traceback or a log line, whether the login fails, PostgreSQL is down or the URL does not even parse."""

from __future__ import annotations

import logging
import traceback

import anyio
import msgspec
import pytest

from qaqnuz import ConfigError, SecretResolver, StoreContext, StoreError
from qaqnuz.store_contract import NOW, key
from qaqnuz_postgres import PostgresSettings, build
from qaqnuz_postgres.settings import Options
from qaqnuz_postgres.store import PostgresStore

pytestmark = pytest.mark.anyio
WRONG = "Wrong-pw-0c4a77"
PASSWORD_ROLE = "qz_pw"  # the private cluster's (conftest)
FAST = Options(connect_timeout=0.5, statement_timeout=0.5)


def url(server, database: str, password: str) -> str:
    return f"postgresql://{PASSWORD_ROLE}:{password}@127.0.0.1:{server.port}/{database}"


def texts(exc: BaseException, store: object, caplog) -> str:
    """Everything a password could leak into: the error, its traceback, the store's repr, the log."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            "".join(traceback.format_exception(exc)),
            repr(store),
            *(record.getMessage() for record in caplog.records),
            caplog.text,
        ]
    )


def context(store_url: str, tmp_path, *, dry_run: bool = False, masked: list[str] | None = None) -> StoreContext:
    return StoreContext(
        section="plugins.postgresql",
        logger=logging.getLogger("qaqnuz.store.postgresql"),
        clock=lambda: NOW,
        base_dir=str(tmp_path),
        url=store_url,
        server_secret=b"s" * 32,
        secrets=SecretResolver(str(tmp_path), (masked if masked is not None else []).append),
        dry_run=dry_run,
    )


async def test_the_password_is_used_and_never_shown(private_postgres, private_database, password_login, caplog) -> None:
    _, password = password_login
    caplog.set_level(logging.DEBUG)
    good = PostgresStore(url(private_postgres, private_database, password), FAST)
    wrong = PostgresStore(url(private_postgres, private_database, WRONG), FAST)
    try:
        await good.insert_key(key("k1"), max_active=None, now=NOW)  # scram: the password is really checked
        assert (await good.get_key("k1")) is not None
        with pytest.raises(StoreError) as refused:
            await wrong.list_keys()
        assert "last attempt to connect: password authentication failed" in str(refused.value)
        seen = texts(refused.value, wrong, caplog)

        await anyio.to_thread.run_sync(private_postgres.stop)
        with pytest.raises(StoreError) as down:
            await good.get_key("k1")
        assert "connection refused" in str(down.value)
        await anyio.sleep(0.3)  # the pool and the listener retry meanwhile, and log it
        seen += texts(down.value, good, caplog)
    finally:
        await good.aclose()
        await wrong.aclose()
    assert "127.0.0.1" in caplog.text  # the log does say where (it is useful) ...
    for secret in (password, WRONG):
        assert secret not in seen  # ... never with what


def test_a_url_that_does_not_parse_is_refused_without_quoting_it(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        build(PostgresSettings(), context(f"postgresql://u:{WRONG}%zz@127.0.0.1/db", tmp_path))
    assert WRONG not in str(caught.value)
    assert caught.value.problems[0].startswith("[server] store: not a valid PostgreSQL URL")


async def test_the_password_may_come_from_a_secret_reference(
    private_postgres, private_database, password_login, tmp_path, monkeypatch, caplog
) -> None:
    role, password = password_login
    monkeypatch.setenv("QZ_STORE_PASSWORD", password)
    bare = f"postgresql://{role}@127.0.0.1:{private_postgres.port}/{private_database}"
    settings = msgspec.convert({"password": {"env": "QZ_STORE_PASSWORD"}}, PostgresSettings)
    masked: list[str] = []
    store = build(settings, context(bare, tmp_path, masked=masked))
    assert masked == [password]  # handed to the kernel's log masking as it was resolved
    try:
        assert await store.list_keys() == []
    finally:
        await store.aclose()
    assert password not in repr(store) and password not in caplog.text

    with pytest.raises(ConfigError, match="carries a password too"):
        build(settings, context(url(private_postgres, private_database, password), tmp_path))
    monkeypatch.delenv("QZ_STORE_PASSWORD")
    with pytest.raises(ConfigError, match=r"\[plugins.postgresql\] password: environment variable QZ_STORE_PASSWORD"):
        build(settings, context(bare, tmp_path))


def test_a_url_by_reference_may_carry_the_password(tmp_path, caplog) -> None:
    """The kernel refuses a password written into `[server] store`; one that arrives (in a URL given by
    reference) is used, and never logged."""
    caplog.set_level(logging.DEBUG)
    store = build(PostgresSettings(), context(f"postgresql://u:{WRONG}@127.0.0.1:1/db", tmp_path))
    assert WRONG not in repr(store) and WRONG not in caplog.text
