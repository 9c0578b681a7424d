"""Frame encoding and decoding: bytes <-> :class:`Frame`, payloads <-> typed values.

One frame travels as one binary WebSocket message::

     0       1       2       3       4       5       6       7
    +-------+-------+-------+-------+-------+-------+-------+-------+---------------
    | type  | flags |  reserved (0) |      stream id (u32, BE)      | payload ...
    +-------+-------+-------+-------+-------+-------+-------+-------+---------------

The payload is whatever follows the header in the message (no length field: the
WebSocket message is the frame). Bodies are raw bytes; the binary payloads of RESET,
WINDOW and GOAWAY are coded here, OPEN's and the JSON ones (HELLO, WELCOME) in
:mod:`wire.payloads`, re-exported here for convenience.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Final

from wire.codes import (
    ALLOWED_FLAGS,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD,
    MAX_REASON,
    MAX_WINDOW,
    ErrorCode,
    Flag,
    FrameType,
)
from wire.errors import FrameError
from wire.payloads import (
    CallerCredential,
    Hello,
    Welcome,
    checked_hello,
    checked_welcome,
    decode_hello,
    decode_open,
    decode_shared_open,
    decode_welcome,
    encode_hello,
    encode_open,
    encode_welcome,
)

__all__ = [
    "CLOSE_SET",
    "FIN_SET",
    "CallerCredential",
    "Frame",
    "Hello",
    "Parts",
    "Welcome",
    "checked_hello",
    "checked_welcome",
    "decode_frame",
    "decode_goaway",
    "decode_hello",
    "decode_open",
    "decode_parts",
    "decode_reset",
    "decode_shared_open",
    "decode_split",
    "decode_split_parts",
    "decode_welcome",
    "decode_window",
    "encode_frame",
    "encode_goaway",
    "encode_hello",
    "encode_open",
    "encode_parts",
    "encode_reason",
    "encode_welcome",
    "encode_window",
]

_HEADER: Final = struct.Struct("!BBHI")
_U32: Final = struct.Struct("!I")
_GOAWAY: Final = struct.Struct("!II")


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``payload`` is the raw bytes after the header."""

    type: FrameType
    stream_id: int
    payload: bytes = b""
    flags: Flag = Flag.NONE

    @property
    def fin(self) -> bool:
        return _FIN[self.flags]

    @property
    def close(self) -> bool:
        return _CLOSE[self.flags]


def encode_frame(frame: Frame) -> bytes:
    """Return the bytes of one WebSocket message carrying ``frame``.

    No validation: :class:`wire.Connection` checks what it sends; this is the raw codec.
    """
    return _HEADER.pack(frame.type, frame.flags, 0, frame.stream_id) + frame.payload


def encode_parts(ftype: FrameType, stream_id: int, payload: bytes, flags: Flag) -> bytes:
    """Like :func:`encode_frame` without building a :class:`Frame` (the data hot path).

    The only copy is the concatenation of header and payload into one message.
    """
    return _HEADER.pack(ftype, flags, 0, stream_id) + payload


# Lookup tables, so decoding a frame costs dictionary lookups rather than enum calls.
_TYPES: Final = {int(t): t for t in FrameType}
_FLAG_MASK: Final = {int(t): int(ALLOWED_FLAGS.get(t, Flag.NONE)) for t in FrameType}
_FLAGS: Final = tuple(Flag(i) for i in range(256))
# Flag arithmetic runs Python code in enum.py; indexing a tuple does not.
#: Whether FIN is set, by a frame's flags (``FIN_SET[frame.flags]``: no Python call).
FIN_SET: Final = tuple(bool(i & Flag.FIN) for i in range(256))
#: Whether CLOSE is set, by a frame's flags.
CLOSE_SET: Final = tuple(bool(i & Flag.CLOSE) for i in range(256))
_FIN: Final = FIN_SET
_CLOSE: Final = CLOSE_SET
_FIN_BIT: Final = int(Flag.FIN)
_CLOSE_BIT: Final = int(Flag.CLOSE)
_SESSION_TYPES: Final = frozenset({FrameType.HELLO, FrameType.WELCOME, FrameType.GOAWAY})
_STREAM_TYPES: Final = frozenset({FrameType.OPEN, FrameType.DATA, FrameType.RESET})


def decode_frame(message: bytes) -> Frame:
    """Decode one WebSocket message (``bytes``; a ``bytearray`` or ``memoryview`` is copied).

    The payload is a slice of ``message``: one copy, no other allocation but the Frame.

    Raises:
        FrameError: a text message, short header, unknown type, flags the type does not
            allow (or CLOSE without FIN), non-zero reserved bits, a payload over
            :data:`MAX_PAYLOAD`, or a stream id that the frame type forbids (0 for
            stream frames, non-zero for session frames).
    """
    ftype, stream_id, payload, flags = decode_parts(message)
    return Frame(ftype, stream_id, payload, _FLAGS[flags])


def decode_split(head: bytes, payload: bytes) -> Frame:
    """Like :func:`decode_frame` for a message received in two parts: its first
    :data:`HEADER_SIZE` bytes (``head``) and the rest, which becomes the payload as it is
    (no copy). Raises FrameError as :func:`decode_frame` does."""
    ftype, stream_id, payload, flags = decode_split_parts(head, payload)
    return Frame(ftype, stream_id, payload, _FLAGS[flags])


#: A decoded frame as :class:`wire.Connection` takes it: type, stream id, payload, and
#: the flags as an int (index :data:`FIN_SET` / :data:`CLOSE_SET` with them).
Parts = tuple[FrameType, int, bytes, int]


def decode_parts(message: bytes) -> Parts:
    """:func:`decode_frame` without building a :class:`Frame` (the receive hot path:
    one object fewer per received frame). Raises FrameError as it does."""
    if type(message) is not bytes:
        message = _as_bytes(message)
    size = len(message)
    if size < HEADER_SIZE:
        raise FrameError(f"frame of {size} bytes is shorter than the header")
    return _decode(message, message[HEADER_SIZE:], size)


def decode_split_parts(head: bytes, payload: bytes) -> Parts:
    """:func:`decode_split` without building a :class:`Frame`."""
    if len(head) != HEADER_SIZE:
        raise FrameError(f"a split frame's header must be {HEADER_SIZE} bytes")
    return _decode(head, payload, HEADER_SIZE + len(payload))


def _decode(head: bytes, payload: bytes, size: int) -> Parts:
    raw_type, raw_flags, reserved, stream_id = _HEADER.unpack_from(head)
    ftype = _TYPES.get(raw_type)
    if ftype is None:
        raise FrameError(f"unknown frame type 0x{raw_type:02x}")
    if reserved:
        raise FrameError("reserved header bits are set")
    if raw_flags & ~_FLAG_MASK[raw_type] or (raw_flags & _CLOSE_BIT and not raw_flags & _FIN_BIT):
        raise FrameError(f"flags 0x{raw_flags:02x} not allowed on {ftype.name}")
    if size > MAX_FRAME_SIZE:
        raise FrameError(f"{ftype.name} payload over {MAX_PAYLOAD} bytes")
    # WINDOW is in neither set: stream 0 is the session window, others a stream's.
    if stream_id:
        if ftype in _SESSION_TYPES:
            raise FrameError(f"{ftype.name} must be sent on stream 0")
    elif ftype in _STREAM_TYPES:
        raise FrameError(f"{ftype.name} needs a stream id")
    return ftype, stream_id, payload, raw_flags


def _as_bytes(message: object) -> bytes:
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    raise FrameError(f"expected a binary message, got {type(message).__name__}")


def encode_reason(code: ErrorCode, reason: str, prefix: bytes = b"") -> bytes:
    text = reason.encode("utf-8")[:MAX_REASON].decode("utf-8", "ignore").encode("utf-8")
    return prefix + _U32.pack(code) + text


def _decode_reason(payload: bytes, offset: int) -> tuple[ErrorCode, str]:
    if len(payload) < offset + 4:
        raise FrameError("error code missing")
    (raw,) = _U32.unpack_from(payload, offset)
    text = payload[offset + 4 :]
    if len(text) > MAX_REASON:
        raise FrameError(f"reason over {MAX_REASON} bytes")
    try:
        code = ErrorCode(raw)
    except ValueError:
        # Unknown codes from a newer peer are treated as INTERNAL_ERROR, not rejected.
        code = ErrorCode.INTERNAL_ERROR
    return code, text.decode("utf-8", "replace")


def decode_reset(payload: bytes) -> tuple[ErrorCode, str]:
    return _decode_reason(payload, 0)


def encode_goaway(last_stream_id: int, code: ErrorCode, reason: str) -> bytes:
    return encode_reason(code, reason, _U32.pack(last_stream_id))


def decode_goaway(payload: bytes) -> tuple[int, ErrorCode, str]:
    if len(payload) < _GOAWAY.size:
        raise FrameError("GOAWAY payload too short")
    (last,) = _U32.unpack_from(payload)
    code, reason = _decode_reason(payload, 4)
    return last, code, reason


def encode_window(increment: int) -> bytes:
    return _U32.pack(increment)


def decode_window(payload: bytes) -> int:
    if len(payload) != 4:
        raise FrameError("WINDOW payload must be 4 bytes")
    increment: int = _U32.unpack(payload)[0]
    if not 0 < increment <= MAX_WINDOW:
        raise FrameError(f"WINDOW increment must be in 1..{MAX_WINDOW}")
    return increment
