"""The stream state machine, as data.

Theory of operation
-------------------
A stream is a byte pipe with two *halves*, one per direction, and each half is a tiny
machine of its own. The relay's half starts with OPEN (the HEAD move: it carries the
stream's first bytes), then any number of DATA frames, and ends with the FIN flag (on
OPEN itself when those bytes are all, or on the last DATA frame; an empty DATA frame
with FIN is an END). The agent's half has no head: it is in BODY from the moment the
stream exists, so its first frame is DATA. The table needs no roles: the connection
creates each half in its first state and tells the table which half a frame moves.

Per half::

    IDLE --HEAD--> BODY --DATA--> BODY
      |              |
      +--HEAD_FIN--> DONE <--DATA_FIN--+

A stream is *closed* once both halves are DONE, or at once when either side sends or
receives RESET (from any state). Anything not in :data:`TRANSITIONS` is illegal:
:func:`advance` raises :class:`wire.errors.LocalProtocolError`, which
:meth:`wire.Connection.receive` turns into a RemoteProtocolError when the peer made
the move. All protocol violations end the session (there are no stream-level protocol
errors), because a peer that breaks framing cannot be trusted with other streams.

Frames that arrive for a stream this side already closed are dropped silently: after a
RESET crosses frames in flight, both peers may still see a few of them (HTTP/2 rules).
"""

from __future__ import annotations

import enum
from typing import Final

from wire.errors import LocalProtocolError


class Half(enum.Enum):
    """State of one direction of a stream."""

    # Members are singletons: hash by identity, not by Enum's Python-level name hash
    # (a table lookup per frame is on the data path).
    __hash__ = object.__hash__

    IDLE = "idle"  # head not yet sent
    BODY = "body"  # head sent, body may follow
    DONE = "done"  # FIN sent (or stream reset)


class Move(enum.Enum):
    """What a frame does to the half it belongs to."""

    __hash__ = object.__hash__

    HEAD = "head"
    HEAD_FIN = "head+fin"
    DATA = "data"
    DATA_FIN = "data+fin"


TRANSITIONS: Final[dict[tuple[Half, Move], Half]] = {
    (Half.IDLE, Move.HEAD): Half.BODY,
    (Half.IDLE, Move.HEAD_FIN): Half.DONE,
    (Half.BODY, Move.DATA): Half.BODY,
    (Half.BODY, Move.DATA_FIN): Half.DONE,
}


def advance(state: Half, move: Move) -> Half:
    """Return the state after ``move``, or raise LocalProtocolError if it is illegal."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise LocalProtocolError(f"{move.value} not allowed when half is {state.value}") from None


def head_move(fin: bool) -> Move:
    return Move.HEAD_FIN if fin else Move.HEAD


def data_move(fin: bool) -> Move:
    return Move.DATA_FIN if fin else Move.DATA
