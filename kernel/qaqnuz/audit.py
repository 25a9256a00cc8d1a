"""The audit log: one chained JSON line per decision, appended by the server and the CLI alike.

Each line carries `seq` (its position in the whole log, from 1), `prev` (the previous line's hash) and
`hash` = HMAC-SHA-256 over `prev` and the line's canonical body, under a key derived from the server secret.
Removing, reordering or editing a line breaks the chain at that point, and re-chaining a whole file needs
the secret: a file re-hashed with plain SHA-256 fails every line. Cutting lines off the end leaves a valid
chain, so the newest record a writer has made durable is anchored in the store (`flush`, `AuditAnchor`) and
`verify` checks the log still reaches it.

The log is a set of files: the live one (`[server] audit_file`) and the ones rotation renamed away
(`<name>.000001`, `<name>.000002`, ..., oldest first); the chain and `seq` go on across them. Writers take
an exclusive `flock` on `<name>.lock` (never rotated), so a rotation and every append are one at a time
across processes, and re-read the tail only when another process appended since their last write.
Arguments are never written, only their hash. A write that fails raises: the kernel counts it
(`qaqnuz_audit_errors_total`) and logs it loudly, so no line is ever dropped silently.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgspec

from qaqnuz.store import AuditAnchor

GENESIS = "0" * 64
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()
_HASH_FIELD = b',"hash":"'
_ROTATED_RE = re.compile(r"\.(\d{6,})\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TAIL_WINDOW = 1 << 16


def canonical_json(value: object) -> bytes:
    """Compact JSON with sorted keys: the one encoding every hash in qaqnuz is taken over."""
    return _encoder.encode(value)


def chain_key(server_secret: bytes) -> bytes:
    """The audit chain's HMAC key: derived, so the log's key is never the secret itself nor any other key."""
    return hmac.new(server_secret, b"qaqnuz audit chain v1", hashlib.sha256).digest()


def chain_hash(key: bytes, prev: str, body: Mapping[str, Any]) -> str:
    """The hash a record with this body (with `prev` and `seq`, without `hash`) must carry."""
    return _Hmac(key).hex(prev.encode("ascii") + b"\n" + _encoder.encode(body))


class _Hmac:
    """HMAC-SHA-256 (RFC 2104) with the key's inner and outer pads hashed once: each record then costs two
    hash copies instead of a whole keyed setup, which more than halves the audit's cost per call (the result
    is `hmac.digest(key, msg, "sha256")`, byte for byte; a test holds it to that)."""

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hex(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def rotated_files(path: str | Path) -> list[Path]:
    """The files rotation renamed away from `path`, oldest first."""
    path = Path(path)
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    prefix = path.name
    for name in names:
        if name.startswith(prefix):
            match = _ROTATED_RE.fullmatch(name[len(prefix) :])
            if match:
                found.append((int(match.group(1)), path.parent / name))
    return [p for _, p in sorted(found)]


def audit_files(path: str | Path) -> list[Path]:
    """The whole log, oldest first: every rotated file, then the live one (if it exists)."""
    files = rotated_files(path)
    if Path(path).exists():
        files.append(Path(path))
    return files


class AuditLog:
    """Appends records to the live file, rotating it by size or age; the descriptor stays open and is
    reopened if another process rotated or replaced the file.

    `fsync = "every"` flushes each write to disk before returning; `"batch"` leaves that to `flush()`, which
    the kernel calls every `[audit] fsync_interval` off the serving loop (and which returns the anchor)."""

    def __init__(
        self,
        path: str | Path,
        key: bytes,
        *,
        fsync: str = "batch",
        rotate_size: int = 0,
        rotate_every: float = 0.0,
        anchor_name: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._mac = _Hmac(key)
        self._fsync_every = fsync == "every"
        self._rotate_size = rotate_size
        self._rotate_every = rotate_every
        self.anchor_name = anchor_name or os.path.abspath(self.path)
        self._clock = clock
        self._lock = threading.Lock()
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._known_size = -1
        self._last_hash = GENESIS
        self._last_seq = 0
        self._file_started: float | None = None  # time of the live file's first record (rotation by age)
        self._tip: tuple[str, int, int, str] | None = None  # (file, end offset, seq, hash) of our newest record
        self._anchored_seq = -1

    # -- files -------------------------------------------------------------------------------------------
    def _open(self) -> int:
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._inode:
            return self._fd
        self._close_data()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        self._fd, self._inode, self._known_size = fd, (st.st_dev, st.st_ino), -1
        return fd

    def _close_data(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_data()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _locked(self) -> int:
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # here, not at start: a failure is a failed write
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self._lock_fd

    def probe(self) -> None:
        """Open the files a write needs, raising if they cannot be: a server finds an unwritable log at start,
        not at its first call."""
        with self._lock:
            lock_fd = self._locked()
            try:
                self._open()
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    # -- writing -----------------------------------------------------------------------------------------
    def write(self, record: Mapping[str, Any]) -> str:
        """Append one record; returns its hash."""
        return self.write_many((record,))[-1]

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Append records in order with one lock and one write; returns their hashes."""
        with self._lock:
            lock_fd = self._locked()
            try:
                fd = self._open()
                size = os.fstat(fd).st_size
                removed = 0
                if size != self._known_size:  # another process appended (or rotated) since our last line
                    size, removed = _drop_torn_tail(fd, size)
                    self._read_tail(fd, size)
                if size and self._due(size):
                    fd, size = self._rotate(fd), 0
                if removed:  # said in the chain itself, before what this write brings
                    note = {"time": round(self._clock(), 6), "step": "audit", "outcome": "torn_tail_removed",
                            "bytes": removed}  # fmt: skip
                    records = [note, *records]
                digests: list[str] = []
                lines: list[bytes] = []
                prev, seq = self._last_hash, self._last_seq
                for record in records:
                    body = {k: v for k, v in record.items() if v is not None}  # a fresh dict: the caller's stays
                    seq += 1
                    body["prev"], body["seq"] = prev, seq
                    encoded = _encoder.encode(body)  # encoded once: hashed, then written with the hash added last
                    prev = self._mac.hex(prev.encode("ascii") + b"\n" + encoded)
                    lines.append(b'%s,"hash":"%s"}\n' % (encoded[:-1], prev.encode("ascii")))
                    digests.append(prev)
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                view = memoryview(data)
                try:
                    while view:  # a short write (a full disk) goes on until it raises
                        view = view[os.write(fd, view) :]
                except BaseException:
                    self._known_size = -1  # part of it may be there: read the tail again before the next write
                    raise
                if self._fsync_every:
                    os.fsync(fd)
                if size == 0:
                    self._file_started = _record_time(records[0], self._clock)
                self._last_hash, self._last_seq = prev, seq
                self._known_size = size + len(data)
                self._tip = (self.path.name, self._known_size, seq, prev)
                return digests[1:] if removed else digests
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _due(self, size: int) -> bool:
        if self._rotate_size and size >= self._rotate_size:
            return True
        if self._rotate_every and self._file_started is not None:
            return self._clock() - self._file_started >= self._rotate_every
        return False

    def _rotate(self, fd: int) -> int:
        """Rename the live file to the next rotated name and start a new one; the chain goes on."""
        os.fsync(fd)
        existing = rotated_files(self.path)
        index = int(_ROTATED_RE.search(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{index:06d}"))
        self._close_data()
        self._file_started = None
        fd = self._open()
        _fsync_dir(self.path.parent)  # both names, the rotated one and the new live one, survive a crash
        return fd

    def _read_tail(self, fd: int, size: int) -> None:
        """Learn the last record's hash and seq (from the newest rotated file when the live one is empty),
        and when the live file began."""
        if size > 0:
            self._last_hash, self._last_seq = _tail(fd, size)
            self._file_started = _first_time(fd) if self._rotate_every else None
            return
        self._file_started = None
        older = rotated_files(self.path)
        if not older:
            self._last_hash, self._last_seq = GENESIS, 0
            return
        with older[-1].open("rb") as handle:
            last = os.fstat(handle.fileno()).st_size
            self._last_hash, self._last_seq = _tail(handle.fileno(), last) if last else (GENESIS, 0)

    # -- durability --------------------------------------------------------------------------------------
    def flush(self) -> AuditAnchor | None:
        """Flush the live file to disk and return the anchor of this writer's newest record (None: nothing
        new since the last anchor). The disk wait happens on a duplicate descriptor, outside the lock, so
        writers on the serving loop never wait for it."""
        with self._lock:
            if self._fd is None or self._tip is None:
                return None
            fd, tip = os.dup(self._fd), self._tip
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        name, offset, seq, digest = tip
        if seq <= self._anchored_seq:
            return None
        self._anchored_seq = seq
        return AuditAnchor(name=self.anchor_name, seq=seq, hash=digest, file=name, offset=offset, time=self._clock())


def _drop_torn_tail(fd: int, size: int) -> tuple[int, int]:
    """Cut a last line that has no newline: a write the process was killed in the middle of (the kernel may
    stop a write to a file between two pages when a SIGKILL arrives). Its record never took effect: an
    answer leaves only after its record is written, and a tool runs only after its intent is. Returns (the
    size left, bytes removed); the writer then says so in the chain (`torn_tail_removed`)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size, 0
    end = size
    while end > 0:
        start = max(0, end - _TAIL_WINDOW)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            break
        end = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    return keep, size - keep


def _record_time(record: Mapping[str, Any], clock: Callable[[], float]) -> float:
    moment = record.get("time")
    return float(moment) if isinstance(moment, int | float) else clock()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: without it, a crash may bring back the old name."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tail(fd: int, size: int) -> tuple[str, int]:
    """(hash, seq) of the file's last line, reading backwards until that whole line is in hand. A damaged
    last line still chains (by its SHA-256, which `verify` reports), numbered after the last good one."""
    end = size
    if os.pread(fd, 1, end - 1) == b"\n":
        end -= 1
    start, tail = end, b""
    while start > 0:
        start = max(0, start - _TAIL_WINDOW)
        tail = os.pread(fd, end - start, start)
        if b"\n" in tail:
            break
    lines = tail.split(b"\n")
    last = lines[-1]
    parsed = _parse(last)
    if parsed is not None:
        return parsed
    for back, line in enumerate(reversed(lines[:-1]), start=1):
        earlier = _parse(line)
        if earlier is not None:
            return hashlib.sha256(last).hexdigest(), earlier[1] + back
    # no record in reach: numbered as `verify` numbers lines it cannot read, one each from the start
    return hashlib.sha256(last).hexdigest(), len(lines) if start == 0 else 0


def _parse(line: bytes) -> tuple[str, int] | None:
    """(hash, seq) of a record line, or None for anything else (then it is chained as damaged)."""
    try:
        record = _decoder.decode(line)
        digest, seq, prev = record["hash"], record["seq"], record["prev"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return None
    if not (isinstance(digest, str) and _HEX64.fullmatch(digest) and type(seq) is int):
        return None
    if not (isinstance(prev, str) and prev.isascii()):  # what `verify` cannot read either: damaged alike
        return None
    return digest, seq


def _first_time(fd: int) -> float | None:
    head = os.pread(fd, _TAIL_WINDOW, 0).split(b"\n", 1)[0]
    try:
        moment = _decoder.decode(head).get("time")
    except (msgspec.DecodeError, AttributeError):
        return None
    return float(moment) if isinstance(moment, int | float) else None


# -- checking ----------------------------------------------------------------------------------------------
@attrs.define
class _FileProgress:
    inode: tuple[int, int]
    name: str
    offset: int = 0
    lines: int = 0


class ChainCheck:
    """Checks the chain across the whole set of audit files, picking up where it stopped: the console shows
    the chain's state on every page, and re-reading a large log each time would cost more than the page.
    Rotated files keep their inode when renamed, so a rotation does not start the check over; a file that
    was replaced, removed or cut short does.

    A last line without its newline is never checked: in a rotated file it is damage (reported), in the live
    file a write under way or one a crash cut short; `final=True` (a one-off `verify`) notes its size.
    `watch_seq` remembers where the record with that `seq` is (the store's anchor)."""

    def __init__(self, path: str | Path, key: bytes, *, final: bool = False, watch_seq: int | None = None) -> None:
        self.path = Path(path)
        self._mac = _Hmac(key)
        self._final = final
        self._watch = watch_seq
        self._reset()

    def _reset(self) -> None:
        self.files: list[_FileProgress] = []
        self.count = 0
        self.prev = GENESIS
        self.seq = 0
        self.problems: list[str] = []
        #: call_id -> where and what, for each `intent` no later record resolved (yet).
        self.open_intents: dict[str, str] = {}
        #: (file, end offset, hash) of the record `watch_seq` names, once seen.
        self.watched: tuple[str, int, str] | None = None
        #: Bytes after the live file's last newline (`final` only): a write cut short, not yet a record.
        self.torn = 0

    def check(self) -> tuple[int, list[str]]:
        """(records checked so far, problems found so far) after reading what was appended since last time."""
        present: list[tuple[Path, tuple[int, int], int]] = []
        for file in audit_files(self.path):
            try:
                st = file.stat()
            except FileNotFoundError:  # rotated away between the listing and now: the next check sees it
                continue
            present.append((file, (st.st_dev, st.st_ino), st.st_size))
        if not present:
            self._reset()
            return 0, [f"{self.path}: no such audit file"]
        done = len(self.files)
        if [p.inode for p in self.files] != [inode for _, inode, _ in present[:done]] or (
            done and present[done - 1][2] < self.files[-1].offset
        ):
            self._reset()
            done = 0
        for index in range(max(done - 1, 0), len(present)):
            file, inode, _ = present[index]
            if index == len(self.files):
                self.files.append(_FileProgress(inode, file.name))
            progress = self.files[index]
            progress.name = file.name  # the live file's progress carries over to its rotated name
            self._read(file, progress, complete=index < len(present) - 1)
        return self.count, list(self.problems)

    def _read(self, file: Path, progress: _FileProgress, *, complete: bool) -> None:
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(progress.offset)
            for raw in handle:
                if not raw.endswith(b"\n") and not complete:
                    # a line still being written, or the end of one a crash cut short (the next write removes it)
                    if self._final:
                        self.torn = len(raw)
                    break
                progress.offset += len(raw)
                progress.lines += 1
                self._line(progress, raw.rstrip(b"\n"))

    def _line(self, progress: _FileProgress, raw: bytes) -> None:
        where = f"{progress.name}:{progress.lines}"
        self.count += 1
        cut = raw.rfind(_HASH_FIELD)
        claimed = raw[cut + len(_HASH_FIELD) : -2].decode("ascii", "replace") if cut > 0 else ""
        body_bytes = raw[:cut] + b"}" if cut > 0 else b""
        try:
            if not raw.endswith(b'"}') or not _HEX64.fullmatch(claimed):
                raise ValueError
            body = _decoder.decode(body_bytes)
            seq, prev = body["seq"], body["prev"]
            if type(seq) is not int or not isinstance(prev, str) or not prev.isascii():
                raise ValueError
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            self.problems.append(f"{where}: not a valid audit record (cut short by a crash or a full disk, or not "
                                 f"written by qaqnuz)")  # fmt: skip
            self.prev, self.seq = hashlib.sha256(raw).hexdigest(), self.seq + 1
            return
        expected = self.seq + 1
        if not hmac.compare_digest(self._mac.hex(prev.encode("ascii") + b"\n" + body_bytes), claimed):
            self.problems.append(
                f"{where}: its hash does not match its contents under this server's secret (the record was "
                f"edited, forged or re-chained, or written under another secret)"
            )
        elif self.count == 1 and seq != 1:
            self.problems.append(f"{where}: the log starts at record {seq}; records 1 to {seq - 1} are missing "
                                 f"(older files were removed)")  # fmt: skip
        elif self.count > 1 and seq > expected:
            self.problems.append(f"{where}: records {expected} to {seq - 1} are missing before it (removed)")
        elif self.count > 1 and seq < expected:
            self.problems.append(f"{where}: record {seq} is out of order (reordered or repeated)")
        elif prev != (self.prev if self.count > 1 else GENESIS):
            self.problems.append(f"{where}: chain broken (the record before it was removed, added or changed)")
        self.prev, self.seq = claimed, seq
        if seq == self._watch:
            self.watched = (progress.name, progress.offset, claimed)
        call_id = body.get("call_id")
        if isinstance(call_id, str):
            if body.get("outcome") == "intent":
                self.open_intents[call_id] = (
                    f"{where}: {call_id} tool {body.get('tool')} brand {body.get('brand')} key {body.get('key_id')}"
                )
            else:
                self.open_intents.pop(call_id, None)


@attrs.frozen
class Verdict:
    """What `verify` found: records checked, problems (each names file, line and why; the first is the first
    bad record), intents with no outcome (`unknown outcome`: the process stopped while the tool ran), and
    the files checked, oldest first."""

    count: int
    problems: list[str]
    unknown: list[str]
    files: list[str]
    #: Bytes of an unfinished last line in the live file (a write a crash cut short; the next write removes
    #: it and records that it did). Not a record, so not a problem.
    torn: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(path: str | Path, key: bytes, anchor: AuditAnchor | None = None) -> Verdict:
    """Check the whole log at `path` (rotated files too) and, with `anchor`, that it still reaches it."""
    check = ChainCheck(path, key, final=True, watch_seq=anchor.seq if anchor else None)
    count, problems = check.check()
    if anchor is not None:
        if check.watched is None and check.seq < anchor.seq:
            where = check.files[-1].name if check.files else Path(path).name
            problems.append(
                f"{where}: the log ends at record {check.seq}, but the store's anchor says record "
                f"{anchor.seq} was written (in {anchor.file}): records were cut off the end"
            )
        elif check.watched is not None and not hmac.compare_digest(check.watched[2], anchor.hash):
            problems.append(
                f"{check.watched[0]}: record {anchor.seq} is not the one the store anchored: the end of the log "
                f"was cut and written again"
            )
    return Verdict(count, problems, list(check.open_intents.values()), [p.name for p in check.files], check.torn)
