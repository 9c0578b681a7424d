"""Logging for the ``edge-agent`` command line (the format is :mod:`tunnel.logs`)."""

from __future__ import annotations

import logging
from typing import Literal

from tunnel.logs import configure

LogFormat = Literal["text", "json"]


def setup_logging(verbose: int = 0, fmt: LogFormat = "text") -> None:
    """0: warnings, plus the tunnel's connect/reconnect/resume lines; 1: info; 2: debug;
    3: also the WebSocket handshakes."""
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING
    levels = {"tunnel.websocket": logging.DEBUG if verbose >= 3 else logging.WARNING}
    if verbose == 0:
        levels["edge_agent.tunnel"] = logging.INFO
        levels["edge_agent.resume"] = logging.INFO
    configure(level, fmt, levels)
