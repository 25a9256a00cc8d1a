"""Secret references in config: `{ env = "NAME" }` or `{ file = "path" }`, never the secret itself.

A pack's settings struct types a credential field as `SecretRef`; a plain string there is a config
error, so a secret cannot be written into config by accident. The factory resolves it with
`ctx.secret(ref, where)` into an opaque `Secret` whose repr and str never show the value, and the kernel
masks every resolved value in its log output.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import msgspec

from qaqnuz.errors import ConfigError
from qaqnuz.logformat import extras

MASK = "[redacted]"


class SecretRef(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where a secret lives: exactly one of an environment variable or a file (relative to the config)."""

    env: str | None = None
    file: str | None = None


class Secret:
    """A resolved secret. Only `reveal()` gives the value; printing, logging or formatting it does not."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def resolve(ref: SecretRef, where: str, base_dir: str) -> Secret:
    """Read the secret now (at load), or raise a ConfigError located at `where`."""
    if (ref.env is None) == (ref.file is None):
        raise ConfigError([f'{where}: a secret reference needs exactly one of env = "NAME" or file = "path"'])
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError([f"{where}: environment variable {ref.env} is not set (or empty); export it"])
        return Secret(value)
    path = Path(base_dir, os.path.expanduser(ref.file or ""))
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read secret file {path} ({exc.strerror or type(exc).__name__})"]) from None
    if not value:
        raise ConfigError([f"{where}: secret file {path} is empty"])
    return Secret(value)


#: Anything shaped like an API key (`<prefix><key id>_<secret><checksum>`): its secret part is masked.
KEY_PATTERN = re.compile(r"\b([a-z][a-z0-9]{0,15}_(?:[a-z0-9]{1,16}_)?)([0-9A-Za-z]{12})_[0-9A-Za-z]{49}\b")


class Redactor(logging.Filter):
    """Masks every secret value a kernel resolved, and anything shaped like an API key, in every log
    record that passes a handler it guards, tracebacks and string extras included (tracebacks are formatted,
    then masked). A handler filter, so it runs before the handler's formatter escapes or encodes anything."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()
        self._ordered: list[str] = []
        self._handlers: list[logging.Handler] = []

    def add(self, value: str) -> None:
        if len(value) >= 4 and value not in self._values:  # masking 1-3 characters would mangle ordinary text
            self._values.add(value)
            self._ordered = sorted(self._values, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for value in self._ordered:
            text = text.replace(value, MASK)
        return KEY_PATTERN.sub(r"\1\2_[redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        for key, value in extras(record).items():  # the JSON format writes them as fields of their own
            if isinstance(value, str):
                setattr(record, key, self.mask(value))
        return True

    def guard(self, loggers: Iterable[logging.Logger]) -> None:
        """Attach to the handlers of `loggers` as they are now (the CLI's, a test's capture)."""
        for logger in loggers:
            for handler in logger.handlers:
                if self not in handler.filters:
                    handler.addFilter(self)
                    self._handlers.append(handler)

    def release(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()


_FORMATTER = logging.Formatter()
