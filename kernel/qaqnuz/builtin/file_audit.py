"""The built-in audit sink `file`: the hash-chained JSON-lines file at `[server] audit_file`.

Each line chains to the one before it (see `qaqnuz.audit`), so `qaqnuz audit verify` finds a removed,
edited or reordered line. The server and the CLI append to the same file under an exclusive lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qaqnuz.audit import AuditLog
from qaqnuz.contexts import AuditSinkContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Provider


class FileSink:
    def __init__(self, path: str) -> None:
        self.log = AuditLog(path)

    @property
    def path(self) -> str:
        return str(self.log.path)

    def write(self, record: Mapping[str, Any]) -> None:
        self.log.write(record)  # read, never kept or changed

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.log.write_many(records)

    def close(self) -> None:
        self.log.close()


def _factory(settings: object, ctx: AuditSinkContext) -> FileSink:
    return FileSink(ctx.audit_file)


@hookimpl
def qaqnuz_audit_sinks() -> list[Provider]:
    return [Provider("file", _factory, "A hash-chained JSON-lines file at [server] audit_file.")]
