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
