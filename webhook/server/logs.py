"""Structured logs: one JSON object per line on stderr, for spreadguard's own records and gunicorn's.

Every line has ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger``, ``pid`` and ``msg``; records
made with ``extra={"fields": {...}}`` add those keys (an admission decision: ``uid``, ``kind``, ``decision``,
``rules``, ``duration_ms`` ...); a record with an exception adds ``error`` (``Type: message``) and ``traceback``
(the formatted traceback, one string: the line stays one line).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

ROOT = "spreadguard"
DECISIONS = "spreadguard.admission"
_RESERVED = ("time", "level", "logger", "pid", "msg")


class JsonFormatter(logging.Formatter):
    """A ``logging.Formatter`` writing each record as one compact JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update((k, v) for k, v in fields.items() if k not in _RESERVED)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, separators=(",", ":"), default=str, ensure_ascii=False)


def configure(level: str) -> None:
    """Send the ``spreadguard`` loggers to stderr as JSON lines at ``level`` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ROOT)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


class JsonGunicornLogger(GunicornLogger):
    """gunicorn's logger (its ``logger_class``) with every handler writing JSON lines like spreadguard's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
