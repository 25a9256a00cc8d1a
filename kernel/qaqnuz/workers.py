"""`qaqnuz serve --workers N`: N processes answering on one listening socket, one kernel each.

The parent binds the socket (so a port taken or refused is reported once, before anything starts) and
starts N copies of `python -m qaqnuz serve` that inherit it (`--listen-fd`); the operating system hands
each new connection to whichever worker accepts first. Workers share nothing in memory: limits hold across
them because the limiter is shared (the embedded `sqlite` one in a file beside the store, or Redis),
revocations and approvals because the store is, and `/metrics` because prometheus-client's multiprocess
mode keeps every worker's values in one private folder that any worker's `/metrics` reads.

The parent only supervises: SIGTERM, SIGINT or SIGHUP is passed on once as SIGTERM (each worker finishes
its in-flight calls); a worker that dies is started again, after a pause that grows while workers keep
dying, the others serving meanwhile (but a worker that cannot start in the first place, a config error
say, stops them all: nothing would ever serve); and the metrics folder is removed at the end. Workers run
in their own session so a terminal's Ctrl-C reaches only the parent, and each stops by itself if the parent
vanishes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from qaqnuz.metrics import MULTIPROC_ENV

log = logging.getLogger("qaqnuz.workers")

#: The exit code of a worker that could not start because of its config or arguments: restarting it would
#: only fail again, so the whole server stops with it.
EXIT_USAGE = 2
#: A worker that dies sooner than this after its start counts as a failed start.
_EARLY = 5.0
#: More restarts than this within `_RESTART_WINDOW` seconds and the server gives up.
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0
#: A stop signal repeated within this many seconds is the first one delivered twice, not a second ask.
_REPEAT_WINDOW = 1.0


class Supervisor:
    """Starts, restarts and stops the workers; `run()` blocks until they are all gone."""

    def __init__(self, argv: Sequence[str], fd: int, count: int, *, shutdown_timeout: float) -> None:
        self.argv = list(argv)  # the worker's `serve` arguments, without --listen-fd
        self.fd = fd
        self.count = count
        self.shutdown_timeout = shutdown_timeout
        self.metrics_dir = tempfile.mkdtemp(prefix="qaqnuz-metrics-")  # 0700: private to this user
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # slot -> (process, started)
        self._stopping = False
        self._restarts: list[float] = []
        self._served: set[int] = set()  # slots whose worker once got past its start
        self._stop_asked = 0.0  # when the first stop signal came
        self._due: dict[int, float] = {}  # slot -> when to start its worker again

    def _spawn(self, slot: int) -> None:
        if self._stopping:  # a stop signal came while starting: start nothing more
            return
        env = dict(os.environ)
        env[MULTIPROC_ENV] = self.metrics_dir
        env["QAQNUZ_WORKER"] = str(slot)
        env["QAQNUZ_SUPERVISOR_PID"] = str(os.getpid())
        command = [sys.executable, "-m", "qaqnuz", *self.argv, "--listen-fd", str(self.fd)]
        process = subprocess.Popen(  # noqa: S603 - this interpreter running qaqnuz itself
            command, stdin=subprocess.DEVNULL, pass_fds=(self.fd,), env=env, start_new_session=True
        )
        self.workers[slot] = (process, time.monotonic())
        log.info("worker %d started (pid %d)", slot, process.pid)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping and time.monotonic() - self._stop_asked < _REPEAT_WINDOW:
            return  # the same stop delivered twice (a launcher forwarding it, and the sender), not a second ask
        if self._stopping:
            log.warning("received %s again; stopping the workers without waiting", signal.Signals(signum).name)
            for process, _ in self.workers.values():
                _send(process, signal.SIGKILL)
            return
        log.info("received %s; asking %d workers to finish in-flight calls", signal.Signals(signum).name,
                 len(self.workers))  # fmt: skip
        self._stopping = True
        self._stop_asked = time.monotonic()
        for process, _ in self.workers.values():
            _send(process, signal.SIGTERM)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        code = 0
        try:
            for slot in range(self.count):
                self._spawn(slot)
            deadline: float | None = None
            while self.workers or (self._due and not self._stopping):
                time.sleep(0.1)
                for slot, when in list(self._due.items()):
                    if time.monotonic() >= when and not self._stopping:
                        del self._due[slot]
                        self._spawn(slot)
                if self._stopping and deadline is None:
                    deadline = time.monotonic() + self.shutdown_timeout + 5
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("workers still running %.0fs after SIGTERM; killing them", self.shutdown_timeout + 5)
                    for process, _ in self.workers.values():
                        _send(process, signal.SIGKILL)
                    deadline = float("inf")
                code = self._reap(code)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for process, _ in self.workers.values():
                _send(process, signal.SIGKILL)
                process.wait()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("all workers stopped")
        return code

    def _reap(self, code: int) -> int:
        for slot, (process, started) in list(self.workers.items()):
            status = process.poll()
            if status is None:
                continue
            del self.workers[slot]
            _mark_dead(process.pid, self.metrics_dir)
            if self._stopping:
                continue
            failed_start = status == EXIT_USAGE or (time.monotonic() - started < _EARLY and status != 0)
            if failed_start and slot not in self._served:
                log.error("worker %d could not start (%s); stopping the others", slot, _status(status))
                self._stop_all()
                return status if status > 0 else 1
            self._served.add(slot)
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW] + [now]
            if len(self._restarts) > _MAX_RESTARTS:
                log.error("workers died %d times within %.0fs; stopping", len(self._restarts), _RESTART_WINDOW)
                self._stop_all()
                return 1
            pause = min(2.0 ** (len(self._restarts) - 1) - 1, 10.0)  # 0 s, then 1, 3, 7, 10
            log.warning("worker %d (pid %d) exited with %s; starting another in %.0fs", slot, process.pid,
                        _status(status), pause)  # fmt: skip
            self._due[slot] = now + pause
        for slot, (_, started) in self.workers.items():
            if slot not in self._served and time.monotonic() - started >= _EARLY:
                self._served.add(slot)
        return code

    def _stop_all(self) -> None:
        self._stopping = True
        self._due.clear()
        for process, _ in self.workers.values():
            _send(process, signal.SIGTERM)


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass


def _status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def _mark_dead(pid: int, folder: str) -> None:
    """Drop a dead worker's live gauges (its counters stay: they count what happened)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


def parent_gone() -> bool:
    """In a worker: true once the supervisor that started it is no longer its parent."""
    expected = os.environ.get("QAQNUZ_SUPERVISOR_PID", "")
    return bool(expected) and str(os.getppid()) != expected


def worker_slot() -> str:
    return os.environ.get("QAQNUZ_WORKER", "")


__all__ = ["Supervisor", "parent_gone", "worker_slot"]
