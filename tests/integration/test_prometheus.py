"""A real Prometheus (Debian's `prometheus`) scrapes a real qaqnuz HTTP server every second: calls made with
the `mcp` SDK show up in PromQL, the shipped alert rules load and evaluate, and every dashboard expression
is a query Prometheus accepts. Skips without the binary; fails under `CI` (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kit import kit_config
from qaqnuz.testing import ThreadServer, write_config
from qaqnuz.testservers import free_port

GRAFANA = Path(__file__).resolve().parents[2] / "contrib" / "grafana"
DEADLINE = 60.0


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is not installed (Debian package prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def qaqnuz_http(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(tmp_path / "qaqnuz")
    server.start(write_config(tmp_path / "qaqnuz", kit_config()), plugins=["http", "testkit_pack.plugin"])
    try:
        yield server
    finally:
        server.stop()


class Prometheus:
    def __init__(self, binary: str, folder: Path, target: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(GRAFANA / "qaqnuz-alerts.yml", folder / "qaqnuz-alerts.yml")
        (folder / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - qaqnuz-alerts.yml\n"
            f"scrape_configs:\n  - job_name: qaqnuz\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(  # the machine's own prometheus
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=folder,
        )  # fmt: skip
        self.folder = folder

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=5) as response:  # a local URL of ours
            return json.loads(response.read())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready:\n" + self.logs())

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=promql)
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def until(self, promql: str, check: Any) -> list[dict[str, Any]]:
        """Poll `promql` until `check(result)` holds, or fail at the deadline with the last answer."""
        deadline = time.monotonic() + DEADLINE
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if check(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{promql} never satisfied the check; last answer {result}\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.folder / "prometheus.log").read_text()[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def prometheus(tmp_path: Path, qaqnuz_http: ThreadServer) -> Iterator[Prometheus]:
    binary = _prometheus_binary()
    server = Prometheus(binary, tmp_path / "prometheus", f"127.0.0.1:{qaqnuz_http.transport.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def _calls(url: str, key: str, messages: tuple[str, ...], *, fail: bool = False) -> None:
    client = streamable_http_client(url, http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}))
    async with Client(client) as session:
        for message in messages:
            assert (await session.call_tool("echo", {"message": message})).is_error is False
        if fail:
            assert (await session.call_tool("boom", {})).is_error is True


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_scrapes_the_calls_and_accepts_the_dashboard_and_the_rules(qaqnuz_http, prometheus):
    key, _ = qaqnuz_http.run(qaqnuz_http.kernel.keys.mint(brand="acme", scopes=["orders.read"], name="prom"))
    prometheus.until('up{job="qaqnuz"}', lambda r: _value(r) == 1.0)  # scraped before the calls: rates see them
    executed = 'sum(qaqnuz_tool_calls_total{job="qaqnuz", brand="acme", tool="echo", outcome="executed"})'
    # A first call creates the series; once Prometheus holds it, more calls make an increase a rate can see.
    asyncio.run(_calls(f"{qaqnuz_http.base}/mcp", key, ("one",)))
    prometheus.until(executed, lambda r: _value(r) == 1.0)
    asyncio.run(_calls(f"{qaqnuz_http.base}/mcp", key, ("two", "three"), fail=True))
    prometheus.until(executed, lambda r: _value(r) == 3.0)
    failed = prometheus.until('qaqnuz_tool_calls_total{tool="boom"}', lambda r: len(r) == 1)
    assert failed[0]["metric"]["outcome"] == "failed" and failed[0]["metric"]["error_class"]
    buckets = 'qaqnuz_tool_call_duration_seconds_bucket{brand="acme"}'
    latency = prometheus.until(
        f"histogram_quantile(0.95, sum by (le, tool) (rate({buckets}[1m])))",
        lambda r: any(s["metric"].get("tool") == "echo" and s["value"][1] != "NaN" for s in r),
    )
    assert all(s["metric"]["tool"] in ("echo", "boom") for s in latency)
    assert _value(prometheus.query("process_resident_memory_bytes")) > 0

    # Every dashboard expression is valid PromQL over this server's series (Grafana's variables filled in).
    dashboard = json.loads((GRAFANA / "qaqnuz-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    assert exprs
    for expr in exprs:
        prometheus.query(expr.replace("$__rate_interval", "1m").replace("$brand", ".*"))

    # The shipped alert rules load and evaluate cleanly against the real series.
    def evaluated(groups: list[dict[str, Any]]) -> bool:
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(r.get("health") == "ok" for r in rules)

    deadline = time.monotonic() + DEADLINE
    groups: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        if evaluated(groups):
            break
        time.sleep(0.25)
    assert evaluated(groups), groups
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"QaqnuzLimiterErroring", "QaqnuzStoreDown", "QaqnuzAuditSinkFailing", "QaqnuzApprovalBacklog"} <= names
