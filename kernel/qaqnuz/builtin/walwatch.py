"""Has any connection committed to a SQLite database in WAL mode since we last looked? Answered from memory.

Every request looks its key up, and a revocation made by another process (`qaqnuz keys revoke`, another
worker) must take effect on the very next call. Asking SQLite (`PRAGMA data_version`) opens a read
transaction, with its file locks, on every request: measured under load, about 40-60 µs of a call's CPU.

SQLite's WAL-index (the `-shm` file every connection to a WAL database maps into memory) starts with a header
that every commit rewrites: SQLite's "WAL-mode File Format" document describes it for the unix VFS as two
48-byte copies of the same struct (`iVersion` 3007000, a change counter, `mxFrame`, salts and checksums), the
second copy written first. So reading those 96 bytes through a read-only map tells, without a system call or a
lock, whether anything was committed since the last look. Anything unexpected (no `-shm` file, another
version, the two copies differing because a writer is between them) answers "maybe", and the caller asks
SQLite itself. The caller reads the stamp before asking SQLite, so a commit that lands in between is seen
again on the next look.

The map stays valid while this process holds its own connection open: SQLite truncates or rebuilds the `-shm`
file only when it opens a database no other connection has open.
"""

from __future__ import annotations

import mmap
import os
import struct

#: `iVersion` of the WAL-index header (the only version since WAL mode appeared in SQLite 3.7.0).
WAL_INDEX_VERSION = 3007000
_HEADER = 48


class WalWatch:
    """The `-shm` header of one database, mapped read-only."""

    def __init__(self, map_: mmap.mmap) -> None:
        self._map = map_

    @classmethod
    def open(cls, database: str) -> WalWatch | None:
        """A watch on `database`'s WAL-index, or None when there is none this can read (the caller then asks
        SQLite every time)."""
        try:
            fd = os.open(database + "-shm", os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < 2 * _HEADER:
                return None
            map_ = mmap.mmap(fd, 2 * _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        watch = cls(map_)
        stamp = watch.stamp()
        if stamp is None or struct.unpack_from("=I", stamp)[0] != WAL_INDEX_VERSION:
            watch.close()
            return None
        return watch

    def stamp(self) -> bytes | None:
        """The current header, or None when it cannot be trusted right now (a writer is updating it)."""
        first = self._map[:_HEADER]
        return first if first == self._map[_HEADER : 2 * _HEADER] else None

    def close(self) -> None:
        self._map.close()
