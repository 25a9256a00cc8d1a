"""qaqnuz-postgres: the store provider for `[server] store = "postgresql://..."` (or `postgres://...`).

Keys, approvals, usage and last-used times live in PostgreSQL, shared by every server replica and the CLI;
the schema comes from versioned migrations (`qaqnuz_postgres.migrations`), applied on first use under an
advisory lock or on purpose through the store's `migrate()`. See README.md.

This module only registers the provider: the command line loads it on every start, so it imports no database
driver; `qaqnuz_postgres.store` (psycopg, the pool) loads when a config selects the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qaqnuz import Provider, StoreContext, hookimpl

from .settings import PostgresSettings

if TYPE_CHECKING:
    from .store import PostgresStore

__all__ = ["PostgresSettings", "PostgresStore", "build", "qaqnuz_stores"]

DESCRIPTION = "PostgreSQL: keys, approvals and usage shared by every replica ({url})."


def build(settings: PostgresSettings, ctx: StoreContext) -> PostgresStore:
    from .store import build as build_store

    return build_store(settings, ctx)


@hookimpl
def qaqnuz_stores() -> list[Provider]:
    return [
        Provider(scheme, build, DESCRIPTION.format(url=f"{scheme}://user@host/db"), PostgresSettings)
        for scheme in ("postgresql", "postgres")
    ]


def __getattr__(name: str) -> Any:
    """The store class, imported on first use."""
    if name == "PostgresStore":
        from .store import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'qaqnuz_postgres' has no attribute {name!r}")
