"""`qaqnuz serve` in a child process, as an operator starts it: its stderr collected, its address read from it."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

SERVING = r"serving MCP over HTTP at http://127\.0\.0\.1:(\d+)/mcp"


class ServeProcess:
    """`python -m qaqnuz serve ARGS` with `env`; `wait_for(pattern)` reads its log as it is written."""

    def __init__(self, args: Sequence[str], env: dict[str, str], *, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qaqnuz", "serve", *args],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60, count: int = 1) -> re.Match[str]:
        """The first match of `pattern` once it occurs `count` times in the log; fails if the server exits."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log))
            if len(found) >= count:
                return found[0]
            assert self.process.poll() is None, f"the server exited ({self.process.returncode}):\n{self.log}"
            assert time.monotonic() < deadline, f"no {pattern!r} after {timeout:.0f}s:\n{self.log}"
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as an operator stops it (a supervisor then removes what it made); SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
