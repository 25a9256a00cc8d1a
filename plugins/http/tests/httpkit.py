"""Helpers shared by the HTTP transport's tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SUPPORT = ROOT / "tests" / "support"
PLUGINS = ["http", "testkit_pack.plugin"]


def server_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(
        QAQNUZ_CONFIG=str(config),
        QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
        QAQNUZ_PLUGINS=",".join(PLUGINS),
        PYTHONPATH=os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def qaqnuz_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qaqnuz.cli", *args], env=server_env(config), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


class SseStream:
    """A legacy `GET /sse` stream read on a thread: the `/messages/` endpoint it announces, then the JSON-RPC
    messages it carries. The thread ends with the stream, or once it has passed the message a test waited for."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 60) -> None:
        import queue
        import threading

        import httpx

        self._lines: queue.Queue[str] = queue.Queue()
        self._done = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{base}/sse", headers=headers, timeout=timeout) as stream:
                for line in stream.iter_lines():
                    self._lines.put(line)
                    if self._done.is_set():
                        return

        threading.Thread(target=listen, daemon=True).start()
        self.endpoint = ""
        while not self.endpoint:
            line = self._lines.get(timeout=10)
            if line.startswith("data:") and "/messages/" in line:
                self.endpoint = line[5:].strip()

    def messages_until(self, request_id: object, timeout: float = 20) -> list[dict]:
        """Every message up to and including the answer to `request_id` (then the reader stops)."""
        import json

        messages = []
        while True:
            line = self._lines.get(timeout=timeout)
            if line.startswith("data:") and line[5:].strip().startswith("{"):
                message = json.loads(line[5:])
                messages.append(message)
                if message.get("id") == request_id:
                    self._done.set()
                    return messages
