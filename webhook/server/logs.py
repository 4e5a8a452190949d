"""Structured logs: one JSON object per line on stderr, for spreadguard's own records and gunicorn's.

Every line has ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger``, ``pid`` and ``msg``; records
made with ``extra={"fields": {...}}`` add those keys (an admission decision: ``uid``, ``kind``, ``decision``,
``rules``, ``duration_ms`` ...); a record with an exception adds ``error`` (``Type: message``) and ``traceback``
(the formatted traceback, one string: the line stays one line).

The admission decision line is on every request's path, so it has a direct writer (``write_line``): the
same line the formatter would make (``line_text`` builds both), written straight to the configured
handler's stream under its lock, without a ``LogRecord`` and the logging call chain; the timestamp string
is cached per millisecond. It is used only when the line would reach exactly ``configure``'s handler, still with its
``JsonFormatter`` (no other handler or filter on the way); otherwise the record goes through ``logging``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson
from gunicorn.glogging import Logger as GunicornLogger

ROOT = "spreadguard"
DECISIONS = "spreadguard.admission"
_RESERVED = frozenset(("time", "level", "logger", "pid", "msg"))
# one encoder for every line (json.dumps with options would build a new one per call): same output
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False)
_stamp: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its text


def format_time(created: float) -> str:
    """``created`` (Unix time) as UTC RFC 3339 with milliseconds (cut, not rounded), cached per millisecond."""
    global _stamp
    millis = int(created * 1000)
    last = _stamp  # one read: another thread may replace it meanwhile, each tuple is whole
    if last[0] == millis:
        return last[1]
    seconds, ms = divmod(millis, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"
    _stamp = (millis, text)
    return text


def line_text(created: float, level: str, logger: str, pid: int | None, msg: str, fields: Any) -> dict[str, Any]:
    """The JSON object of one line, before any exception keys (shared by the formatter and ``write_line``)."""
    line: dict[str, Any] = {"time": format_time(created), "level": level, "logger": logger, "pid": pid, "msg": msg}
    if isinstance(fields, dict):
        line.update((k, v) for k, v in fields.items() if k not in _RESERVED)
    return line


class JsonFormatter(logging.Formatter):
    """A ``logging.Formatter`` writing each record as one compact JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        line = line_text(
            record.created,
            record.levelname.lower(),
            record.name,
            record.process,
            record.getMessage(),
            getattr(record, "fields", None),
        )
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        return _ENCODER.encode(line)


_handler: logging.StreamHandler[Any] | None = None  # the handler ``configure`` installed
_direct = threading.local()  # re-entrance guard of write_line (a stream that logs while writing)


def _direct_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """``configure``'s handler when a record of ``logger`` at ``level`` would reach it and nothing else."""
    handler = _handler
    if handler is None or level < handler.level or handler.filters or type(handler.formatter) is not JsonFormatter:
        return None
    current: logging.Logger | None = logger
    while current is not None:  # the record's way up, as Logger.callHandlers walks it
        if current.filters:
            return None
        if current.name == ROOT:
            return handler if current.handlers == [handler] and not current.propagate else None
        if current.handlers or not current.propagate:
            return None
        parent = current.parent
        current = parent if isinstance(parent, logging.Logger) else None
    return None


def write_line(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> bool:
    """Write ``logger``'s line for (``level``, ``msg``, ``fields``) directly; False: log it the usual way.

    The caller has checked ``logger.isEnabledFor(level)``. The line is the one ``JsonFormatter`` makes of
    the same record (no exception: records with one go through ``logging``).
    """
    handler = _direct_handler(logger, level)
    if handler is None or getattr(_direct, "busy", False):
        return False
    line = line_text(time.time(), logging.getLevelName(level).lower(), logger.name, os.getpid(), msg, fields)
    try:  # orjson: the same compact UTF-8 line, several times faster (the standard encoder for what it refuses)
        data = orjson.dumps(line, default=str) + handler.terminator.encode()
    except TypeError:
        data = (_ENCODER.encode(line) + handler.terminator).encode("utf-8", "backslashreplace")
    _direct.busy = True
    handler.acquire()
    try:
        stream = handler.stream
        raw = getattr(stream, "buffer", None)  # a text stream's bytes below: no second encoding
        if raw is not None and str(getattr(stream, "encoding", "")).lower().replace("-", "") == "utf8":
            stream.flush()  # anything written through the text layer goes first (nothing, normally)
            raw.write(data)
            raw.flush()
        else:
            stream.write(data.decode())
            stream.flush()
    except Exception:  # as StreamHandler.emit: report on stderr, never fail the request
        handler.handleError(logging.makeLogRecord({"name": logger.name, "levelno": level, "msg": msg}))
    finally:
        handler.release()
        _direct.busy = False
    return True


def configure(level: str) -> None:
    """Send the ``spreadguard`` loggers to stderr as JSON lines at ``level`` (debug, info, warning, error)."""
    global _handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ROOT)
    logger.handlers[:] = [handler]
    _handler = handler
    logger.setLevel(level.upper())
    logger.propagate = False


class JsonGunicornLogger(GunicornLogger):
    """gunicorn's logger (its ``logger_class``) with every handler writing JSON lines like spreadguard's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
