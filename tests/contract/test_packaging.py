"""Versions move in lockstep; every distribution is a room of its own with a README and tests."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTS = [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())]
CONTRIB = sorted(p for p in (ROOT / "contrib").iterdir() if (p / "pyproject.toml").exists())


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def test_first_party_versions_move_in_lockstep():
    kernel_version = _project(ROOT)["version"]
    for folder in DISTS:
        project = _project(folder)
        assert project["version"] == kernel_version, folder
        for dep in project.get("dependencies", []):
            if dep.startswith("qaqnuz"):
                assert dep.endswith(f"=={kernel_version}"), (folder, dep)
    extras = _project(ROOT)["optional-dependencies"]
    for deps in extras.values():
        for dep in deps:
            assert dep.endswith(f"=={kernel_version}"), dep


def test_mcp_is_pinned_exactly():
    deps = _project(ROOT)["dependencies"]
    assert "mcp==2.3.0" in deps and "mcp-types==2.3.0" in deps


def test_each_plugin_is_its_own_distribution_with_entry_point_readme_and_tests():
    for folder in [*DISTS[1:], *CONTRIB]:
        project = _project(folder)
        short = folder.name
        assert project["name"].startswith("qaqnuz-"), folder
        entry_points = project["entry-points"]["qaqnuz"]
        assert len(entry_points) == 1, folder
        assert (folder / "README.md").read_text().count("## What it provides") == 1, folder
        assert list((folder / "tests").glob("test_*.py")), folder
        if folder.parent.name == "plugins":
            assert project["name"] == f"qaqnuz-{short}"
            assert short in entry_points


def test_extras_map_one_to_one_to_plugins():
    extras = _project(ROOT)["optional-dependencies"]
    version = _project(ROOT)["version"]
    for folder in DISTS[1:]:
        pin = f"qaqnuz-{folder.name}=={version}"
        extra = "packs" if folder.name.startswith("pack-") else folder.name  # the tool packs share one extra
        assert pin in extras[extra], (extra, pin)
        assert pin in extras["all"], pin
    assert set(extras["all"]) == {dep for name, deps in extras.items() if name != "all" for dep in deps}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_kernel_imports_no_plugin_and_nothing_imports_tests_or_bench():
    for path in (ROOT / "kernel").rglob("*.py"):
        for name in _imports(path):
            assert not re.match(r"qaqnuz_", name), (path, name)
            assert not name.startswith(("tests", "bench")), (path, name)


def test_plugins_import_only_the_public_face():
    for folder in [*DISTS[1:], *CONTRIB]:
        for path in (folder / "src").rglob("*.py"):
            for name in _imports(path):
                if name.startswith("qaqnuz.") or name == "qaqnuz":
                    assert name == "qaqnuz", (path, name)
