"""The one log format of every molecule-edge command: text or JSON lines on stderr.

Modules log protocol moments as short event names (``tunnel_connected``,
``agent_refused``...) with their fields in ``extra=``; both formats print those fields,
so a line is greppable and machine-readable. Nothing ever puts a token, a secret or an
Authorization value in a field.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

#: Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k[0] != "_"}


class TextFormatter(logging.Formatter):
    """``2026-12-02T06:53:46.964 INFO    relay.server: relay_listening port=8080``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created).isoformat(timespec="milliseconds")
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extra = " ".join(f"{k}={v}" for k, v in fields(record).items())
        line = f"{line} {extra}" if extra else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int, fmt: str = "text", levels: Mapping[str, int] | None = None) -> None:
    """Log to stderr at ``level`` (root), in ``fmt`` ("text" or "json"); ``levels`` sets
    named loggers' own levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, value in (levels or {}).items():
        logging.getLogger(name).setLevel(value)
