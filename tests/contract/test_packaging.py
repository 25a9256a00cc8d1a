"""Versions move in lockstep; every distribution is a room of its own with a README and tests."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


# -- the import picture ----------------------------------------------------------------------------------
KERNEL = ROOT / "kernel" / "qaqnuz"


def _runtime_imports(path: Path) -> set[str]:
    """Modules `path` imports at run time (anywhere in it, but not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":  # the public face's lazy loading
            skipped.update(id(n) for n in ast.walk(node))
    names: set[str] = set()
    package = ".".join(path.relative_to(KERNEL.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _kernel_graph() -> dict[str, set[str]]:
    modules = {}
    for path in KERNEL.rglob("*.py"):
        parts = path.relative_to(KERNEL.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return {name: {m for m in _runtime_imports(path) if m in modules} for name, path in modules.items()}


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_layers_are_one_way_nothing_below_the_kernel_module_imports_it_back():
    graph = _kernel_graph()
    below = _closure(graph, "qaqnuz.kernel")
    assert "qaqnuz.kernel" not in below, "an import cycle through qaqnuz.kernel"
    for lower in ("qaqnuz.pipeline", "qaqnuz.runtime", "qaqnuz.server", "qaqnuz.registry", "qaqnuz.sink"):
        assert lower in below or lower == "qaqnuz.server"
        assert "qaqnuz.kernel" not in _closure(graph, lower), lower
    # only the binding speaks MCP wire types (and the testing plugin drives a real MCP client)
    for name in graph:
        if name not in ("qaqnuz.server", "qaqnuz.testing"):
            assert not any(m == "mcp" or m.startswith("mcp.") for m in _runtime_imports(_module_path(name))), name


def _module_path(name: str) -> Path:
    relative = Path(*name.split("."))
    candidate = KERNEL.parent / relative.with_suffix(".py")
    return candidate if candidate.exists() else KERNEL.parent / relative / "__init__.py"


def test_importing_the_public_face_loads_no_mcp_module():
    code = "import sys, qaqnuz; print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


HEAVY = ("mcp", "httpx", "httpcore", "uvicorn", "starlette", "psycopg", "pydantic", "jsonschema")


def test_plugin_entry_modules_stay_light_so_the_command_line_starts_fast():
    """`qaqnuz` loads every plugin to find its commands: their entry modules must not import heavy libraries."""
    code = (
        "import sys, importlib.metadata as md\n"
        "for ep in md.entry_points(group='qaqnuz'): ep.load()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _requirement_names(project: dict) -> set[str]:
    names = set()
    for dep in project.get("dependencies", []):
        name = re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0]
        names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def test_every_plugin_declares_every_distribution_it_imports():
    import importlib.metadata as md

    owners = {module: dists for module, dists in md.packages_distributions().items()}
    missing = []
    for folder in [*DISTS[1:], *CONTRIB]:
        project = _project(folder)
        declared = _requirement_names(project)
        own = {p.name for p in (folder / "src").iterdir() if p.is_dir()}
        for path in (folder / "src").rglob("*.py"):
            tree = ast.parse(path.read_text())
            absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level]
            absolute += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            for name in absolute:
                top = name.split(".")[0]
                if not top or top in sys.stdlib_module_names or top in own or top == "__future__":
                    continue
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(top, [top])}
                if not dists & declared:
                    missing.append(f"{project['name']}: imports {top} ({', '.join(sorted(dists))}) in {path.name}")
    assert not missing, "\n".join(sorted(set(missing)))
