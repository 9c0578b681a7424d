"""The plain request lines: their exact text, one write per loop turn, and the ``[tunnel]``
prefix of ``edge-agent start``."""

from __future__ import annotations

import asyncio
import re

import pytest

from edge_agent.console import RequestLines
from edge_agent.port import ExchangeRecord
from edge_agent.start import TunnelLines
from wire import ErrorCode

CLOCK = r"\d\d:\d\d:\d\d"


def record(
    target: str, status: int | None, error: str | None = None, reset: ErrorCode | None = None
) -> ExchangeRecord:
    return ExchangeRecord(3, "GET", target, status, 7.4, 10, 682, error, reset)


async def test_request_lines_are_written_together_each_after_the_time_of_day(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = RequestLines("http://127.0.0.1:8000")
    lines.request(record("/a?b=1", 200))
    lines.request(record("/caf\xe9", None, "local target timed out", ErrorCode.TARGET_TIMEOUT))
    lines.retrying(5.0, None)
    assert capsys.readouterr().out == ""  # not before the loop turn ends
    await asyncio.sleep(0)
    out = capsys.readouterr().out
    assert re.fullmatch(
        f"{CLOCK} GET /a\\?b=1 200 7 ms 682 B\n"
        f"{CLOCK} GET /caf\\\\xe9 TARGET_TIMEOUT 7 ms 682 B \\(local target timed out\\)\n"
        f"{CLOCK} Tunnel down \\(the session ended\\); reconnecting in 5 s\n",
        out,
    ), out


async def test_tunnel_lines_start_with_the_tunnel_label(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = TunnelLines("web")
    lines.request(record("/", 204))
    lines.resumed("resumed session after 1.0 s")
    await asyncio.sleep(0)
    out = capsys.readouterr().out
    assert re.fullmatch(
        f"\\[web\\] {CLOCK} GET / 204 7 ms 682 B\n\\[web\\] {CLOCK} Resumed session after 1.0 s\n",
        out,
    ), out
