"""A request head that the relay's public-side checks let through but the wire protocol
refuses becomes a clean 431/400 answer, and no stream id is used up."""

from __future__ import annotations

import pytest

import wire
from relay.errors import BadRequest, HeadersTooLarge
from relay.metrics import Metrics
from relay.session import AgentSession


async def _send(message: object) -> None:
    """Stands in for the ASGI send of the agent's WebSocket; nothing is read back here."""


def _session() -> AgentSession:
    conn = wire.Connection(wire.Role.RELAY)
    agent = wire.Connection(wire.Role.AGENT)
    agent.send_hello(wire.Hello("demo"))
    for message in agent.data_to_send():
        conn.receive(message)
    session = AgentSession(conn, _send, Metrics(), "127.0.0.1")
    session.welcome("demo", wire.Welcome("demo", ("http://x/a/demo/",), 16, 1024), wire.Hello())
    return session


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ((("bad name", "x"),), BadRequest),
        (tuple((f"x-h{i}", "v") for i in range(wire.MAX_HEADERS + 1)), HeadersTooLarge),
    ],
)
async def test_head_refused_by_wire_maps_to_a_public_error(
    headers: wire.Headers, error: type[Exception]
) -> None:
    session = _session()
    with pytest.raises(error):
        session.open_stream(wire.RequestHead("GET", "/", headers), end_stream=True)
    assert session.conn.open_streams == 0
    ok = session.open_stream(wire.RequestHead("GET", "/", ()), end_stream=True)
    assert ok.sid == 1  # the refused heads used up no stream id
