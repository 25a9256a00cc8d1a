"""Throwaway PostgreSQL and Redis servers on free loopback ports, for tests against the real thing.

A store, limiter or pack that talks to PostgreSQL or Redis is tested against a real server, never a fake:
these start one from the machine's own binaries (Debian's `postgresql` and `redis-server` packages) in a
private temporary folder and remove it when stopped. Both can be stopped, started again on the same port
and data, killed, or paused with SIGSTOP, so a test can show what a client does when its server dies,
comes back or hangs. The `qaqnuz_postgres` and `qaqnuz_redis` fixtures of `qaqnuz.testing` wrap them.

PostgreSQL refuses to run as root, so as root its folder is given to the `postgres` user and its commands
run through `runuser -u postgres --`.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_START_TIMEOUT = 30.0


class ServerMissing(RuntimeError):
    """The server's binaries are not installed on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps each major under /usr/lib/postgresql)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, trusting local connections as `postgres`."""

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise ServerMissing("PostgreSQL binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
        self.bin_dir = bin_dir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="qaqnuz-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.base, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
                  "--no-sync")  # fmt: skip

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_root else []
        done = subprocess.run(  # noqa: S603 - the machine's own PostgreSQL tools
            [*prefix, str(self.bin_dir / tool), *args], check=False, timeout=timeout, capture_output=True, text=True
        )
        if done.returncode != 0:
            server_log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}\n{server_log}")

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stop at once (open connections are cut, as when a database host dies)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql and return its unaligned output."""
        done = subprocess.run(  # noqa: S603 - the machine's own PostgreSQL tools
            [str(self.bin_dir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database),
             "-c", statement],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


class RedisServer:
    """A `redis-server` without persistence on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed; .ci/run installs it (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="qaqnuz-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.base), "--logfile", str(self.base / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603 - a fixed binary
        try:
            _wait_listening(self.port, _START_TIMEOUT)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as when its host dies."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


__all__ = ["PostgresServer", "RedisServer", "ServerMissing", "free_port", "postgres_bin"]
