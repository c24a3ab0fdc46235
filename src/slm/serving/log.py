"""Structured logs: one JSON object per line on stderr, for the service's events and its access log."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = "slm.serving"
ACCESS_LOGGER = "slm.serving.access"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...fields}``: the record's message is the event name."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "info") -> None:
    """Send slm's and uvicorn's logs to stderr as JSON lines (uvicorn's own access log stays off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def event(
    name: str, *, level: int = logging.INFO, logger: str = LOGGER, exc_info: BaseException | None = None, **fields: Any
) -> None:
    """Log ``name`` with ``fields`` as one JSON line (with ``exc_info``'s traceback as ``exception``)."""
    log = logging.getLogger(logger)
    if log.isEnabledFor(level):
        log.log(level, name, exc_info=exc_info, extra={"fields": fields})
