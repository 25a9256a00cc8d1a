"""The store's schema as an ordered list of versioned migrations, and how they are applied.

Every replica runs `apply` when it first touches the store (and `qaqnuz store migrate` runs it on purpose), so
several may run it at the same moment: the pending migrations are applied in one transaction that first takes
a transaction-scoped advisory lock, so replicas queue behind each other, and the second finds nothing left to
do. A migration is recorded in `qaqnuz_schema_migrations` in the same transaction that applies it, so a
failure leaves no half-applied version behind. Once a version is released its SQL never changes; a change is a
new version appended to `MIGRATIONS`.

Times are seconds since the epoch in `double precision`, as the kernel hands them over (they round-trip
exactly); identifiers use the "C" collation so listings sort the same on every server, whatever its locale.
A trigger announces every change of a key row on the channel `qaqnuz_keys` (see `listener`); it fires for the
fields authentication reads, not for `last_used_at`, which the kernel writes in batches.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

#: `pg_advisory_xact_lock` key of the migration lock ("qaqnuz" in ASCII; any fixed bigint would do).
LOCK = 0x7161716E757A
TABLE = "qaqnuz_schema_migrations"
CHANNEL = "qaqnuz_keys"
#: A payload that drops every cached key (TRUNCATE, a manual repair).
EVERYTHING = "*"


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


V1 = """
CREATE TABLE qaqnuz_keys (
    key_id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    brand text COLLATE "C" NOT NULL,
    role text NOT NULL,
    scopes text[] NOT NULL,
    hash text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision,
    revoked_at double precision,
    last_used_at double precision,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX qaqnuz_keys_brand ON qaqnuz_keys (brand, created_at, seq);

CREATE TABLE qaqnuz_approvals (
    approval_id text COLLATE "C" PRIMARY KEY,
    brand text COLLATE "C" NOT NULL,
    key_id text COLLATE "C" NOT NULL,
    key_name text NOT NULL DEFAULT '',
    tool text NOT NULL,
    args_hash text NOT NULL,
    tool_digest text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    decided_at double precision,
    decided_by text,
    reason text,
    valid_until double precision,
    consumed_at double precision,
    closed boolean NOT NULL DEFAULT false,
    arguments text,
    arguments_truncated boolean NOT NULL DEFAULT false,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX qaqnuz_approvals_call ON qaqnuz_approvals (brand, key_id, tool, args_hash, tool_digest)
    WHERE NOT closed;
CREATE INDEX qaqnuz_approvals_pending ON qaqnuz_approvals (key_id) WHERE status = 'pending' AND NOT closed;
CREATE INDEX qaqnuz_approvals_open ON qaqnuz_approvals (brand, created_at) WHERE NOT closed;

CREATE TABLE qaqnuz_usage (
    brand text COLLATE "C" NOT NULL,
    month text COLLATE "C" NOT NULL,
    calls bigint NOT NULL,
    PRIMARY KEY (brand, month)
);

CREATE FUNCTION qaqnuz_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('qaqnuz_keys', '*');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('qaqnuz_keys', OLD.key_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('qaqnuz_keys', NEW.key_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER qaqnuz_keys_changed
    AFTER INSERT OR DELETE
        OR UPDATE OF key_id, name, brand, role, scopes, hash, created_at, expires_at, revoked_at
    ON qaqnuz_keys FOR EACH ROW EXECUTE FUNCTION qaqnuz_keys_notify();
CREATE TRIGGER qaqnuz_keys_truncated
    AFTER TRUNCATE ON qaqnuz_keys FOR EACH STATEMENT EXECUTE FUNCTION qaqnuz_keys_notify();
"""

V2 = """
CREATE TABLE qaqnuz_console_users (
    name text PRIMARY KEY,
    role text NOT NULL,
    brand text,
    password_hash text,
    created_at double precision NOT NULL,
    sessions_after double precision NOT NULL DEFAULT 0
);
"""

V3 = """
CREATE TABLE qaqnuz_audit_anchors (
    name text PRIMARY KEY,
    seq bigint NOT NULL,
    hash text NOT NULL,
    file text NOT NULL,
    "offset" bigint NOT NULL,
    time double precision NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "0001_keys_approvals_usage", V1),
    Migration(2, "0002_console_users", V2),
    Migration(3, "0003_audit_anchors", V3),
)


async def applied(conn: Any) -> dict[int, str] | None:
    """The versions recorded in the database (None: not even the migrations table exists)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute(f"SELECT version, name FROM {TABLE}")
    return {int(version): str(name) for version, name in await cur.fetchall()}


def missing(versions: dict[int, str] | None) -> list[Migration]:
    return [m for m in MIGRATIONS if versions is None or m.version not in versions]


async def apply(conn: Any, *, statement_seconds: float, logger: logging.Logger) -> list[str]:
    """Apply what is missing on `conn` (an autocommit connection); the names applied by this call.

    Up to date costs two reads and no lock, so every process can call this on start. Otherwise one transaction
    takes the lock, reads the versions again (another replica may just have applied them) and applies the rest.
    Waiting for the lock counts against `statement_seconds`: a request's first use of the store waits no
    longer than one statement may take while another replica migrates, then is refused as retryable.
    """
    versions = await applied(conn)
    if not missing(versions):
        _warn_newer(versions, logger)
        return []
    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{int(statement_seconds * 1000)}ms"])
        await conn.execute("SELECT pg_advisory_xact_lock(%s::bigint)", [LOCK])
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        versions = await applied(conn)
        for migration in missing(versions):
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {TABLE} (version, name) VALUES (%s, %s)", [migration.version, migration.name]
            )
            done.append(migration.name)
    for name in done:
        logger.info("store schema: applied migration %s", name)
    _warn_newer(versions, logger)
    return done


def _warn_newer(versions: dict[int, str] | None, logger: logging.Logger) -> None:
    """A newer release migrated this database: keep working (its migrations only add), but say so."""
    newer = sorted(v for v in versions or {} if v > MIGRATIONS[-1].version)
    if newer:
        logger.warning(
            "store schema: the database has migration(s) %s, newer than this qaqnuz-postgres knows (up to %d); "
            "upgrade it on every replica",
            newer,
            MIGRATIONS[-1].version,
        )
