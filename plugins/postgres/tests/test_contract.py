"""The shared store contract (the same tests the built-in SQLite store passes), on a fresh database each."""

from __future__ import annotations

import pytest

from qaqnuz.store_contract import StoreContract
from qaqnuz_postgres.store import PostgresStore


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, make_store) -> PostgresStore:
        return make_store()
