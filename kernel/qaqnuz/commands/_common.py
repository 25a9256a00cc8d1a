"""Small helpers the built-in commands share: timestamps, plain tables, the `--config` option."""

from __future__ import annotations

import argparse
import getpass
import time
from collections.abc import Sequence


def ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value)) if value else "-"


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $QAQNUZ_CONFIG, then ./qaqnuz.toml)")


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
