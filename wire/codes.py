"""Wire constants of protocol v2: frame types, flags, error codes and limits.

Every limit here is part of the protocol: both peers assume it without negotiation.
What happens when a peer exceeds one is written next to it.
"""

from __future__ import annotations

import enum
from typing import Final

#: WebSocket subprotocol that names this version of the protocol. The relay refuses an
#: upgrade that does not offer it; a later incompatible version gets a new name.
SUBPROTOCOL: Final = "molecule-edge.v2"

#: The subprotocol of version 1 (JSON heads). A relay answers an agent that offers only
#: this one with 400 ``protocol_version`` and a message saying to upgrade the agent.
SUBPROTOCOL_V1: Final = "molecule-edge.v1"

#: Header: type (u8), flags (u8), reserved (u16, must be 0), stream id (u32), big-endian.
HEADER_SIZE: Final = 8

#: Largest payload of any frame. A frame larger than this is a FRAME_ERROR. Bulk
#: streams send frames of up to this size (fewer frames per byte: measured, 256 KiB
#: frames moved a download with about a third less CPU than 64 KiB ones); the sender's
#: scheduler still interleaves small streams between two bulk frames, so a frame at
#: 1 GB/s holds the socket for about a quarter of a millisecond.
MAX_PAYLOAD: Final = 256 * 1024

#: Largest WebSocket message either side accepts (header + payload). Configure the
#: WebSocket library's ``max_size`` to this value on both ends.
MAX_FRAME_SIZE: Final = HEADER_SIZE + MAX_PAYLOAD

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
    OPEN = 0x03  # relay -> agent, starts a stream: u8 kind + its first bytes
    # 0x04 was RESPONSE in v1 (a JSON response head); v2 sends response bytes as DATA.
    DATA = 0x05  # stream bytes, raw
    RESET = 0x06  # abort one stream: u32 error code + UTF-8 reason
    WINDOW = 0x07  # grant credit: u32 increment; stream 0 = session window
    GOAWAY = 0x08  # drain: u32 last stream id + u32 error code + UTF-8 reason


class Flag(enum.IntFlag):
    """Frame flags (second header byte)."""

    NONE = 0x00
    #: On OPEN or DATA: the sender's half of the stream is complete (the half-close
    #: that ARCHITECTURE.md calls END). An empty DATA frame with FIN is an END.
    FIN = 0x01
    #: On the agent's DATA with FIN of an HTTP stream: the response is delimited by the
    #: end of the connection (or says ``Connection: close``), so the relay closes the
    #: public connection after it instead of reading a next request from it.
    CLOSE = 0x02


#: Flags each frame type may carry; any other bit set is a FRAME_ERROR. CLOSE without
#: FIN is a FRAME_ERROR too.
ALLOWED_FLAGS: Final = {
    FrameType.OPEN: Flag.FIN,
    FrameType.DATA: Flag.FIN | Flag.CLOSE,
}


class StreamKind(enum.IntEnum):
    """What a stream carries (first payload byte of OPEN)."""

    #: One HTTP/1.1 exchange: the request's bytes relay -> agent (head as the relay
    #: rewrote it, then the body as the caller framed it), the response's bytes back.
    #: After a ``101 Switching Protocols`` the stream is a raw pipe both ways.
    HTTP = 1
    #: A raw TCP connection accepted on the relay's port for this tunnel.
    TCP = 2
    #: A TLS connection routed by SNI and never decrypted by the relay.
    TLS = 3


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY, and by :class:`wire.errors.ProtocolError`."""

    NO_ERROR = 0  # graceful: GOAWAY on shutdown or replacement
    PROTOCOL_ERROR = 1  # the peer broke the protocol: the session is closed
    INTERNAL_ERROR = 2  # a bug or an unexpected failure in the sender
    FLOW_CONTROL_ERROR = 3  # DATA beyond the granted window, or a window overflow
    FRAME_ERROR = 4  # undecodable frame, payload too large
    REFUSED_STREAM = 5  # the agent did not start the request: safe to retry
    CANCEL = 6  # the public caller went away; the agent cancels the local request
    CONNECT_ERROR = 7  # the agent could not reach its local target (relay answers 502)
    TARGET_ERROR = 8  # the local target failed mid-response (502 or a cut stream)
    TARGET_TIMEOUT = 9  # the local target did not answer in time (504)
    UNAVAILABLE = 10  # the agent is paused or draining (relay answers 503)
    LIMIT_EXCEEDED = 11  # a size or count limit was hit (relay answers 413/429)
    REPLACED = 12  # GOAWAY: a newer session took this agent's name
    UNAUTHORIZED = 13  # GOAWAY: the agent's token was revoked
    ENHANCE_YOUR_CALM = 14  # GOAWAY: too many frames that make no progress


#: Frames that make no progress (a RESET for a stream already closed, a DATA for one
#: beyond the credit the peer had when we reset it, an empty DATA without FIN, any
#: WINDOW) that a peer may send beyond what useful traffic
#: explains: each stream either side opened or closed, each DATA frame with bytes either
#: side sent, allow :data:`IDLE_FRAMES_PER_STREAM` more (an honest peer sends one WINDOW
#: per half window it drained, so never more than a few per DATA frame). Past the
#: allowance the session is closed with ENHANCE_YOUR_CALM. An honest peer sends at most a
#: few such frames per stream (the races after a RESET); a flood of them would otherwise
#: cost the receiver a loop of Python per frame and nothing to the sender. The base
#: allowance is small because each frame of a flood costs the relay about 8 us of the
#: loop every tunnel shares: at 1,024 an attacker that reconnects after each cut kept
#: bob's p99 at 2.8-3.5x idle (``scripts/bench attacks``), at 256 1.4-1.8x.
IDLE_FRAME_ALLOWANCE: Final = 256
IDLE_FRAMES_PER_STREAM: Final = 4
