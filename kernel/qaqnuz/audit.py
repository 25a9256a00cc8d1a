"""The audit log: one hash-chained JSON line per decision, appended by the server and the CLI alike.

Each line carries `prev` (the previous line's hash) and `hash` = SHA-256 over `prev` and the line's
canonical body, so removing, reordering or editing a line breaks the chain at that point. Writers take
an exclusive `flock` and re-read the tail only when another process appended since their last write.
Arguments are never written, only their hash. A write that fails raises: the kernel counts it
(`qaqnuz_audit_errors_total`) and logs it loudly, so no line is ever dropped silently.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

GENESIS = "0" * 64
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()


def canonical_json(value: object) -> bytes:
    """Compact JSON with sorted keys: the one encoding every hash in qaqnuz is taken over."""
    return _encoder.encode(value)


def chain_hash(prev: str, body: dict[str, Any]) -> str:
    return _chain_digest(prev, _encoder.encode(body))


def _chain_digest(prev: str, encoded_body: bytes) -> str:
    """SHA-256 over the previous line's hash and this line's canonical body (without its own hash)."""
    return hashlib.sha256(prev.encode("ascii") + b"\n" + encoded_body).hexdigest()


class AuditLog:
    """Appends records to one file; the descriptor stays open and is reopened if the file is replaced."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_hash = GENESIS
        self._known_size = -1
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def _open(self) -> int:
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._inode:
            return self._fd
        self.close()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        self._fd, self._inode, self._known_size = fd, (st.st_dev, st.st_ino), -1
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, record: Mapping[str, Any]) -> str:
        """Append one record; returns its hash."""
        return self.write_many((record,))[-1]

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Append records in order with one lock and one write; returns their hashes."""
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size != self._known_size:  # another process appended since our last line
                    self._last_hash = _tail_hash(fd, size)
                digests: list[str] = []
                lines: list[bytes] = []
                prev = self._last_hash
                for record in records:
                    body = {k: v for k, v in record.items() if v is not None}  # a fresh dict: the caller's stays
                    body["prev"] = prev
                    encoded = _encoder.encode(body)  # encoded once: hashed, then written with the hash added last
                    prev = _chain_digest(prev, encoded)
                    lines.append(b'%s,"hash":"%s"}\n' % (encoded[:-1], prev.encode("ascii")))
                    digests.append(prev)
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                view = memoryview(data)
                while view:  # a short write (a full disk) goes on until it raises
                    view = view[os.write(fd, view) :]
                self._last_hash = prev
                self._known_size = size + len(data)
                return digests
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _tail_hash(fd: int, size: int) -> str:
    """The hash on the file's last line, reading backwards until that whole line is in hand."""
    if size == 0:
        return GENESIS
    end = size
    data = os.pread(fd, 1, end - 1)
    if data == b"\n":
        end -= 1
    chunk, start, tail = 65536, end, b""
    while start > 0:
        start = max(0, start - chunk)
        tail = os.pread(fd, end - start, start)
        if b"\n" in tail:
            break
    last = tail.rsplit(b"\n", 1)[-1]
    try:
        return str(_decoder.decode(last)["hash"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return hashlib.sha256(last).hexdigest()  # a damaged tail still chains, and verify reports it


class ChainCheck:
    """Checks the chain of one audit file, picking up where it stopped: the console shows the chain's state
    on every page, and re-reading a large file each time would cost more than the page.

    A file that was replaced or shrank is checked again from its first line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reset(None)

    def _reset(self, inode: tuple[int, int] | None) -> None:
        self.inode = inode
        self.offset = 0
        self.lines = 0
        self.prev = GENESIS
        self.problems: list[str] = []

    def check(self) -> tuple[int, list[str]]:
        """(lines checked so far, problems found so far) after reading what was appended since last time."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            self._reset(None)
            return 0, [f"{self.path}: no such audit file"]
        with handle:
            st = os.fstat(handle.fileno())
            inode = (st.st_dev, st.st_ino)
            if inode != self.inode or st.st_size < self.offset:
                self._reset(inode)
            handle.seek(self.offset)
            for raw in handle:
                if not raw.endswith(b"\n"):  # a line still being written: taken next time
                    break
                self.offset += len(raw)
                self.lines += 1
                self._line(self.lines, raw)
        return self.lines, list(self.problems)

    def _line(self, number: int, raw: bytes) -> None:
        try:
            record = _decoder.decode(raw)
            claimed = record.pop("hash")
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
            self.problems.append(f"line {number}: not a valid audit record")
            self.prev = hashlib.sha256(raw.rstrip(b"\n")).hexdigest()
            return
        if record.get("prev") != self.prev:
            self.problems.append(f"line {number}: chain broken (a line before it was removed, added or reordered)")
        if chain_hash(record.get("prev", ""), record) != claimed:
            self.problems.append(f"line {number}: contents do not match its hash (the line was edited)")
        self.prev = str(claimed)


def verify(path: str | Path) -> tuple[int, list[str]]:
    """(lines checked, problems): each problem names the line number and what broke."""
    if not Path(path).exists():
        return 0, [f"{path}: no such audit file"]
    check = ChainCheck(path)
    count, problems = check.check()
    with Path(path).open("rb") as handle:  # a last line without its newline is checked too
        handle.seek(check.offset)
        rest = handle.read()
    if rest:
        count += 1
        check._line(count, rest)
        problems = check.problems
    return count, problems
