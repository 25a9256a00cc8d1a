"""contrib/grafana stays true to the server: the alert rules pass `promtool check rules`, and every PromQL
expression in the dashboard and the rules names only series a running kernel really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from kit import kit_config
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio

GRAFANA = Path(__file__).resolve().parents[2] / "contrib" / "grafana"
DASHBOARD = GRAFANA / "qaqnuz-dashboard.json"
ALERTS = GRAFANA / "qaqnuz-alerts.yml"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}  # fmt: skip


def needs(binary: str) -> str:
    """The binary's path; skips without it, but fails under `CI` (.ci/run installs Debian's prometheus)."""
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (Debian package prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict]) -> list[str]:
        found: list[str] = []
        for panel in panels:
            found += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
            found += walk(panel.get("panels", []))
        return found

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and "label_values(" in query.get("query", ""):
            exprs.append(query["query"].removeprefix("label_values(").rsplit(",", 1)[0])
    return exprs


def alert_exprs() -> list[str]:
    """Each rule's `expr:` (inline, or a `>-`/`|` block), read without a YAML library (promtool checks the
    file's YAML itself)."""
    exprs: list[str] = []
    lines = ALERTS.read_text().splitlines()
    for index, line in enumerate(lines):
        key, _, value = line.partition("expr:")
        if not _ or key.strip():
            continue
        value = value.strip()
        if value not in (">-", ">", "|", "|-"):
            exprs.append(value)
            continue
        indent = len(key)
        block = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        exprs.append(" ".join(b for b in block if b))
    return exprs


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: what is left once strings, label matchers, ranges,
    grouping clauses, Grafana variables, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


async def exported_names(tmp_path: Path) -> set[str]:
    """Every series name a real kernel's exposition declares, with the suffixes Prometheus sees."""
    kernel = await start_kernel(write_config(tmp_path, kit_config()), plugins=["testkit_pack.plugin"])
    try:
        text = generate_latest(kernel.metrics.exposition).decode()
    finally:
        await kernel.aclose()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
                        "counter": ("", "_total")}.get(kind, ("",))  # fmt: skip
            names.update(name.removesuffix("_total") + s if kind == "counter" else name + s for s in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_extractor_finds_names_and_nothing_else():
    expr = (
        'histogram_quantile(0.95, sum by (le, tool) (rate(qaqnuz_tool_call_duration_seconds_bucket{brand=~"$brand", '
        'tool!="a_b"}[$__rate_interval]))) / ignoring(x) group_left max(qaqnuz_ready{check="store"}) > bool 0.5'
    )
    assert metric_names(expr) == {"qaqnuz_tool_call_duration_seconds_bucket", "qaqnuz_ready"}


def test_promtool_accepts_the_alert_rules():
    promtool = needs("promtool")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


async def test_every_expression_names_only_exported_series(tmp_path):
    exported = await exported_names(tmp_path)
    assert {"qaqnuz_tool_calls_total", "qaqnuz_tool_call_duration_seconds_bucket", "process_cpu_seconds_total",
            "qaqnuz_upstream_errors_total", "qaqnuz_sessions_open"} <= exported  # fmt: skip
    exprs = dashboard_exprs() + alert_exprs()
    assert len(alert_exprs()) == ALERTS.read_text().count("- alert:")
    assert len(exprs) > 20
    unknown: dict[str, set[str]] = {}
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no series in {expr!r}"
        missing = names - exported
        if missing:
            unknown[expr] = missing
    assert not unknown, unknown
