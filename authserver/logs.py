"""Logging for ``serve``: one line per record, as text or as one JSON object
(``AUTHSERVER_LOG_FORMAT=json``, for log shippers), on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from authserver.clients.secrets import withhold_secrets

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

#: LogRecord attributes that are not extra fields given with ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """The text format (:data:`TEXT_FORMAT` unless *fmt*), secrets withheld."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        return withhold_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process, message, and every
    field passed with ``extra=`` (the access log's method, path, status...). *logger*, when
    given, is the ``logger`` of every record (granian logs as ``_granian``,
    ``_granian.serve``..., which the text format shows as ``granian``)."""

    def __init__(self, logger: str | None = None) -> None:
        super().__init__()
        self._logger = logger

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": self._logger or record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return withhold_secrets(json.dumps(entry, default=str))


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(level: str, fmt: str) -> None:
    """Send every record at *level* and above to stderr in format *fmt* (``text`` or
    ``json``), replacing any handler set before (a worker configures again after fork)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic announces its context ("Context impl SQLiteImpl...") at info on every
    # migration check; a start says what it did in its own words instead.
    logging.getLogger("alembic").setLevel(logging.WARNING)
