"""The built-in audit sink `file`: the chained JSON-lines file at `[server] audit_file`.

Each line chains to the one before it under a key derived from the server secret (see `qaqnuz.audit`), so
`qaqnuz audit verify` finds a removed, edited, reordered or re-chained line; `flush` makes the file durable
and returns the anchor the kernel keeps in the store, so a cut tail is found too. The server and the CLI
append to the same file under an exclusive lock. `[audit]` says how often it reaches the disk and when it
rotates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qaqnuz.audit import AuditLog
from qaqnuz.config import parse_duration, parse_size
from qaqnuz.contexts import AuditSinkContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Provider
from qaqnuz.store import AuditAnchor


class FileSink:
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    @property
    def path(self) -> str:
        return str(self.log.path)

    def write(self, record: Mapping[str, Any]) -> None:
        self.log.write(record)  # read, never kept or changed

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.log.write_many(records)

    def flush(self) -> AuditAnchor | None:
        return self.log.flush()

    def probe(self) -> None:
        self.log.probe()

    def close(self) -> None:
        self.log.close()


def _factory(settings: object, ctx: AuditSinkContext) -> FileSink:
    audit = ctx.audit
    return FileSink(
        AuditLog(
            ctx.audit_file,
            ctx.chain_key,
            fsync=audit.fsync,
            rotate_size=parse_size(audit.rotate_size),
            rotate_every=parse_duration(audit.rotate_every) if audit.rotate_every else 0.0,
            anchor_name=audit.anchor,
            clock=ctx.clock,
        )
    )


@hookimpl
def qaqnuz_audit_sinks() -> list[Provider]:
    return [Provider("file", _factory, "A chained JSON-lines file at [server] audit_file, anchored in the store.")]
