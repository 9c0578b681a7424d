"""tunnel.link: how much a link parses per loop turn, and what it parses after failing.

A read of 256 KiB can hold 18,000 empty frames; parsed at once they held the event loop
for some 20 ms (every other tunnel of the relay waited). A link parses and hands on at
most ``MAX_MESSAGES_PER_TURN`` messages per turn, and after a close with an error code
it parses nothing more of what the peer still sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tunnel import wsframe
from tunnel.link import MAX_MESSAGES_PER_TURN, WsLink


class Transport:
    """What a WsLink uses of an asyncio transport, recording the calls."""

    def __init__(self) -> None:
        self.paused = False
        self.eof = False
        self.written: list[bytes] = []

    def get_extra_info(self, name: str) -> Any:
        return None

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def abort(self) -> None:
        pass


class Session:
    """Counts the messages it is handed, per loop turn."""

    def __init__(self) -> None:
        self.turns: list[int] = [0]

    def attach(self, link: WsLink) -> None:
        pass

    def receive(self, payload: bytes) -> None:
        self.turns[-1] += 1

    def lost(self) -> None:
        pass


def _frames(n: int) -> bytes:
    masks = wsframe.Masks()
    return b"".join(wsframe.encode(wsframe.OP_BINARY, b"x" * 8, masks) for _ in range(n))


def _link() -> tuple[WsLink, Transport, Session]:
    link = WsLink(client=False, ping_interval=None)
    transport = Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    session = Session()
    link.attach(session)  # type: ignore[arg-type]
    return link, transport, session


async def test_a_read_of_many_frames_is_handed_on_a_turn_at_a_time() -> None:
    link, transport, session = _link()
    link.data_received(_frames(2000))
    assert session.turns == [MAX_MESSAGES_PER_TURN]
    # The rest was not even parsed yet: no backlog of parsed messages, bytes kept.
    assert not link._pending and link._parser.more
    assert transport.paused  # the socket waits until the frames already read are done
    for _ in range(2000 // MAX_MESSAGES_PER_TURN + 5):
        session.turns.append(0)
        await asyncio.sleep(0)
    assert sum(session.turns) == 2000
    assert max(session.turns) <= MAX_MESSAGES_PER_TURN
    assert not transport.paused


async def test_after_an_error_close_nothing_more_is_parsed() -> None:
    link, transport, session = _link()
    link.data_received(_frames(600))
    link.close(1002, "protocol error")
    assert transport.eof  # the connection is failed: our end of TCP is closed
    link.data_received(_frames(600))
    for _ in range(10):
        await asyncio.sleep(0)
    assert sum(session.turns) == MAX_MESSAGES_PER_TURN  # only the first turn's frames
    assert not transport.paused


async def test_after_a_clean_close_the_peers_frames_are_still_read() -> None:
    link, transport, session = _link()
    link.close(1000, "drained")
    assert not transport.eof  # the closing handshake waits for the peer's close frame
    link.data_received(_frames(3))
    assert sum(session.turns) == 3
