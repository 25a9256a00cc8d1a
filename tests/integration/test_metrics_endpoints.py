"""Metrics beyond the HTTP transport's own: the bounded per-tool duration label, the process and Python
collectors (in multiprocess mode too), and `serve --metrics-port` beside a stdio session."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters, stdio_client
from prometheus_client import generate_latest

from kit import kit_config, server_env
from qaqnuz.metrics import ALL_TOOLS, OTHER_TOOLS, Metrics
from qaqnuz.testing import connect, start_kernel, write_config
from qaqnuz.testservers import free_port

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent


def _with_limit(limit: int) -> str:
    return kit_config().replace("[server]\n", f"[server]\nmetrics_tool_limit = {limit}\n", 1)


async def test_each_brand_gets_at_most_the_limit_of_tool_labels_then_other(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, _with_limit(2)), plugins=["testkit_pack.plugin"])
    try:
        acme, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="a")
        globex, _ = await kernel.keys.mint(brand="globex", scopes=["orders.read"], name="g")
        async with connect(kernel, acme) as client:
            for tool, args in (("echo", {"message": "x"}), ("beta_echo", {"message": "x"}), ("big", {}),
                               ("slow", {"seconds": 0}), ("echo", {"message": "y"})):  # fmt: skip
                await client.call_tool(tool, args)
        async with connect(kernel, globex) as client:
            await client.call_tool("echo", {"message": "z"})
        count = kernel.metrics.registry.get_sample_value
        name = "qaqnuz_tool_call_duration_seconds_count"
        assert count(name, {"brand": "acme", "tool": "echo"}) == 2.0
        assert count(name, {"brand": "acme", "tool": "beta_echo"}) == 1.0
        assert count(name, {"brand": "acme", "tool": OTHER_TOOLS}) == 2.0  # big and slow: past the limit
        assert count(name, {"brand": "acme", "tool": "big"}) is None
        assert count(name, {"brand": "globex", "tool": "echo"}) == 1.0  # another brand has its own budget
        # the calls counter keeps every tool: it has no buckets to multiply
        assert count("qaqnuz_tool_calls_total", {"brand": "acme", "tool": "big", "outcome": "executed",
                                                 "error_class": ""}) == 1.0  # fmt: skip
    finally:
        await kernel.aclose()


async def test_a_limit_of_zero_keeps_no_tool_label(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, _with_limit(0)), plugins=["testkit_pack.plugin"])
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="a")
        async with connect(kernel, key) as client:
            await client.call_tool("echo", {"message": "x"})
            await client.call_tool("beta_echo", {"message": "x"})
        count = kernel.metrics.registry.get_sample_value
        assert count("qaqnuz_tool_call_duration_seconds_count", {"brand": "acme", "tool": ALL_TOOLS}) == 2.0
        assert count("qaqnuz_tool_call_duration_seconds_count", {"brand": "acme", "tool": "echo"}) is None
    finally:
        await kernel.aclose()


def test_a_reloaded_limit_applies_to_new_observations_and_keeps_the_first_tools():
    metrics = Metrics("t", tool_limit=3)
    for tool in ("a", "b", "c"):
        metrics.call("acme", tool, "executed", "", 0.01)
    metrics.set_tool_limit(1)
    for tool in ("a", "b", "d"):
        metrics.call("acme", tool, "executed", "", 0.01)
    count = metrics.registry.get_sample_value
    assert count("qaqnuz_tool_call_duration_seconds_count", {"brand": "acme", "tool": "a"}) == 2.0
    assert count("qaqnuz_tool_call_duration_seconds_count", {"brand": "acme", "tool": "b"}) == 1.0  # before
    assert count("qaqnuz_tool_call_duration_seconds_count", {"brand": "acme", "tool": OTHER_TOOLS}) == 2.0


def test_process_and_python_collectors_are_in_the_kernel_registry_and_the_merged_one(tmp_path, monkeypatch):
    from prometheus_client import REGISTRY

    own = generate_latest(Metrics("t").registry).decode()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    merged = generate_latest(Metrics("t").exposition).decode()
    for text in (own, merged):
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "python_gc_objects_collected_total", "python_info"):  # fmt: skip
            assert f"\n{name}" in text, name
    # the kernel's collectors never land in the global registry (two kernels in one process stay apart)
    assert not any(c in REGISTRY._collector_to_names for c in Metrics("t").process_collectors)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # a local URL of ours
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("command", ["serve", "qaqnuz-mcp"])
async def test_metrics_port_serves_the_stdio_servers_metrics_while_it_runs(tmp_path, command):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
    await kernel.aclose()
    port = free_port()
    if command == "serve":
        argv = [sys.executable, "-m", "qaqnuz.cli", "serve", "--transport", "stdio", "--metrics-port", str(port)]
    else:
        argv = [str(BIN / "qaqnuz-mcp"), "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=server_env(cfg, key))
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            assert (await client.call_tool("echo", {"message": "counted"})).is_error is False
            status, text = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert 'qaqnuz_tool_calls_total{brand="acme",error_class="",outcome="executed",tool="echo"} 1.0' in text
            assert 'qaqnuz_sessions_open{transport="stdio"} 1.0' in text
            assert "process_cpu_seconds_total" in text and key not in text
            assert (await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/other"))[0] == 404
        deadline = time.monotonic() + 20
        while _listening(port):  # the endpoint stops with the server
            assert time.monotonic() < deadline, "the metrics port is still open after the server stopped"
            await anyio.sleep(0.1)
        errlog.seek(0)
        assert f"serving /metrics at http://127.0.0.1:{port}/metrics" in errlog.read()


def test_a_taken_metrics_port_is_a_usage_error_before_anything_is_served(tmp_path):
    cfg = write_config(tmp_path, kit_config())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "qaqnuz.cli", "serve", "--transport", "stdio", "--metrics-port", str(port)],
            env=server_env(cfg, None), capture_output=True, text=True, timeout=60, input="",
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--metrics-port" in done.stderr and done.stdout == ""
