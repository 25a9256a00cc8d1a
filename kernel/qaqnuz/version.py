"""The installed version of the `qaqnuz` distribution (every first-party plugin moves in lockstep with it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qaqnuz")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
