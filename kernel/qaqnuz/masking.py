"""What an approver shows a human of a call's arguments: secret-looking values masked, at most 16 KiB.

The name decides, at any depth: a value under a key whose name contains token, pass (password, passwd,
passphrase), pwd, secret, key, auth (authorization), bearer, credential, cookie, session or private is replaced
by `MASK`, whatever it holds; and any string shaped like a qaqnuz API key is masked wherever it is. Arguments
larger than the cap are cut (as `envelope.truncate` cuts payloads) and flagged, never refused: the call
itself is bound to the hash of the whole, unmasked arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qaqnuz.audit import canonical_json
from qaqnuz.envelope import truncate
from qaqnuz.secrets import KEY_PATTERN as KEY_SHAPE

MASK = "***"
MAX_BYTES = 16 * 1024
SECRET_NAME = re.compile(r"token|pass|pwd|secret|key|auth|bearer|credential|cookie|session|private", re.I)


def mask(value: Any) -> Any:
    """A copy of `value` with every value under a secret-looking name masked."""
    if isinstance(value, Mapping):
        return {str(k): (MASK if isinstance(k, str) and SECRET_NAME.search(k) else mask(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    if isinstance(value, str) and KEY_SHAPE.search(value):
        return KEY_SHAPE.sub(MASK, value)
    return value


def for_approver(arguments: Mapping[str, Any], max_bytes: int = MAX_BYTES) -> tuple[Any, bool]:
    """(masked arguments, whether they were cut to fit `max_bytes` of JSON)."""
    masked = mask(arguments)
    if len(canonical_json(masked)) <= max_bytes:
        return masked, False
    return truncate(masked, max_bytes), True
