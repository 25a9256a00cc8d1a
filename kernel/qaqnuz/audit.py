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


def verify(path: str | Path) -> tuple[int, list[str]]:
    """(lines checked, problems): each problem names the line number and what broke."""
    problems: list[str] = []
    prev = GENESIS
    count = 0
    try:
        handle = Path(path).open("rb")
    except FileNotFoundError:
        return 0, [f"{path}: no such audit file"]
    with handle:
        for number, raw in enumerate(handle, start=1):
            count = number
            try:
                record = _decoder.decode(raw)
                claimed = record.pop("hash")
            except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
                problems.append(f"line {number}: not a valid audit record")
                prev = hashlib.sha256(raw.rstrip(b"\n")).hexdigest()
                continue
            if record.get("prev") != prev:
                problems.append(f"line {number}: chain broken (a line before it was removed, added or reordered)")
            if chain_hash(record.get("prev", ""), record) != claimed:
                problems.append(f"line {number}: contents do not match its hash (the line was edited)")
            prev = claimed
    return count, problems
