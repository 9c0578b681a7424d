"""Wire constants of protocol v1: frame types, flags, error codes and limits.

Every limit here is part of the protocol: both peers assume it without negotiation.
What happens when a peer exceeds one is written next to it.
"""

from __future__ import annotations

import enum
from typing import Final

#: WebSocket subprotocol that names this version of the protocol. The relay refuses an
#: upgrade that does not offer it; a future v2 gets a new subprotocol name.
SUBPROTOCOL: Final = "molecule-edge.v1"

#: Header: type (u8), flags (u8), reserved (u16, must be 0), stream id (u32), big-endian.
HEADER_SIZE: Final = 8

#: Largest payload of any frame. A DATA frame larger than this is a FRAME_ERROR; senders
#: split bodies into chunks of at most this size so one big body never holds the socket
#: for long while small streams wait.
MAX_PAYLOAD: Final = 64 * 1024

#: Largest WebSocket message either side accepts (header + payload). Configure the
#: WebSocket library's ``max_size`` to this value on both ends.
MAX_FRAME_SIZE: Final = HEADER_SIZE + MAX_PAYLOAD

#: Largest request or response head (the JSON payload of OPEN and RESPONSE). Larger heads
#: are a FRAME_ERROR; the relay refuses public requests whose headers would not fit (431).
MAX_HEAD_SIZE: Final = MAX_PAYLOAD

#: Largest number of header pairs in one head.
MAX_HEADERS: Final = 256

#: Longest RESET or GOAWAY reason text, in bytes (UTF-8). Longer text is a FRAME_ERROR;
#: the encoder cuts longer reasons at a character boundary instead.
MAX_REASON: Final = 1024

#: Most caller credentials one HELLO may list. More is a FRAME_ERROR.
MAX_CALLER_AUTH: Final = 8

#: Longest ``agent`` text in HELLO (software name and version, for logs), in characters.
#: Longer text is a FRAME_ERROR.
MAX_AGENT_INFO: Final = 200

#: Credit each side starts with for every stream, in each direction.
INITIAL_STREAM_WINDOW: Final = 256 * 1024

#: Largest window a receiver grows a fast stream to. Growth happens on the receiving side
#: (see :mod:`wire.flow`); a sender never assumes more than it was granted.
MAX_STREAM_WINDOW: Final = 4 * 1024 * 1024

#: Credit each side starts with for the whole session (sum over all streams). This is the
#: per-session memory budget: a receiver never holds more unconsumed DATA than this.
INITIAL_SESSION_WINDOW: Final = 16 * 1024 * 1024

#: Largest value of any window. A WINDOW frame that would push a window past this is a
#: FLOW_CONTROL_ERROR.
MAX_WINDOW: Final = 2**31 - 1

#: Largest stream id; a relay that would need a larger one starts a new session.
MAX_STREAM_ID: Final = 2**32 - 1


class FrameType(enum.IntEnum):
    """The kind of a frame (first header byte)."""

    HELLO = 0x01  # agent -> relay, stream 0, JSON: what the agent asks for
    WELCOME = 0x02  # relay -> agent, stream 0, JSON: public URLs and limits
    OPEN = 0x03  # relay -> agent, request head (JSON); starts a stream
    RESPONSE = 0x04  # agent -> relay, response head (JSON)
    DATA = 0x05  # body bytes, raw
    RESET = 0x06  # abort one stream: u32 error code + UTF-8 reason
    WINDOW = 0x07  # grant credit: u32 increment; stream 0 = session window
    GOAWAY = 0x08  # drain: u32 last stream id + u32 error code + UTF-8 reason


class Flag(enum.IntFlag):
    """Frame flags (second header byte)."""

    NONE = 0x00
    #: On OPEN, RESPONSE or DATA: the sender's half of the stream is complete (the
    #: half-close that ARCHITECTURE.md calls END). An empty DATA frame with FIN is an END.
    FIN = 0x01


#: Flags each frame type may carry; any other bit set is a FRAME_ERROR.
ALLOWED_FLAGS: Final = {
    FrameType.OPEN: Flag.FIN,
    FrameType.RESPONSE: Flag.FIN,
    FrameType.DATA: Flag.FIN,
}


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY, and by :class:`wire.errors.ProtocolError`."""

    NO_ERROR = 0  # graceful: GOAWAY on shutdown or replacement
    PROTOCOL_ERROR = 1  # the peer broke the protocol: the session is closed
    INTERNAL_ERROR = 2  # a bug or an unexpected failure in the sender
    FLOW_CONTROL_ERROR = 3  # DATA beyond the granted window, or a window overflow
    FRAME_ERROR = 4  # undecodable frame, payload too large, bad head
    REFUSED_STREAM = 5  # the agent did not start the request: safe to retry
    CANCEL = 6  # the public caller went away; the agent cancels the local request
    CONNECT_ERROR = 7  # the agent could not reach its local target (relay answers 502)
    TARGET_ERROR = 8  # the local target failed mid-response (502 or a cut stream)
    TARGET_TIMEOUT = 9  # the local target did not answer in time (504)
    UNAVAILABLE = 10  # the agent is paused or draining (relay answers 503)
    LIMIT_EXCEEDED = 11  # a size or count limit was hit (relay answers 413/429)
    REPLACED = 12  # GOAWAY: a newer session took this agent's name
    UNAUTHORIZED = 13  # GOAWAY: the agent's token was revoked
