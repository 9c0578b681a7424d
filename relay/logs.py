"""Logging set-up for the ``edge-relay`` command: text or JSON lines on stderr.

Events are logged as a short name (``agent_connected``, ``stream_reset``...) with their
fields in ``extra=`` (``agent``, ``stream``, ``code``...). Both formats print those
fields; nothing in the relay ever puts a token or an Authorization value in them.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Final

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)

# uvicorn logs these at ERROR for things the relay does on purpose, and the relay logs
# its own event instead: a response cut after its head (``response_aborted``,
# ``stream_reset``), and an agent refused with a plain HTTP answer before the upgrade
# (``agent_refused``; uvicorn 0.54's websockets-sansio counts a ``websocket.http.response``
# as a handshake never completed, though the answer was sent).
_EXPECTED_UVICORN: Final = (
    "ASGI callable returned without completing response.",
    "ASGI callable returned without completing handshake.",
)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created).isoformat(timespec="milliseconds")
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _EXPECTED_UVICORN


def configure(verbose: int = 0, fmt: str = "text") -> None:
    """Log to stderr. ``verbose``: 0 = INFO, 1+ = DEBUG (uvicorn's own at INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_DropExpected())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # uvicorn's per-connection messages ("WebSocket ... [accepted]") are noise at INFO.
    logging.getLogger("uvicorn.error").setLevel(logging.INFO if verbose > 1 else logging.WARNING)
