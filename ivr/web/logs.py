"""Structured logs: one JSON object per line on stderr (IVR_LOG_FORMAT=text for people).

Phone numbers are never logged on purpose; as a safety net every record's message, every
extra field and every traceback is passed through `redact`, which replaces anything
shaped like a phone number.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

from flask import Flask
from pythonjsonlogger.json import JsonFormatter
from werkzeug.serving import WSGIRequestHandler

from ivr.domain.redact import loggable_target, redact


class RequestLogHandler(WSGIRequestHandler):
    """Werkzeug's request handler for `ivr serve`, logging each target via loggable_target."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request: method, target (no personal data), status and size."""
        path = getattr(self, "path", None)
        line = (f"{self.command} {loggable_target(path)} {self.request_version}"
                if path is not None else "(unreadable request line)")
        self.log("info", '"%s" %s %s', line.translate(self._control_char_table), code, size)


# Every log line passes the same strings through `redact` several times (the record factory,
# the filter and the formatter each see the message; the path, outcome and logger name are
# the same on every line), and `redact` scans with a slow pattern. `_redact` returns exactly
# what `redact` returns, cheaper:
# - ASCII text without a digit: `redact` returns it as it is (its own first test), which
#   a regular expression finds faster than `redact`'s loop over the characters;
# - text `redact` left unchanged once is remembered (by value, so the same message made
#   again by the next stage is a hit). Only such clean text is kept, never a string that
#   held a number, none longer than _CLEAN_LEN (tracebacks), and the memory is emptied when
#   it reaches _CLEAN_MAX entries: at most a few MB.
_DIGIT = re.compile(r"[0-9]")
_CLEAN: dict[str, None] = {}
_CLEAN_MAX = 4096
_CLEAN_LEN = 1024


def _redact(text: str) -> str:
    if not text or (text.isascii() and _DIGIT.search(text) is None) or text in _CLEAN:
        return text
    clean = redact(text)
    if clean == text and len(text) <= _CLEAN_LEN:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN[text] = None
    return clean


def _redact_value(value):
    if isinstance(value, str):
        return _redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


class _RedactingFactory:
    """A log record factory that redacts each record's message as the record is made."""

    def __init__(self, previous: Callable[..., logging.LogRecord]):
        self.previous = previous

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # logging reports a bad format string itself
            return record
        clean = _redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record


def _install_record_redaction() -> None:
    """Redact every record's message when it is made, whoever logs it and wherever it goes."""
    previous = logging.getLogRecordFactory()
    if isinstance(previous, _RedactingFactory):
        return
    logging.setLogRecordFactory(_RedactingFactory(previous))


class RedactingFilter(logging.Filter):
    """Redact the message and the extra fields of each record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = _redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, (str, dict, list, tuple)):
                record.__dict__[key] = _redact_value(value)
        if record.exc_text:
            # Another handler formatted the traceback first; formatters reuse its text.
            record.exc_text = _redact(record.exc_text)
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLogFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level",
                                        "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z")

    # logging.Formatter's text: JsonFormatter's own gives a list only with *_as_array,
    # which this formatter never sets.
    def formatException(self, ei) -> str:
        return redact(logging.Formatter.formatException(self, ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(logging.Formatter.formatStack(self, stack_info))

    def process_log_record(self, log_record: dict) -> dict:
        return {k: _redact_value(v) for k, v in log_record.items()}


class TextLogFormatter(logging.Formatter):
    """The plain format, with tracebacks redacted too."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, redacted whole: message, traceback (even one cached) and stack."""
        return redact(super().format(record))


def log_formatter(kind: str) -> logging.Formatter:
    """The formatter for IVR_LOG_FORMAT: 'json' (default) or 'text'."""
    return TextLogFormatter() if kind == "text" else JsonLogFormatter()


def configure_logging(app: Flask) -> None:
    """JSON (or text) lines on the process's stderr handler, every record redacted."""
    _install_record_redaction()
    kind = (app.config.get("LOG_FORMAT") or os.environ.get("IVR_LOG_FORMAT") or "json").lower()
    root = logging.getLogger()
    for handler in root.handlers:
        # The handler logging.basicConfig made (not pytest's or an operator's own).
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(log_formatter(kind))
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
