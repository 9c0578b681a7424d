"""The relay's log is no amplifier: 1,000 refused connects from one client write a few
lines and a summary, not 1,000 lines (a real ``edge-relay`` process)."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

from relay.ratelog import BURST, WINDOW
from tests.e2e.procs import RelayProc, issue_token
from wire import SUBPROTOCOL
from wire.rules import CONNECT_PATH

_SUMMARY = r"suppressed (\d+) similar cause=agent_refused"
_LINE = r": agent_refused "


def _refused_connect(port: int) -> bytes:
    """A WebSocket connect with a wrong token; the relay's whole answer."""
    request = (
        f"GET {CONNECT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        "Authorization: Bearer mer_not-a-token\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _suppressed(relay: RelayProc) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(_SUMMARY, relay.output())]


def test_refused_connects_write_a_burst_and_a_summary(tmp_path: Path) -> None:
    issue_token(tmp_path, "alice")  # a token store, so every connect below is refused
    relay = RelayProc(tmp_path)
    try:
        for _ in range(1000):
            assert _refused_connect(relay.port).startswith(b"HTTP/1.1 401 ")
        # The window's summary comes from a timer, without any further request.
        relay.wait_line(_SUMMARY, timeout=WINDOW + 10)
        written = relay.count(_LINE)
        # Two windows at most on a slow machine; each writes BURST lines, then counts.
        assert BURST <= written <= 2 * BURST, written
        assert written + sum(_suppressed(relay)) == 1000
        # A later burst's summary is written when the relay exits, not lost.
        before = written + sum(_suppressed(relay))
        for _ in range(100):
            _refused_connect(relay.port)
        relay.signal(signal.SIGTERM)
        assert relay.wait() == 0
        total = relay.count(_LINE) + sum(_suppressed(relay))
        assert total - before == 100, relay.output()[-2000:]
    finally:
        relay.stop()
