"""The provider as the kernel uses it: registered under both schemes, its settings checked, a whole kernel on it,
admin commands driving it through `asyncio.run`, and `qaqnuz config check` creating nothing."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time

import anyio
import pytest

import qaqnuz_postgres
from qaqnuz import ConfigError, ProviderKind, SecretResolver, StoreContext
from qaqnuz.admin import load_secret, open_admin
from qaqnuz.checking import check
from qaqnuz.command_context import CommandContext
from qaqnuz.config import decode_settings, load_config
from qaqnuz.plugins import Plugins
from qaqnuz.store_contract import NOW, key
from qaqnuz.testing import write_config
from qaqnuz_postgres import PostgresSettings
from qaqnuz_postgres.store import PostgresStore

CONFIG = """\
[server]
store = "{dsn}"
secret_file = "qaqnuz.secret"

[plugins.postgresql]
pool_max = 4
key_cache_ttl = "30s"

[plans.growth]
entitled = true

[brands.acme]
plan = "growth"
roles = {{ viewer = ["orders.read"] }}
"""


def plugins() -> Plugins:
    return Plugins(autoload=False, explicit=[qaqnuz_postgres])


def test_the_store_is_registered_for_both_schemes() -> None:
    loaded = Plugins(autoload=False, explicit=["postgres"])  # by its entry point
    for scheme in ("postgresql", "postgres"):
        registered = loaded.provider(ProviderKind.STORE, scheme, "[server] store")
        assert registered.provider.settings_type is PostgresSettings
        assert registered.plugin.distribution == "qaqnuz-postgres"


def test_the_plugin_module_loads_no_driver() -> None:
    code = "import sys, qaqnuz_postgres; qaqnuz_postgres.qaqnuz_stores(); print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_settings_are_checked_together_and_located(tmp_path) -> None:
    with pytest.raises(ConfigError) as unknown:
        decode_settings({"pool_size": 3}, PostgresSettings, "[plugins.postgresql]")
    assert "pool_size" in str(unknown.value)
    settings = decode_settings(
        {"pool_min": 5, "pool_max": 2, "connect_timeout": "soon", "statement_timeout": "2h", "key_cache_size": -1},
        PostgresSettings,
        "[plugins.postgresql]",
    )
    ctx = StoreContext(
        section="plugins.postgresql",
        logger=logging.getLogger("test"),
        clock=time.time,
        base_dir=str(tmp_path),
        url="postgresql://u@127.0.0.1:5432/db?connect_timeout=3",
        server_secret=b"s" * 32,
        secrets=SecretResolver(str(tmp_path), lambda value: None),
    )
    with pytest.raises(ConfigError) as caught:
        qaqnuz_postgres.build(settings, ctx)
    problems = "\n".join(caught.value.problems)
    for expected in (
        "[plugins.postgresql] pool_min: 5 is more than pool_max = 2",
        "[plugins.postgresql] connect_timeout: 'soon' is not a duration",
        "[plugins.postgresql] statement_timeout: '2h' is out of range",
        "[plugins.postgresql] key_cache_size: must be 0",
        "[server] store: remove connect_timeout from the URL",
    ):
        assert expected in problems
    assert len(caught.value.problems) == 5


@pytest.mark.anyio
async def test_a_kernel_on_the_store_honours_a_revocation_from_another_process_within_a_second(
    qaqnuz_kernel, pg_database, tmp_path
) -> None:
    kernel = await qaqnuz_kernel(CONFIG.format(dsn=pg_database), plugins=[qaqnuz_postgres])
    assert isinstance(kernel.store, PostgresStore) and kernel.store.options.pool_max == 4
    raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="laptop")
    assert (await kernel.authenticate(raw)) is not None
    config = load_config(tmp_path / "qaqnuz.toml")
    cli = open_admin(config, plugins=plugins(), secret=load_secret(config))  # what `qaqnuz keys revoke` opens
    try:
        await cli.keys.revoke(record.key_id)
    finally:
        await cli.aclose()
    start = time.monotonic()
    while (await kernel.authenticate(raw)) is not None:
        assert time.monotonic() - start < 1.0
        await anyio.sleep(0.01)


def test_admin_commands_run_each_operation_in_its_own_event_loop(pg_database, tmp_path) -> None:
    path = write_config(tmp_path, CONFIG.format(dsn=pg_database))
    ctx = CommandContext(plugins())
    args = argparse.Namespace(config=str(path))
    _, record = ctx.with_admin(args, lambda admin: admin.keys.mint(brand="acme", scopes=["orders.read"], name="a"))
    assert [k.key_id for k in ctx.with_admin(args, lambda admin: admin.keys.list(None))] == [record.key_id]
    _, revoked = ctx.with_admin(args, lambda admin: admin.keys.revoke(record.key_id))
    assert revoked


def test_a_store_url_by_reference_is_masked_in_a_commands_log_lines(tmp_path, monkeypatch) -> None:
    """The CLI has no kernel to mask what it resolves: opening the admin pieces masks the URL and its password
    in the log lines of this process until they are closed."""
    import io
    import logging

    monkeypatch.setenv("QZ_STORE_URL", "postgresql://app:Sw0rdfish-9@127.0.0.1:1/db")
    path = write_config(tmp_path, CONFIG.format(dsn="X").replace('store = "X"', 'store = { env = "QZ_STORE_URL" }'))
    logger = logging.getLogger("qaqnuz")
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logger.addHandler(handler)
    try:
        admin = CommandContext(plugins()).admin(load_config(path))
        logger.warning("connecting with Sw0rdfish-9 to %s", "postgresql://app:Sw0rdfish-9@127.0.0.1:1/db")
        CommandContext(plugins()).run(admin.aclose)
        assert "Sw0rdfish-9" not in captured.getvalue() and "[redacted]" in captured.getvalue()
        assert not handler.filters  # released with the admin pieces
    finally:
        logger.removeHandler(handler)


def test_one_store_object_serves_several_event_loops(pg_database) -> None:
    """A pool belongs to the loop it was opened in; another loop gets its own, and its cache starts untrusted."""
    store = PostgresStore(pg_database)
    asyncio.run(store.insert_key(key("k1"), max_active=None, now=NOW))

    async def lookups() -> int:
        for _ in range(200):
            assert (await store.get_key("k1")) is not None
            await asyncio.sleep(0.005)
        return store.cache.hits if store.cache is not None else 0

    assert asyncio.run(lookups()) > 0
    assert asyncio.run(store.revoke_key("k1", NOW + 1))
    revoked = asyncio.run(store.get_key("k1"))
    assert revoked is not None and revoked.revoked_at == NOW + 1
    asyncio.run(store.aclose())


@pytest.mark.anyio
async def test_config_check_creates_nothing(qaqnuz_postgres, pg_database, tmp_path) -> None:
    path = write_config(tmp_path, CONFIG.format(dsn=pg_database))
    report = await check(load_config(path), plugins(), [])
    assert report.problems == ()
    database = pg_database.rsplit("/", 1)[1]
    assert qaqnuz_postgres.sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'qaqnuz%'", database) == "0"
