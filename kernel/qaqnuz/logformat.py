"""Log lines no client input can forge, in the two shapes `[server] log_format` offers.

Clients choose much of what reaches a log line: session ids, tool names, paths, header values, and the
messages uvicorn and the MCP SDK build from them with f-strings. A value holding a line break would start
what looks like a new record, so each formatter here escapes every control character (C0, DEL, C1, U+2028,
U+2029, and the bidirectional overrides that reorder what a terminal shows) in the message and in every
field, wherever the text came from: the escaping is done once, where records become lines, not by each
caller.

* `TextFormatter`: one line per record, `<time> <request id or -> <LEVEL> <logger>: <message>`, a line break
  written as the two characters `\\n` (the id is a column of its own, so a line still ends with its
  message and `<LEVEL> <logger>: ` stays together, as tools that read the old format expect). A traceback
  stays readable on continuation lines, each starting with `CONTINUATION` (a record line always starts
  with its timestamp, so no continuation line can pass for one), and each escaped in itself.
* `JsonFormatter`: one JSON object per line (`time`, `level`, `logger`, `message`, then `request_id`, the
  record's scalar extras such as the access line's `method`/`tool`/`client`/`status`/`latency_ms`, and
  `exc` for a traceback), written ASCII-only, so neither a raw control character nor U+2028 can appear.

Secrets are masked before either runs: the `Redactor` is a handler filter, and filters run before the
formatter, on the message, the traceback and the string extras alike.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any

from qaqnuz import requestid

LOG_FORMAT = "%(asctime)s %(request_id)s %(levelname)s %(name)s: %(message)s"
#: How a traceback's lines begin in the text format: never a timestamp, so never a record of its own.
CONTINUATION = "    | "
FORMATS = ("text", "json")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Attributes every LogRecord has (and those formatting adds): anything else on a record is an extra.
_STANDARD = frozenset(
    (*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "request_id", "taskName")
)
#: Extras never written: uvicorn repeats its message with terminal colours in this one.
_SKIPPED = frozenset(("color_message",))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`): one line, as shown."""
    return _CONTROL.sub(_escaped, text)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller added with `extra=`, scalars only (a scope or a request object is no log field)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD
        and key not in _SKIPPED
        and not key.startswith("_")
        and (value is None or isinstance(value, (str, int, float, bool)))
    }


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request it was made in (`qaqnuz.requestid`), so every line one
    request causes, from any logger, carries the same id. A handler filter: it runs in the logging call,
    in the task that logs, where the request's context is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = requestid.current()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self.line_format = fmt

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        values = dict(record.__dict__, request_id=getattr(record, "request_id", None) or "-")
        line = escape(self.line_format % values)  # the logger name, the id and any other field, too
        for extra in _trailer(self, record):
            line += "".join("\n" + CONTINUATION + escape(part) for part in extra.split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = str(request_id)
        for key, value in extras(record).items():
            if value is not None:
                out.setdefault(key, value)
        exc, stack = _trailer(self, record, split=True)
        if exc:
            out["exc"] = exc
        if stack:
            out["stack"] = stack
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"), default=str)


def _trailer(formatter: logging.Formatter, record: logging.LogRecord, *, split: bool = False) -> list[str]:
    """The record's traceback and stack (either may be empty), as the base formatter would write them."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    exc = record.exc_text or ""
    stack = formatter.formatStack(record.stack_info) if record.stack_info else ""
    if split:
        return [exc, stack]
    return [part for part in (exc, stack) if part]


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for `[server] log_format` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log_format: {log_format!r}; write 'text' or 'json'")


def handler(log_format: str = "text", stream: Any = None) -> logging.StreamHandler[Any]:
    """A stderr handler with the chosen formatter and the request-id stamp (add a Redactor beside it)."""
    out: logging.StreamHandler[Any] = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(formatter(log_format))
    out.addFilter(RequestIdFilter())
    return out
