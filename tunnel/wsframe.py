"""WebSocket framing (RFC 6455 section 5) for an open tunnel link, sans I/O.

Why not websockets' own ``Protocol`` after the handshake (it does the handshake here):
measured on the tunnel's hot path, its generator-based reader cost about 5 us per
received frame and its writer about 2.7 us per sent frame (plus a ``secrets`` call per
mask), where this module costs about 1 us each way; a small request crosses the tunnel
as one frame each way, so that was a tenth of the relay's and the agent's CPU. The
masking itself is websockets' C ``apply_mask``, loaded without the websockets package
(:mod:`tunnel.mask`).

What it supports is what a tunnel link needs, and it refuses the rest as the RFC says:
no extensions (any RSV bit is a protocol error, 1002), binary and text data messages
(fragmented or not), ping/pong/close control frames (unfragmented, payload at most 125
bytes), masking required from a client and forbidden from a server, and a message size
limit (1009 past it, counted before the payload is buffered).
"""

from __future__ import annotations

import os
import struct
from typing import Final

from tunnel.mask import apply_mask

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

#: Close codes used here (RFC 6455 section 7.4.1).
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_TOO_BIG: Final = 1009

_DATA_OPS: Final = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPS: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_FINAL_BINARY: Final = 0x80 | OP_BINARY  # first header byte: FIN, no RSV bit, binary
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")

#: Random bytes fetched at once for masking keys (one ``os.urandom`` per 1,024 frames).
_MASK_POOL: Final = 4096


class WsError(Exception):
    """The peer broke RFC 6455; close the link with :attr:`code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Masks:
    """Masking keys from the OS's random source, fetched in bulk."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = _MASK_POOL

    def next(self) -> bytes:
        if self._pos >= _MASK_POOL:
            self._pool = os.urandom(_MASK_POOL)
            self._pos = 0
        pos = self._pos
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


def header(opcode: int, length: int, mask: bytes | None) -> bytes:
    """The header of a final frame of ``length`` payload bytes (``mask``: client side)."""
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((0x80 | opcode, bit | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, bit | 126)) + _U16.pack(length)
    else:
        head = bytes((0x80 | opcode, bit | 127)) + _U64.pack(length)
    return head + mask if mask is not None else head


def encode(opcode: int, payload: bytes, masks: Masks | None) -> bytes:
    """One final frame. ``masks``: this side is a client and must mask."""
    head, body = encode_parts(opcode, payload, masks)
    return head + body


def encode_parts(opcode: int, payload: bytes, masks: Masks | None) -> tuple[bytes, bytes]:
    """One final frame as its header and its (masked) payload, not joined."""
    if masks is None:
        return header(opcode, len(payload), None), payload
    mask = masks.next()
    return header(opcode, len(payload), mask), apply_mask(payload, mask)


def encode_split(
    opcode: int, head: bytes, payload: bytes, masks: Masks | None
) -> tuple[bytes, bytes, bytes]:
    """One final frame whose payload is ``head + payload``, without joining them: the
    frame header, then the two parts (masked, on the client side). ``len(head)`` must be
    a multiple of 4, so that the mask's phase is the same at the start of ``payload``."""
    size = len(head) + len(payload)
    if masks is None:
        return header(opcode, size, None), head, payload
    mask = masks.next()
    return header(opcode, size, mask), apply_mask(head, mask), apply_mask(payload, mask)


#: A received message: its payload, or (``split`` > 0) a large binary one's first
#: ``split`` bytes and the rest.
Payload = bytes | tuple[bytes, bytes]

#: Binary messages from this size on are split (when the parser is asked to).
SPLIT_AT: Final = 16 * 1024

#: Frames from this size on that span reads are kept as the reads, joined once.
LONG_AT: Final = 16 * 1024


class Parser:
    """Frames in, messages out.

    Args:
        max_size: largest data message (after reassembly); larger is WsError 1009.
        masked: whether the peer must mask (this side is the server).
        split: a multiple of 4, or 0. When set, a binary message of at least
            :data:`SPLIT_AT` bytes in one frame comes out as ``(first split bytes,
            rest)``, each copied (and unmasked) once from the received bytes: a receiver
            that strips a fixed header then needs no second copy of the rest.
    """

    __slots__ = (
        "_buf",
        "_fragments",
        "_long",
        "_long_have",
        "_long_need",
        "_mask_bit",
        "_masked",
        "_max",
        "_op",
        "_size",
        "_split",
        "more",
    )

    def __init__(self, max_size: int, masked: bool, split: int = 0) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._masked = masked
        self._mask_bit = 0x80 if masked else 0  # the MASK bit every frame must have
        self._split = split
        self._fragments: list[bytes] = []
        self._op = 0  # opcode of the message being reassembled (0: none)
        self._size = 0
        # A long frame that spans reads: the reads as received (the first from the
        # frame's first byte), their total, and the frame's size. Joined once complete.
        self._long: list[bytes | memoryview] = []
        self._long_have = 0
        self._long_need = 0
        #: The last :meth:`feed` stopped at its ``limit``: call ``feed(b"", limit)`` for
        #: the frames already buffered before reading more.
        self.more = False

    def feed(self, data: bytes, limit: int = 1 << 62) -> list[tuple[int, Payload]]:
        """Complete messages ``(opcode, payload)`` that ``data`` finishes, in order.
        Control frames come out as they arrive. Raises WsError.

        ``limit``: frames parsed at most (a read of 256 KiB can hold 18,000 empty
        frames: parsing them all at once would hold the event loop for tens of ms);
        past it the rest is kept and :attr:`more` is set.

        A frame of at least :data:`LONG_AT` bytes whose header has arrived but not all
        of its payload is not buffered by appending: the reads are kept as they are
        and the payload is joined from them once, when the last one arrives (appending
        each read to a buffer and then slicing the payload out of it copied every byte
        of a bulk transfer twice more)."""
        out: list[tuple[int, Payload]] = []
        view: bytes | bytearray | memoryview = data
        if self._long:
            rest = self._feed_long(data, out)
            if rest is None:
                self.more = False
                return out
            view, limit = rest, limit - 1
        buf = self._buf
        if buf:
            buf += view
            view = buf
        pos = 0
        end = len(view)
        frames = 0
        used = 0
        while end - pos >= 2 and frames < limit:
            used = self._frame(view, pos, end, out)
            if used <= 0:
                break
            pos += used
            frames += 1
        self.more = frames >= limit and end - pos >= 2
        if used < 0 and -used >= LONG_AT and not self.more:
            self._start_long(view, pos, -used)
        elif view is buf:
            del buf[:pos]
        elif pos < end:
            self._buf = bytearray(view[pos:])
        return out

    def _start_long(self, view: bytes | bytearray | memoryview, pos: int, need: int) -> None:
        """Keep the start of a long frame (``need`` bytes in all) that ``view`` holds
        from ``pos``: as a view of the received bytes, or a copy of the buffer."""
        first = bytes(view[pos:]) if view is self._buf else memoryview(view)[pos:]
        self._buf = bytearray()
        self._long = [first]
        self._long_have = len(first)
        self._long_need = need

    def _feed_long(self, data: bytes, out: list[tuple[int, Payload]]) -> bytes | memoryview | None:
        """Add a read to the long frame; once complete, parse it into ``out`` and return
        the bytes after it (None: the frame still waits for more)."""
        self._long.append(data)
        self._long_have += len(data)
        over = self._long_have - self._long_need
        if over < 0:
            return None
        chunks, self._long, self._long_have = self._long, [], 0
        rest: bytes | memoryview = b""
        if over:
            last = memoryview(data)
            chunks[-1], rest = last[: len(data) - over], last[len(data) - over :]
        self._long_frame(chunks, out)
        return rest

    def _long_frame(self, chunks: list[bytes | memoryview], out: list[tuple[int, Payload]]) -> None:
        """A complete long frame, as the reads that hold it (its header in the first)."""
        first = memoryview(chunks[0])
        b0, b1 = first[0], first[1]
        start = 2 + (2 if b1 & 0x7F == 126 else 8) + (4 if b1 & 0x80 else 0)
        mask = bytes(first[start - 4 : start]) if b1 & 0x80 else None
        length = self._long_need - start
        split = self._split
        if split and length >= SPLIT_AT and b0 == 0x80 | OP_BINARY and not self._op:
            if len(first) < start + split:  # the first read ended inside the split head
                first = memoryview(b"".join(chunks))
                chunks = [first]
            head = bytes(first[start : start + split])
            chunks[0] = first[start + split :]
            rest = b"".join(chunks)
            if mask is not None:  # the split is a multiple of 4: the mask's phase holds
                head, rest = apply_mask(head, mask), apply_mask(rest, mask)
            out.append((OP_BINARY, (head, rest)))
            return
        chunks[0] = first[start:]
        payload = b"".join(chunks)
        if mask is not None:
            payload = apply_mask(payload, mask)
        self._message(b0 & 0x0F, bool(b0 & 0x80), payload, out)

    def _frame(
        self,
        view: bytes | bytearray | memoryview,
        pos: int,
        end: int,
        out: list[tuple[int, Payload]],
    ) -> int:
        """Parse the frame at ``pos`` into ``out``; returns its size, 0 if its header is
        incomplete, or minus its size if only its payload is."""
        b0, b1 = view[pos], view[pos + 1]
        length = b1 & 0x7F
        start = pos + 2
        if length == 126:
            if end - start < 2:
                return 0
            (length,) = _U16.unpack_from(view, start)
            start += 2
        elif length == 127:
            if end - start < 8:
                return 0
            (length,) = _U64.unpack_from(view, start)
            start += 8
        masked = b1 & 0x80
        # The common case needs none of _check's tests, nor _message's: one final binary
        # frame, masked as it must be, outside a fragmented message, within the limit.
        plain = (
            b0 == _FINAL_BINARY
            and masked == self._mask_bit
            and length <= self._max
            and not self._op
        )
        if not plain:
            self._check(b0, b1, length)
        if masked:
            if end - start < 4:
                return 0
            mask = bytes(view[start : start + 4])
            start += 4
        if end - start < length:
            return pos - start - length
        # One copy of the payload whatever the case (a slice of a bytearray and then
        # bytes() of it was two, and unmasking a copy three).
        window = memoryview(view)[start : start + length]
        split = self._split
        if split and length >= SPLIT_AT and plain:
            head, rest = window[:split], window[split:]
            if masked:  # the split is a multiple of 4: the mask's phase holds for the rest
                out.append((OP_BINARY, (apply_mask(head, mask), apply_mask(rest, mask))))
            else:
                out.append((OP_BINARY, (bytes(head), bytes(rest))))
            return start + length - pos
        payload = apply_mask(window, mask) if masked else bytes(window)
        if plain:
            out.append((OP_BINARY, payload))
        else:
            self._message(b0 & 0x0F, bool(b0 & 0x80), payload, out)
        return start + length - pos

    def _check(self, b0: int, b1: int, length: int) -> None:
        if b0 & 0x70:
            raise WsError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if bool(b1 & 0x80) is not self._masked:
            raise WsError(CLOSE_PROTOCOL_ERROR, "masking is wrong for this side")
        opcode = b0 & 0x0F
        if opcode in _CONTROL_OPS:
            if length > 125 or not b0 & 0x80:
                raise WsError(CLOSE_PROTOCOL_ERROR, "invalid control frame")
        elif opcode not in _DATA_OPS and opcode != OP_CONTINUATION:
            raise WsError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif self._size + length > self._max:
            raise WsError(CLOSE_TOO_BIG, f"message over {self._max} bytes")

    def _message(
        self, opcode: int, fin: bool, payload: bytes, out: list[tuple[int, Payload]]
    ) -> None:
        if opcode in _CONTROL_OPS:
            out.append((opcode, payload))
            return
        if opcode == OP_CONTINUATION:
            if not self._op:
                raise WsError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        elif self._op:
            raise WsError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        elif fin:
            out.append((opcode, payload))  # the common case: one frame, one message
            return
        else:
            self._op = opcode
        self._fragments.append(payload)
        self._size += len(payload)
        if fin:
            out.append((self._op, b"".join(self._fragments)))
            self._fragments = []
            self._op = 0
            self._size = 0


def close_payload(code: int, reason: str) -> bytes:
    """The payload of a close frame; ``reason`` is cut to fit a control frame at a
    character boundary (a peer fails a close frame whose reason is not UTF-8)."""
    text = reason.encode("utf-8")
    if len(text) > 123:
        text = text[:123].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + text


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame (1005: none given)."""
    if len(payload) < 2:
        return 1005, ""
    (code,) = _U16.unpack_from(payload)
    return code, payload[2:].decode("utf-8", "replace")
