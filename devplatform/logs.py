"""Logging setup for the CLI: text or one JSON object per line.

Events are logged as short names (``workspace_registered``, ``a2a_queued`` ...) with
their details in ``extra=``; both formats print those details. Tokens, secrets and
request bodies are never passed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

#: LogRecord attributes that are not ``extra=`` details.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _details(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        details = " ".join(f"{key}={value}" for key, value in sorted(_details(record).items()))
        return f"{line} {details}" if details else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_details(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(verbosity: int, log_format: str) -> None:
    """``verbosity`` 0: INFO for this package, WARNING for libraries; 1+: DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING)
    logging.getLogger("devplatform").setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if verbosity > 0 else logging.WARNING)
