"""Logging setup for the CLI (the format is :mod:`tunnel.logs`, shared by every command).

Events are logged as short names (``workspace_registered``, ``a2a_queued`` ...) with
their details in ``extra=``; both formats print those details. Tokens, secrets and
request bodies are never passed to the logger.
"""

from __future__ import annotations

import logging

from tunnel.logs import configure as _configure


def configure(verbosity: int, log_format: str) -> None:
    """``verbosity`` 0: INFO for this package, WARNING for libraries; 1+: DEBUG."""
    debug = verbosity > 0
    levels = {
        "devplatform": logging.DEBUG if debug else logging.INFO,
        "aiohttp.access": logging.INFO if debug else logging.WARNING,
    }
    _configure(logging.DEBUG if debug else logging.WARNING, log_format, levels)
