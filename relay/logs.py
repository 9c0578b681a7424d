"""Logging set-up for the ``edge-relay`` command (the format is :mod:`tunnel.logs`; the
per-request lines are rate-limited by :mod:`relay.ratelog`)."""

from __future__ import annotations

import logging

from relay import ratelog
from tunnel.logs import configure as _configure


def configure(verbose: int = 0, fmt: str = "text") -> None:
    """Log to stderr. ``verbose``: 0 = INFO, 1 = DEBUG, 2 = also WebSocket handshakes."""
    websocket = logging.DEBUG if verbose > 1 else logging.WARNING
    _configure(logging.DEBUG if verbose else logging.INFO, fmt, {"tunnel.websocket": websocket})
    for handler in logging.getLogger().handlers:
        ratelog.install(handler)
