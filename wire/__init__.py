"""The molecule-edge tunnel protocol, v1, sans I/O: bytes in, events out, bytes to send.

Start with :class:`Connection`; ``docs/protocol.md`` is the specification.
This package imports nothing that does I/O (no asyncio, websockets or httpx).
"""

from wire.codes import (
    HEADER_SIZE,
    INITIAL_SESSION_WINDOW,
    INITIAL_STREAM_WINDOW,
    MAX_FRAME_SIZE,
    MAX_HEAD_SIZE,
    MAX_PAYLOAD,
    MAX_STREAM_WINDOW,
    SUBPROTOCOL,
    ErrorCode,
    Flag,
    FrameType,
)
from wire.connection import DEFAULT_MAX_STREAMS, Connection, Role
from wire.errors import (
    FlowControlError,
    FrameError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    WireError,
)
from wire.events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from wire.frames import (
    CallerCredential,
    Frame,
    Headers,
    Hello,
    RequestHead,
    ResponseHead,
    Welcome,
    decode_frame,
    encode_frame,
)

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "HEADER_SIZE",
    "INITIAL_SESSION_WINDOW",
    "INITIAL_STREAM_WINDOW",
    "MAX_FRAME_SIZE",
    "MAX_HEAD_SIZE",
    "MAX_PAYLOAD",
    "MAX_STREAM_WINDOW",
    "SUBPROTOCOL",
    "CallerCredential",
    "Connection",
    "DataReceived",
    "ErrorCode",
    "Event",
    "Flag",
    "FlowControlError",
    "Frame",
    "FrameError",
    "FrameType",
    "GoAwayReceived",
    "Headers",
    "Hello",
    "HelloReceived",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestHead",
    "RequestReceived",
    "ResponseHead",
    "ResponseReceived",
    "Role",
    "StreamReset",
    "Welcome",
    "WelcomeReceived",
    "WindowUpdated",
    "WireError",
    "decode_frame",
    "encode_frame",
]
