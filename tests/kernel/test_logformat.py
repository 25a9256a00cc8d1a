"""Both log formats: one record is one line whatever its values hold, each carries its request id, and
secrets are masked before either format writes anything."""

from __future__ import annotations

import io
import json
import logging

import pytest

from qaqnuz import logformat, requestid
from qaqnuz.command_context import setup_logging
from qaqnuz.keys import new_key
from qaqnuz.secrets import Redactor

EVIL = "ok\nFORGED INFO x\r\x85\u2028\u2029\x1b[2J\x00\u202e\t"


def _capture(log_format: str, redactor: Redactor | None = None) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logformat.handler(log_format, stream)
    if redactor is not None:
        handler.addFilter(redactor)
    logger = logging.getLogger(f"qaqnuz.test_logformat.{log_format}.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def _boom(message: str) -> None:
    raise ValueError(message)


def test_escape_writes_every_control_character_as_an_escape():
    escaped = logformat.escape(EVIL)
    assert escaped == "ok\\nFORGED INFO x\\r\\x85\\u2028\\u2029\\x1b[2J\\x00\\u202e\\t"
    assert escaped.isprintable() and logformat.escape(escaped) == escaped  # escaping twice changes nothing
    assert logformat.escape("plain text, ünïcode ✓") == "plain text, ünïcode ✓"


def test_text_is_one_line_per_record_with_the_request_id():
    logger, stream = _capture("text")
    token = requestid.begin("req_abc")
    try:
        logger.warning("session %s", EVIL)
    finally:
        requestid.end(token)
    logger.info("outside any request")
    first, second = stream.getvalue().splitlines()  # str.splitlines breaks on NEL and U+2028 too
    assert first.split(" ")[2:4] == ["req_abc", "WARNING"] and first.endswith("\\u202e\\t")
    assert " qaqnuz.test_logformat.text." in first and ": session ok\\nFORGED INFO x\\r\\x85" in first
    assert second.split(" ")[2:4] == ["-", "INFO"] and second.endswith(": outside any request")


def test_text_traceback_stays_on_marked_continuation_lines():
    logger, stream = _capture("text")
    try:
        _boom(f"bad input\n{EVIL}")
    except ValueError:
        logger.exception("call failed")
    lines = stream.getvalue().split("\n")
    assert lines[0].split(" ")[2:4] == ["-", "ERROR"] and lines[-1] == ""
    body = lines[1:-1]
    assert body and all(line.startswith(logformat.CONTINUATION) for line in body)
    assert any("Traceback (most recent call last):" in line for line in body)
    assert all(line.isprintable() for line in body)
    assert not any(line.startswith("FORGED") for line in stream.getvalue().splitlines())


def test_json_is_one_object_per_line_with_fields_extras_and_traceback():
    logger, stream = _capture("json")
    token = requestid.begin("req_json")
    try:
        logger.info("access %s", EVIL, extra={"route": "POST /mcp", "status": 200, "tool": None, "obj": object()})
        try:
            _boom(EVIL)
        except ValueError:
            logger.exception("failed")
    finally:
        requestid.end(token)
    text = stream.getvalue()
    assert text.isascii() and len(text.splitlines()) == 2
    access, failed = (json.loads(line) for line in text.splitlines())
    assert access["message"] == f"access {EVIL}"  # the value kept, as data inside one string
    assert access["request_id"] == "req_json" and access["level"] == "INFO"
    assert access["logger"].startswith("qaqnuz.test_logformat") and access["time"].endswith("Z")
    assert access["route"] == "POST /mcp" and access["status"] == 200
    assert "tool" not in access and "obj" not in access and "exc" not in access  # no None, no objects
    assert failed["exc"].startswith("Traceback") and EVIL in failed["exc"]


def test_secrets_are_masked_before_either_format_writes(monkeypatch):
    key = new_key("qx_live_").raw
    secret = key.split("_", 3)[3]
    for log_format in logformat.FORMATS:
        redactor = Redactor()
        redactor.add("hunter2-password")
        logger, stream = _capture(log_format, redactor)
        try:
            _boom(f"key {key}")
        except ValueError:
            logger.exception("with %s and hunter2-password", key, extra={"client": f"via {key}"})
        out = stream.getvalue()
        assert secret not in out and secret[:20] not in out and "hunter2-password" not in out, log_format
        assert out.count("[redacted]") >= 3, (log_format, out)


def test_setup_logging_installs_the_configured_format(monkeypatch):
    root = logging.getLogger("qaqnuz")
    saved = (root.handlers[:], root.level, root.propagate, logging.lastResort)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in `qaqnuz serve`: pytest's capture is gone
    try:
        setup_logging("info", "json")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logformat.JsonFormatter) and logging.lastResort is handler
        logging.getLogger("qaqnuz.test_setup").info("hello\nworld")
        logging.getLogger("some.library").warning("orphan\u2028record")  # no handler of its own: the last resort
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [r["message"] for r in records] == ["hello\nworld", "orphan\u2028record"]
        setup_logging("info")
        assert isinstance(root.handlers[0].formatter, logformat.TextFormatter)
    finally:
        root.handlers[:], root.level, root.propagate, logging.lastResort = saved[0], saved[1], saved[2], saved[3]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logformat.formatter("xml")
