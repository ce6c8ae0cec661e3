"""Structured JSON logs on stderr, one object per line, via orjson.

Use the stdlib ``logging`` API everywhere; pass fields with ``extra={...}``. Never log secrets or
full message bodies: API keys, passwords and message content stay out of ``extra``.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import orjson

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Quieten libraries that log per request or per connection at info level.
    for noisy in ("uvicorn.access", "uvicorn.error", "mail.log", "pgserver", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_separate_log(name: str, enabled: bool = True, path: Path | None = None,
                           stream: TextIO | None = None) -> None:
    """Send logger ``name`` (e.g. the delivery log) to its own stream, in the same JSON format
    and not to stderr: to ``path`` (appended, reopened when logrotate moves it) or else to
    ``stream`` (default standard output). ``enabled`` False silences it."""
    logger = logging.getLogger(name)
    for old in logger.handlers:
        old.close()
    logger.propagate = False
    if not enabled:
        logger.handlers[:] = [logging.NullHandler()]
        logger.setLevel(logging.CRITICAL + 1)
        return
    handler: logging.Handler
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
