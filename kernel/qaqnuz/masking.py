"""What an approver shows a human of a call's arguments: secret-looking values masked, at most 16 KiB.

The name decides, at any depth: a value under a key whose name contains token, password, passwd, secret,
key, authorization, credential, cookie or session is replaced by `MASK`, whatever it holds. Arguments
larger than the cap are cut (as `envelope.truncate` cuts payloads) and flagged, never refused: the call
itself is bound to the hash of the whole, unmasked arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qaqnuz.audit import canonical_json
from qaqnuz.envelope import truncate

MASK = "***"
MAX_BYTES = 16 * 1024
SECRET_NAME = re.compile(r"token|passw(?:or)?d|secret|key|authori[sz]ation|credential|cookie|session", re.I)


def mask(value: Any) -> Any:
    """A copy of `value` with every value under a secret-looking name masked."""
    if isinstance(value, Mapping):
        return {str(k): (MASK if isinstance(k, str) and SECRET_NAME.search(k) else mask(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def for_approver(arguments: Mapping[str, Any], max_bytes: int = MAX_BYTES) -> tuple[Any, bool]:
    """(masked arguments, whether they were cut to fit `max_bytes` of JSON)."""
    masked = mask(arguments)
    if len(canonical_json(masked)) <= max_bytes:
        return masked, False
    return truncate(masked, max_bytes), True
