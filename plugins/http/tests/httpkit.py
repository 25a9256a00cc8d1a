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
