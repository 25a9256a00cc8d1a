"""A guard on psycopg's own loggers: a password this package was given never appears in a log line.

psycopg and its pool log connection failures with libpq's message (host, port, user, database). Those are
useful to an operator and are kept; libpq does not put the password in them, but a misparsed connection
string could, and these records leave the process through whatever handler the root logger has. So every
record of the `psycopg` loggers has each known password replaced before any handler sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "[redacted]"
_LOGGERS = ("psycopg", "psycopg.pool")


class _PasswordMask(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info or record.exc_text:  # a traceback's text is not ours to check: keep its type only
            kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "exception"
            record.msg, record.args = f"{masked} ({kind}; traceback withheld)", None
            record.exc_info, record.exc_text = None, None
        return True


_MASK = _PasswordMask()


def guard_driver_logs(secrets: Iterable[str]) -> None:
    """Mask these values (the store's passwords) in every record of psycopg's loggers from now on."""
    _MASK.secrets.update(s for s in secrets if s)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)
