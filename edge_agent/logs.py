"""Logging for the command line: ``text`` or ``json`` lines on stderr.

Modules log protocol moments as short event names (``tunnel_connected``,
``reconnect_scheduled``...) with their fields in ``extra=``; both formats print those
fields, so a log line is greppable and machine-readable.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final, Literal

LogFormat = Literal["text", "json"]

#: Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{line} {fields}" if fields else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(verbose: int = 0, fmt: LogFormat = "text") -> None:
    """0: warnings, plus the tunnel's connect/reconnect lines; 1: info; 2: debug;
    3: also every WebSocket frame."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    if verbose == 0:
        logging.getLogger("edge_agent.tunnel").setLevel(logging.INFO)
    frames = logging.DEBUG if verbose >= 3 else logging.INFO
    logging.getLogger("edge_agent.websocket").setLevel(frames)
    logging.getLogger("websockets").setLevel(frames)
