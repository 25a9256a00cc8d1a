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

Descriptors: SQLite holds POSIX record locks on the `-shm` file, and closing ANY descriptor of a file drops
every such lock the process holds on it (SQLite's "How To Corrupt" document, 2.2); other processes would then
take this database for unused and rebuild its WAL-index under our feet. So the descriptor behind a map (and
the one `mmap` duplicates) is shared by every watch of the same file in this process, and closed only when no
watch is left and SQLite has deleted the file (after the last connection anywhere closed). That table is per
process because the locks it protects are.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading

#: `iVersion` of the WAL-index header (the only version since WAL mode appeared in SQLite 3.7.0).
WAL_INDEX_VERSION = 3007000
_HEADER = 48


class _Handle:
    """One open `-shm` file and its map, shared by the watches of this process."""

    def __init__(self, fds: list[int], map_: mmap.mmap | None) -> None:
        self.fds = fds
        self.map = map_
        self.users = 0


_handles: dict[tuple[int, int], _Handle] = {}
_handles_lock = threading.Lock()


class WalWatch:
    """The `-shm` header of one database, mapped read-only."""

    def __init__(self, handle: _Handle, key: tuple[int, int], usable: bool = True) -> None:
        self._handle = handle
        self._key = key
        self._usable = usable
        self._closed = False

    @classmethod
    def open(cls, database: str) -> WalWatch | None:
        """A watch on `database`'s WAL-index; None when there is no `-shm` file to open. A watch whose header this
        cannot read answers "maybe" to every look (the caller then asks SQLite every time). Call it while the
        store's own connection is open, and `close()` it after closing that connection, whatever it answered."""
        path = database + "-shm"
        with _handles_lock:
            try:
                st = os.stat(path)
            except OSError:
                return None
            key = (st.st_dev, st.st_ino)
            handle = _handles.get(key)
            if handle is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    return None
                opened = os.fstat(fd)
                key = (opened.st_dev, opened.st_ino)  # what was opened, if the file was replaced meanwhile
                handle = _handles.get(key)
                if handle is not None:
                    handle.fds.append(fd)  # never closed before the others of that file
                else:
                    map_: mmap.mmap | None = None
                    if opened.st_size >= 2 * _HEADER:
                        try:
                            map_ = mmap.mmap(fd, 2 * _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
                        except (OSError, ValueError):
                            map_ = None
                    handle = _handles[key] = _Handle([fd], map_)
            handle.users += 1
        watch = cls(handle, key)
        stamp = watch.stamp()
        watch._usable = stamp is not None and struct.unpack_from("=I", stamp)[0] == WAL_INDEX_VERSION
        return watch

    def stamp(self) -> bytes | None:
        """The current header, or None when it cannot be trusted right now (a writer is updating it)."""
        map_ = self._handle.map
        if map_ is None or self._closed or not self._usable:
            return None
        first = map_[:_HEADER]
        return first if first == map_[_HEADER : 2 * _HEADER] else None

    def close(self) -> None:
        """Stop watching. The descriptors of a file are closed only once no watch of it is left AND SQLite has
        deleted the file (it does when the last connection anywhere closes): a count of watches alone cannot
        know about a connection another thread is just opening, or one opened without a watch. Until then the
        handle stays for the next watch of the same file (one per file, however often stores come and go)."""
        if self._closed:
            return
        self._closed = True
        with _handles_lock:
            handle = self._handle
            handle.users -= 1
            if handle.users > 0 or not handle.fds:
                return
            try:
                in_use = os.fstat(handle.fds[0]).st_nlink > 0
            except OSError:
                in_use = True
            if in_use:
                return
            if _handles.get(self._key) is handle:
                del _handles[self._key]
            if handle.map is not None:
                handle.map.close()
            for fd in handle.fds:
                os.close(fd)
