"""The Redis limiter's tests import their shared helpers from redis_kit.py beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
