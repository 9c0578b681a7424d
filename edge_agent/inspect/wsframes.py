"""WebSocket frames (RFC 6455 section 5.2), parsed observe-only after a 101.

Fed the bytes of one direction in any chunking, :class:`FrameParser` returns whole
messages: a data message once its final fragment arrived (control frames that come
between fragments are messages of their own). Payloads are never buffered: only the
first ``max_preview`` bytes of a message are kept (unmasked), the rest is counted.
Extensions (permessage-deflate) are not undone: such a message shows as it went.
"""

from __future__ import annotations

import dataclasses
from typing import Final

OPCODES: Final = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


@dataclasses.dataclass(frozen=True, slots=True)
class WsMessage:
    opcode: int  # of the first frame: 1 text, 2 binary, 8 close, 9 ping, 10 pong
    size: int  # payload bytes of all its frames
    preview: bytes  # the first max_preview bytes of the payload, unmasked

    @property
    def kind(self) -> str:
        return OPCODES.get(self.opcode, f"opcode {self.opcode}")


class _Message:
    __slots__ = ("opcode", "preview", "size")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.size = 0
        self.preview = bytearray()


class FrameParser:
    """One direction of a WebSocket; :meth:`feed` returns the messages completed."""

    def __init__(self, max_preview: int) -> None:
        self.max_preview = max_preview
        self._head = bytearray()
        self._remaining = 0  # payload bytes of the current frame still to come
        self._in_payload = False
        self._fin = False
        self._key = b""
        self._pos = 0  # offset in the current frame's payload (for the mask)
        self._frame: _Message | None = None  # the message the current frame adds to
        self._data: _Message | None = None  # a fragmented data message in progress

    def feed(self, data: bytes) -> list[WsMessage]:
        out: list[WsMessage] = []
        i = 0
        while i < len(data):
            if self._in_payload:
                i = self._payload(data, i, out)
            else:
                i = self._header(data, i, out)
        return out

    def _header(self, data: bytes, i: int, out: list[WsMessage]) -> int:
        need = _header_size(self._head) - len(self._head)
        self._head += data[i : i + need]
        i += min(need, len(data) - i)
        if len(self._head) == _header_size(self._head):
            self._start_frame(bytes(self._head), out)
            self._head.clear()
        return i

    def _start_frame(self, head: bytes, out: list[WsMessage]) -> None:
        self._fin = bool(head[0] & 0x80)
        opcode = head[0] & 0x0F
        masked = bool(head[1] & 0x80)
        length = head[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(head[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(head[2:10], "big"), 10
        self._key = head[offset : offset + 4] if masked else b""
        if opcode >= 8 or opcode != 0 or self._data is None:
            message = _Message(opcode)
            if opcode < 8:
                self._data = message
        else:
            message = self._data
        self._frame = message
        self._remaining, self._pos = length, 0
        self._in_payload = length > 0
        if length == 0:
            self._end_frame(out)

    def _payload(self, data: bytes, i: int, out: list[WsMessage]) -> int:
        take = min(self._remaining, len(data) - i)
        message = self._frame
        assert message is not None
        room = self.max_preview - len(message.preview)
        if room > 0:
            message.preview += _unmask(data[i : i + min(take, room)], self._key, self._pos)
        message.size += take
        self._pos += take
        self._remaining -= take
        if self._remaining == 0:
            self._in_payload = False
            self._end_frame(out)
        return i + take

    def _end_frame(self, out: list[WsMessage]) -> None:
        message = self._frame
        assert message is not None
        self._frame = None
        if message.opcode >= 8 or self._fin:
            out.append(WsMessage(message.opcode, message.size, bytes(message.preview)))
            if message is self._data:
                self._data = None


def _header_size(head: bytearray) -> int:
    """Bytes of the frame header that starts ``head`` (2 until its length is known)."""
    if len(head) < 2:
        return 2
    length = head[1] & 0x7F
    extra = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extra + (4 if head[1] & 0x80 else 0)


def _unmask(part: bytes, key: bytes, pos: int) -> bytes:
    if not key or not part:
        return part
    shift = pos % 4
    rotated = key[shift:] + key[:shift]
    mask = (rotated * (len(part) // 4 + 1))[: len(part)]
    value = int.from_bytes(part, "big") ^ int.from_bytes(mask, "big")
    return value.to_bytes(len(part), "big")
