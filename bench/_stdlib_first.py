"""Import this first in every script run from bench/: it keeps bench/ on `sys.path`, but after the standard
library.

Python puts a script's own folder first on `sys.path`, and bench/ holds `http.py`; without this,
`import http.client` (made by starlette, httpx and uvicorn) would find bench/http.py instead of the standard
library's package and fail with "'http' is not a package". Modules of bench/ (`baseline_server`,
`bench_pack`) stay importable by their plain names: bench/ stays on the path, only later.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _is_here(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() == HERE
    except OSError:
        return False


if "http" in sys.modules and getattr(sys.modules["http"], "__file__", None) == str(HERE / "http.py"):
    raise ImportError("bench/http.py was imported as the standard library's `http`; import _stdlib_first earlier")
sys.path[:] = [p for p in sys.path if not _is_here(p)] + [str(HERE)]
