"""Shared helpers for the kernel's tests: configs with the testkit pack, minted keys, stdio servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
