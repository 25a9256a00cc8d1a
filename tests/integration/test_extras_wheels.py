"""What a platform team installs: `pip install 'qaqnuz[http,redis,postgres]'` from the built wheels, into a
fresh virtual environment that has never seen this workspace, brings exactly those three plugins."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from wheels import ROOT, clean_env, fresh_venv
from wheels import run as _run
from wheels import uv as _uv

FIRST_PARTY = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())


def test_the_scale_out_extras_install_exactly_their_plugins(tmp_path: Path) -> None:
    uv = _uv()
    dist = tmp_path / "dist"
    for folder in [ROOT, *FIRST_PARTY]:  # every first-party wheel is on offer; the extras pick
        _run(uv, "build", "--quiet", "--wheel", "--out-dir", str(dist), str(folder), cwd=tmp_path)
    offered = {p.name.split("-")[0] for p in dist.glob("*.whl")}
    assert {"qaqnuz", "qaqnuz_http", "qaqnuz_redis", "qaqnuz_postgres", "qaqnuz_stdio"} <= offered

    env = clean_env()
    venv = fresh_venv(tmp_path / "venv", env)
    (kernel,) = dist.glob("qaqnuz-0.1.0-*.whl")
    _run(uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--find-links", str(dist),
         f"qaqnuz[http,redis,postgres] @ {kernel.as_uri()}", cwd=tmp_path, env=env)  # fmt: skip

    listed = subprocess.run(
        [str(venv / "bin" / "qaqnuz"), "plugins", "list", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    plugins = json.loads(listed.stdout)
    installed = {p["distribution"] for p in plugins if not p["builtin"]}
    assert installed == {"qaqnuz-http", "qaqnuz-redis", "qaqnuz-postgres"}, installed
    providers = {provider for p in plugins for provider in p["providers"]}
    assert {"transport:http", "limiter:redis", "store:postgresql"} <= providers
    assert "store migrate" in next(p for p in plugins if p["name"] == "commands")["commands"]
