"""Running the agent from a command line on Linux, macOS and Windows: the event loop
(uvloop where it exists), SIGINT/SIGTERM handling, and exit codes for fatal errors."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

import click

from edge_agent.errors import AgentError, AuthError, ConfigError, NameTakenError
from tunnel.heap import settle as settle_gc

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2  # bad settings (also click's usage errors)
EXIT_AUTH: Final = 3  # the relay refused or revoked the token
EXIT_NAME_TAKEN: Final = 4  # another agent session took the name
EXIT_ERROR: Final = 1  # anything else

logger = logging.getLogger(__name__)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (not on Windows), else asyncio's default."""
    if sys.platform == "win32":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Call ``callback`` on the loop for every SIGINT/SIGTERM.

    ``loop.add_signal_handler`` does not exist on Windows' loops; there the plain
    ``signal.signal`` handler hands over to the loop thread-safely.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(callback))


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, NameTakenError):
        return EXIT_NAME_TAKEN
    return EXIT_ERROR


def run_main(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main`` to completion; fatal agent errors print one clear line on stderr."""
    settle_gc()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main)
    except AgentError as exc:
        click.echo(f"edge-agent: error: {exc}", err=True)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
