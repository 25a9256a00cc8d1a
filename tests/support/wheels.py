"""Building wheels and installing them into fresh virtual environments, as a user outside this workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    assert Path(found).exists(), "uv is required (the README's commands use it)"
    return found


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def clean_env() -> dict[str, str]:
    """This environment without the workspace's virtualenv, paths or uv settings."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("UV_")}


def fresh_venv(folder: Path, env: dict[str, str]) -> Path:
    """A new virtual environment on this interpreter; returns its folder."""
    run(uv(), "venv", "--quiet", "--python", sys.executable, str(folder), cwd=folder.parent, env=env)
    return folder
