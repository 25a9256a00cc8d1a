"""The shared store contract (the same tests the built-in SQLite store passes), on a fresh database each."""

from __future__ import annotations

import pytest

from qaqnuz.store_contract import NOW, StoreContract, key
from qaqnuz_postgres.store import PostgresStore


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, make_store) -> PostgresStore:
        return make_store()


@pytest.mark.anyio
async def test_a_busy_process_with_descriptors_past_1024_still_reaches_postgres(make_store) -> None:
    """A server with a thousand clients holds descriptors past 1024, where `select()` refuses to look: the
    check of an idle pooled connection must still work there."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            pytest.skip(f"this machine allows {hard} open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    held = [socket.socket() for _ in range(1100)]  # the low descriptors taken: the store's come after
    try:
        assert min(sock.fileno() for sock in held[-10:]) > 1024
        store = make_store()
        await store.insert_key(key("k1"), max_active=None, now=NOW)
        store.cache.clear()
        assert (await store.get_key("k1")) is not None  # an idle pooled connection, checked, reused
        store.cache.clear()
        assert (await store.get_key("k1")) is not None
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
