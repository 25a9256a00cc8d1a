"""`qaqnuz demo` served over HTTP, driven by the real `mcp` Python client (issue 4, acceptance point 1).

The real command runs as a subprocess (`qaqnuz demo --dir … --port …`) with only the `http` transport and the
SQL pack loaded. The client connects in both protocol eras (`mcp.Client` default mode negotiates 2026-07-28,
`mode="legacy"` 2025-11-25), with the key in an `Authorization` header (the SDK's streamable HTTP client with
its own `httpx2` client) or in `?token=`. Approvals are decided with the real `qaqnuz` CLI and the shop
database is checked directly. Every demo is stopped with SIGTERM and must exit 0.

The rate-limit tests use their own demo folder: `qaqnuz demo --no-serve` writes the config (once; re-running
reuses it), the test then gives brand acme `limits = { per_key = "5/60s" }`, and the serving run picks it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")
KEY_RE = re.compile(r"qx_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}")
TOOLS = ["create_order", "get_order_status", "search_contacts"]  # the demo key's role: acme manager
PROTOCOLS = {"default": "2026-07-28", "legacy": "2025-11-25"}
RATE_LIMITED = "Rate limit exceeded. Please wait before sending more requests."
START_S = 20  # a demo starts in about a second
CALL_S = 20  # one whole client session
STOP_S = 20


def demo_env() -> dict[str, str]:
    """The README's `uv run qaqnuz demo`: every installed plugin autoloaded, nothing chosen for it (CI runs this
    on a fresh clone after the README's setup)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Demo:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    logs: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def config(self) -> Path:
        return self.folder / "qaqnuz.toml"

    @property
    def key(self) -> str:
        return (self.folder / "demo.key").read_text(encoding="utf-8").strip()

    @property
    def stdout(self) -> str:
        return (self.logs / "stdout.txt").read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr.txt").read_text(encoding="utf-8")

    def stop(self) -> int:
        """SIGTERM, and the exit code (bounded wait)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_S)


def _ready(demo: Demo, deadline: float) -> bool:
    """Poll /readyz until 200; False when the process exited first."""
    while time.monotonic() < deadline:
        if demo.process.poll() is not None:
            return False
        try:
            if httpx2.get(f"http://127.0.0.1:{demo.port}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the demo was not ready within {START_S}s:\n{demo.stderr}")


@contextlib.contextmanager
def serving(folder: Path, logs: Path) -> Iterator[Demo]:
    """`qaqnuz demo --dir folder --port <free>` serving until /readyz says ready; always killed afterwards."""
    deadline = time.monotonic() + START_S
    for attempt in range(3):  # a free port can be taken between choosing it and binding it: try another
        run_logs = logs / f"run{attempt}"
        run_logs.mkdir(parents=True)
        port = free_port()
        with (run_logs / "stdout.txt").open("wb") as out, (run_logs / "stderr.txt").open("wb") as err:
            process = subprocess.Popen(
                [QAQNUZ, "demo", "--dir", str(folder), "--port", str(port)],
                env=demo_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip
        demo = Demo(folder, port, process, run_logs)
        try:
            if _ready(demo, deadline):
                break
            demo.kill()
            if "address already in use" not in demo.stderr.lower():
                raise AssertionError(f"the demo exited with {process.returncode}:\n{demo.stderr}")
        except BaseException:
            demo.kill()
            raise
    else:
        raise AssertionError(f"no free port after 3 attempts:\n{demo.stderr}")
    try:
        yield demo
    finally:
        demo.kill()


def no_serve(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QAQNUZ, "demo", "--dir", str(folder), "--no-serve"],
        env=demo_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def client(demo: Demo, mode: str, form: str = "header", key: str | None = None):
    """An `mcp.Client` on the demo: default mode or legacy; the key as a Bearer header or as ?token=."""
    key = key or demo.key
    kwargs: dict[str, Any] = {} if mode == "default" else {"mode": mode}
    with anyio.fail_after(CALL_S):
        if form == "query":
            async with Client(f"{demo.url}?token={key}", **kwargs) as session:
                yield session
            return
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            async with Client(streamable_http_client(demo.url, http_client=http), **kwargs) as session:
                yield session


def shop(demo: Demo, sql: str, *params: Any) -> list[tuple]:
    conn = sqlite3.connect(demo.folder / "shop.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def approve(demo: Demo, approval_id: str) -> None:
    proc = await anyio.run_process(
        [QAQNUZ, "approvals", "approve", approval_id, "--config", str(demo.config)], env=demo_env(), check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()


def approval_id_of(result: Any) -> str:
    answer = result.structured_content
    assert result.is_error is True, answer
    assert answer["ok"] is False and answer["error_class"] == "permission", answer
    approval_id = answer["approval_id"]
    assert approval_id.startswith("apr_")
    assert "requires approval" in answer["sanitized_error"] and approval_id in answer["sanitized_error"]
    assert result.content[0].text == answer["sanitized_error"]
    return approval_id


def assert_success(result: Any, data: Any) -> None:
    assert result.is_error is False, result.structured_content
    assert result.structured_content == {"ok": True, "data": data, "truncated": False}
    assert json.loads(result.content[0].text) == data


# -- the demo as it is first run: set up, print the key, serve ----------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo-http")
    with serving(root / "demo", root / "logs") as running:
        yield running
        assert running.stop() == 0, running.stderr


def test_first_run_creates_the_demo_prints_the_key_and_serves(demo):
    key = demo.key
    assert KEY_RE.fullmatch(key)
    assert set(KEY_RE.findall(demo.stdout)) == {key}  # the printed key is the one in demo.key
    assert f"MCP endpoint: {demo.url}\n" in demo.stdout
    for name in ("qaqnuz.toml", "qaqnuz.secret", "demo.key"):
        assert f"created {demo.folder / name}" in demo.stderr
    assert (demo.folder / "shop.db").is_file()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "form"), [("default", "header"), ("legacy", "header"), ("default", "query"), ("legacy", "query")]
)
async def test_list_read_and_approval_flow(demo, mode, form):
    order = {"contact_id": 12, "total": 99.5, "reference": f"PO-http-{mode}-{form}"}
    status_1001 = shop(demo, "SELECT status FROM orders WHERE id = 'ord_1001'")[0][0]
    orders_before = shop(demo, "SELECT count(*) FROM orders")[0][0]
    next_id = shop(demo, "SELECT 'ord_' || (MAX(CAST(substr(id, 5) AS INTEGER)) + 1) FROM orders")[0][0]

    async with client(demo, mode, form) as session:
        assert session.protocol_version == PROTOCOLS[mode]
        listed = (await session.list_tools()).tools
        status = await session.call_tool("get_order_status", {"order_id": "ord_1001"})
        contacts = await session.call_tool("search_contacts", {"query": "acme", "limit": 2})

        first = await session.call_tool("create_order", order)
        again = await session.call_tool("create_order", order)
        approval_id = approval_id_of(first)
        assert approval_id_of(again) == approval_id  # still pending: the same request, no duplicate
        assert shop(demo, "SELECT count(*) FROM orders")[0][0] == orders_before  # nothing ran yet

        await approve(demo, approval_id)
        executed = await session.call_tool("create_order", order)
        third = await session.call_tool("create_order", order)

    assert sorted(t.name for t in listed) == TOOLS
    assert len(listed) == len(TOOLS)
    assert_success(status, {"order_id": "ord_1001", "status": status_1001})
    assert [c["company"] for c in contacts.structured_content["data"]] == ["Acme Corp", "Acme Corp"]
    assert contacts.structured_content["ok"] is True and contacts.is_error is False

    assert_success(executed, {"rowcount": 1, "rows": [{"order_id": next_id, "status": "pending"}]})
    assert approval_id_of(third) != approval_id  # the approval was consumed: the next identical call asks again
    assert shop(demo, "SELECT count(*) FROM orders")[0][0] == orders_before + 1  # exactly one new order
    assert shop(demo, "SELECT id, contact_id, status, total FROM orders WHERE reference = ?", order["reference"]) == [
        (next_id, 12, "pending", 99.5)
    ]


# -- the rate limit: a demo folder whose config was given a per-key limit between runs ----------------
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["default", "legacy"])
async def test_the_sixth_call_in_the_window_is_rate_limited(tmp_path, mode):
    """Five units a minute: five calls in the 2026-07-28 era; in the session era the session's opening
    (`initialize`) takes one unit itself, so the fifth call is the one refused."""
    folder = tmp_path / "demo"
    prepared = no_serve(folder)
    assert prepared.returncode == 0, prepared.stderr
    key = (folder / "demo.key").read_text(encoding="utf-8").strip()
    config = folder / "qaqnuz.toml"
    text = config.read_text(encoding="utf-8")
    brand = '[brands.acme]\nplan = "growth"\n'
    assert text.count(brand) == 1
    config.write_text(text.replace(brand, brand + 'limits = { per_key = "5/60s" }\n'), encoding="utf-8")

    with serving(folder, tmp_path / "logs") as demo:
        assert demo.key == key and set(KEY_RE.findall(demo.stdout)) == {key}  # reused, not minted again
        assert "created" not in demo.stderr  # the edited config was reused, not rewritten
        async with client(demo, mode) as session:
            allowed = 5 if mode == "default" else 4
            admitted = [await session.call_tool("get_order_status", {"order_id": "ord_1001"}) for _ in range(allowed)]
            sixth = await session.call_tool("get_order_status", {"order_id": "ord_1001"})
            listed = await session.list_tools()  # listing is never rate limited
        assert demo.stop() == 0, demo.stderr

    for result in admitted:
        assert result.is_error is False, result.structured_content
    assert sixth.is_error is True
    answer = sixth.structured_content
    assert answer["ok"] is False and answer["error_class"] == "retryable", answer
    assert answer["sanitized_error"] == RATE_LIMITED
    assert sixth.content[0].text == RATE_LIMITED
    assert 0 < answer["retry_hint"]["retry_after_ms"] <= 60_000
    assert sorted(t.name for t in listed.tools) == TOOLS
