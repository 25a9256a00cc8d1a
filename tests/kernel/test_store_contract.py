"""The built-in `sqlite` store against the shared store contract every store plugin runs."""

from __future__ import annotations

import pytest

from qaqnuz.builtin.sqlite_store import SqliteStore
from qaqnuz.store_contract import StoreContract


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path):
        store = SqliteStore(tmp_path / "store.db")
        yield store
        await store.aclose()


@pytest.mark.anyio
async def test_a_key_cached_by_one_connection_is_seen_revoked_after_another_revokes_it(tmp_path):
    """The sqlite store caches key lookups; another process's revocation must still apply on the next one."""
    from qaqnuz.store_contract import NOW, key

    server, cli = SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
    try:
        await cli.insert_key(key("k1"), max_active=None, now=NOW)
        assert (await server.get_key("k1")).revoked_at is None  # now cached by the server's connection
        assert (await server.get_key("k1")).revoked_at is None
        assert await cli.revoke_key("k1", NOW + 1)
        assert (await server.get_key("k1")).revoked_at == NOW + 1
        await cli.insert_key(key("k2"), max_active=None, now=NOW)
        assert await server.get_key("k2") is not None
    finally:
        await server.aclose()
        await cli.aclose()
