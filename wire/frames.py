"""Frame encoding and decoding: bytes <-> :class:`Frame`, payloads <-> typed values.

One frame travels as one binary WebSocket message::

     0       1       2       3       4       5       6       7
    +-------+-------+-------+-------+-------+-------+-------+-------+---------------
    | type  | flags |  reserved (0) |      stream id (u32, BE)      | payload ...
    +-------+-------+-------+-------+-------+-------+-------+-------+---------------

The payload is whatever follows the header in the message (no length field: the
WebSocket message is the frame). Bodies are raw bytes; request and response heads are
compact JSON with headers as ordered ``[name, value]`` pairs, so duplicates survive.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from typing import Any, Final

from wire.codes import (
    ALLOWED_FLAGS,
    HEADER_SIZE,
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_PAYLOAD,
    MAX_REASON,
    MAX_WINDOW,
    ErrorCode,
    Flag,
    FrameType,
)
from wire.errors import FrameError

_HEADER: Final = struct.Struct("!BBHI")
_U32: Final = struct.Struct("!I")
_GOAWAY: Final = struct.Struct("!II")

# RFC 9110 token: header names and methods.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values are latin-1 text (bytes 0x00-0xFF) without CR, LF or NUL.
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]|[^\x00-\xff]")
# A request target: origin-form, printable, no spaces or controls.
_TARGET: Final = re.compile(r"/[\x21-\x7e\x80-\xff]*")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

Headers = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``payload`` is the raw bytes after the header."""

    type: FrameType
    stream_id: int
    payload: bytes = b""
    flags: Flag = Flag.NONE

    @property
    def fin(self) -> bool:
        return bool(self.flags & Flag.FIN)


def encode_frame(frame: Frame) -> bytes:
    """Return the bytes of one WebSocket message carrying ``frame``."""
    return _HEADER.pack(frame.type, frame.flags, 0, frame.stream_id) + frame.payload


def encode_parts(ftype: FrameType, stream_id: int, payload: bytes, flags: Flag) -> bytes:
    """Like :func:`encode_frame` without building a :class:`Frame` (the data hot path)."""
    return _HEADER.pack(ftype, flags, 0, stream_id) + payload


def decode_frame(message: bytes) -> Frame:
    """Decode one WebSocket message.

    Raises:
        FrameError: short header, unknown type, flags the type does not allow, non-zero
            reserved bits, a payload over :data:`MAX_PAYLOAD`, or a stream id that the
            frame type forbids (0 for stream frames, non-zero for session frames).
    """
    if len(message) < HEADER_SIZE:
        raise FrameError(f"frame of {len(message)} bytes is shorter than the header")
    raw_type, raw_flags, reserved, stream_id = _HEADER.unpack_from(message)
    try:
        ftype = FrameType(raw_type)
    except ValueError:
        raise FrameError(f"unknown frame type 0x{raw_type:02x}") from None
    if reserved:
        raise FrameError("reserved header bits are set")
    if raw_flags & ~ALLOWED_FLAGS.get(ftype, Flag.NONE):
        raise FrameError(f"flags 0x{raw_flags:02x} not allowed on {ftype.name}")
    if len(message) - HEADER_SIZE > MAX_PAYLOAD:
        raise FrameError(f"{ftype.name} payload over {MAX_PAYLOAD} bytes")
    _check_stream_id(ftype, stream_id)
    return Frame(ftype, stream_id, bytes(message[HEADER_SIZE:]), Flag(raw_flags))


_SESSION_TYPES: Final = frozenset({FrameType.HELLO, FrameType.WELCOME, FrameType.GOAWAY})
_STREAM_TYPES: Final = frozenset(
    {FrameType.OPEN, FrameType.RESPONSE, FrameType.DATA, FrameType.RESET}
)


def _check_stream_id(ftype: FrameType, stream_id: int) -> None:
    if ftype in _SESSION_TYPES and stream_id != 0:
        raise FrameError(f"{ftype.name} must be sent on stream 0")
    if ftype in _STREAM_TYPES and stream_id == 0:
        raise FrameError(f"{ftype.name} needs a stream id")


# --- heads -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RequestHead:
    """A public request as the relay forwards it: method, origin-form target, headers."""

    method: str
    target: str
    headers: Headers = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseHead:
    """The local target's response status and headers."""

    status: int
    headers: Headers = ()


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _load(payload: bytes, what: str) -> Any:
    if len(payload) > MAX_HEAD_SIZE:
        raise FrameError(f"{what} over {MAX_HEAD_SIZE} bytes")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FrameError(f"{what} is not valid JSON") from None


def _check_headers(raw: Any) -> Headers:
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise FrameError(f"headers must be a list of at most {MAX_HEADERS} pairs")
    pairs: list[tuple[str, str]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2):
            raise FrameError("a header must be a [name, value] pair")
        name, value = item
        if not (isinstance(name, str) and _TOKEN.fullmatch(name)):
            raise FrameError(f"invalid header name {name!r:.80}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise FrameError(f"invalid value for header {name}")
        pairs.append((name, value))
    return tuple(pairs)


def encode_request_head(head: RequestHead) -> bytes:
    return _dump({"method": head.method, "target": head.target, "headers": head.headers})


def decode_request_head(payload: bytes) -> RequestHead:
    """Parse an OPEN payload. Raises :class:`FrameError` on any malformed field."""
    obj = _load(payload, "request head")
    if not isinstance(obj, dict):
        raise FrameError("request head must be an object")
    method, target = obj.get("method"), obj.get("target")
    if not (isinstance(method, str) and _TOKEN.fullmatch(method)):
        raise FrameError("invalid request method")
    if not (isinstance(target, str) and _TARGET.fullmatch(target)):
        raise FrameError("invalid request target")
    return RequestHead(method, target, _check_headers(obj.get("headers", [])))


def encode_response_head(head: ResponseHead) -> bytes:
    return _dump({"status": head.status, "headers": head.headers})


def decode_response_head(payload: bytes) -> ResponseHead:
    """Parse a RESPONSE payload. Status must be an integer in 200..599."""
    obj = _load(payload, "response head")
    if not isinstance(obj, dict):
        raise FrameError("response head must be an object")
    status = obj.get("status")
    if type(status) is not int or not 200 <= status <= 599:
        raise FrameError("response status must be an integer in 200..599")
    return ResponseHead(status, _check_headers(obj.get("headers", [])))


# --- session payloads ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CallerCredential:
    """A credential the relay must see on public requests before forwarding them.

    ``sha256`` is the hex SHA-256 of the credential text (the bearer token, or
    ``user:password`` for basic), so the relay can check callers without learning it.
    """

    scheme: str  # "bearer" or "basic"
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """First frame of a session, agent -> relay.

    ``name`` is the tunnel name the agent asks for (``None``: let the relay choose, open
    mode only). ``caller_auth``, when not empty, lists the credentials of which public
    callers must present one; ``agent`` identifies the software for logs.
    """

    name: str | None = None
    caller_auth: tuple[CallerCredential, ...] = ()
    agent: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome:
    """The relay's answer to HELLO: the name granted, its public URLs, and limits."""

    name: str
    urls: tuple[str, ...]
    max_streams: int
    max_request_body: int


def encode_hello(hello: Hello) -> bytes:
    auth = [{"scheme": c.scheme, "sha256": c.sha256} for c in hello.caller_auth]
    return _dump({"name": hello.name, "caller_auth": auth, "agent": hello.agent})


def _credential(raw: Any) -> CallerCredential:
    if not isinstance(raw, dict):
        raise FrameError("caller credential must be an object")
    scheme, digest = raw.get("scheme"), raw.get("sha256")
    if scheme not in ("bearer", "basic"):
        raise FrameError("caller credential scheme must be bearer or basic")
    if not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
        raise FrameError("caller credential sha256 must be 64 lowercase hex digits")
    return CallerCredential(scheme, digest)


def decode_hello(payload: bytes) -> Hello:
    obj = _load(payload, "hello")
    if not isinstance(obj, dict):
        raise FrameError("hello must be an object")
    name, auth, agent = obj.get("name"), obj.get("caller_auth", []), obj.get("agent", "")
    if not (name is None or isinstance(name, str)):
        raise FrameError("hello name must be a string or null")
    if not (isinstance(auth, list) and len(auth) <= 8) or not isinstance(agent, str):
        raise FrameError("hello caller_auth must be a list of at most 8 credentials")
    return Hello(name, tuple(_credential(c) for c in auth), agent[:200])


def encode_welcome(welcome: Welcome) -> bytes:
    return _dump(dataclasses.asdict(welcome))


def decode_welcome(payload: bytes) -> Welcome:
    obj = _load(payload, "welcome")
    if not isinstance(obj, dict):
        raise FrameError("welcome must be an object")
    name, urls = obj.get("name"), obj.get("urls")
    streams, body = obj.get("max_streams"), obj.get("max_request_body")
    if not isinstance(name, str):
        raise FrameError("welcome name must be a string")
    if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise FrameError("welcome urls must be a list of strings")
    if type(streams) is not int or type(body) is not int or streams < 1 or body < 0:
        raise FrameError("welcome limits must be positive integers")
    return Welcome(name, tuple(urls), streams, body)


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
