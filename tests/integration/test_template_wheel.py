"""The third-party path: the template pack installs from a wheel, beside the kernel's wheel, into a fresh
virtual environment that has never seen this workspace, and its own tests pass there."""

from __future__ import annotations

import shutil
import zipfile

from wheels import ROOT, clean_env, fresh_venv
from wheels import run as _run
from wheels import uv as _uv

TEMPLATE = ROOT / "contrib" / "toolpack-template"


def test_template_wheel_installs_into_a_fresh_venv_and_its_tests_pass(tmp_path):
    uv = _uv()
    dist = tmp_path / "dist"
    _run(uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT), cwd=tmp_path)
    _run(uv, "build", "--wheel", "--out-dir", str(dist), str(TEMPLATE), cwd=tmp_path)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["qaqnuz", "qaqnuz_toolpack_template"], wheels
    with zipfile.ZipFile(dist / wheels[0]) as kernel_wheel:  # the demo and its shop live in qaqnuz-demo
        for member in kernel_wheel.namelist():
            text = kernel_wheel.read(member).decode("utf-8", "replace")
            assert "demo" not in member.lower(), member
            assert "CREATE TABLE orders" not in text and "demo-shop" not in text, member

    env = clean_env()
    venv = fresh_venv(tmp_path / "venv", env)
    python = str(venv / "bin" / "python")
    _run(
        uv,
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        *map(str, dist.glob("*.whl")),
        "pytest",
        cwd=tmp_path,
        env=env,
    )

    # The tests run from a copy outside the workspace, against the installed distributions only.
    tests = tmp_path / "template-tests"
    shutil.copytree(TEMPLATE / "tests", tests)
    result = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), cwd=tmp_path, env=env)
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout
    where = _run(
        python,
        "-c",
        "import qaqnuz, qaqnuz_toolpack_template as t; print(qaqnuz.__file__, t.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert str(ROOT) not in where.stdout and str(venv) in where.stdout, where.stdout
    plugins = _run(str(venv / "bin" / "qaqnuz"), "plugins", "list", "--json", cwd=tmp_path, env=env)
    assert '"distribution": "qaqnuz-toolpack-template"' in plugins.stdout
