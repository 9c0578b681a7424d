"""JSON payloads: request and response heads (OPEN, RESPONSE), HELLO and WELCOME.

Heads are compact JSON objects with headers as ordered ``[name, value]`` pairs, so
duplicates such as Set-Cookie survive. Encoders emit ASCII (non-ASCII as ``\\u``
escapes); decoders accept UTF-8 JSON and ignore unknown keys, so a later minor revision
can add fields.

Every payload has one validator shared by both directions: the decoder runs it on what
the peer sent (a failure is the peer's :class:`wire.errors.FrameError`), and the
``checked_*`` encoders run it on what we are about to send, so this side never emits a
frame the peer would have to reject. A limit hit on the sending side carries
LIMIT_EXCEEDED, so the relay can answer 431 rather than break the session.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

from wire.codes import (
    MAX_AGENT_INFO,
    MAX_CALLER_AUTH,
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_PAYLOAD,
    ErrorCode,
)
from wire.errors import FrameError

# RFC 9110 token: header names and methods.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values are latin-1 text (bytes 0x00-0xFF) without CR, LF or NUL.
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]|[^\x00-\xff]")
# A request target: origin-form, printable, no spaces or controls.
_TARGET: Final = re.compile(r"/[\x21-\x7e\x80-\xff]*")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

Headers = tuple[tuple[str, str], ...]
_T = TypeVar("_T")


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


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_HEAD_SIZE:
        raise FrameError(f"{what} over {MAX_HEAD_SIZE} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FrameError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError(f"{what} must be a JSON object")
    return obj


def _check_headers(raw: Any) -> Headers:
    """Validate ``[name, value]`` pairs (lists from JSON, tuples from our own callers)."""
    if not isinstance(raw, list | tuple):
        raise FrameError("headers must be a list of [name, value] pairs")
    if len(raw) > MAX_HEADERS:
        raise FrameError(f"more than {MAX_HEADERS} headers", ErrorCode.LIMIT_EXCEEDED)
    pairs: list[tuple[str, str]] = []
    for item in raw:
        if not (isinstance(item, list | tuple) and len(item) == 2):
            raise FrameError("a header must be a [name, value] pair")
        name, value = item
        if not (isinstance(name, str) and _TOKEN.fullmatch(name)):
            raise FrameError(f"invalid header name {name!r:.80}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise FrameError(f"invalid value for header {name}")
        pairs.append((name, value))
    return tuple(pairs)


def _check_request(method: Any, target: Any, headers: Any) -> RequestHead:
    if not (isinstance(method, str) and _TOKEN.fullmatch(method)):
        raise FrameError("invalid request method")
    if not (isinstance(target, str) and _TARGET.fullmatch(target)):
        raise FrameError("invalid request target")
    return RequestHead(method, target, _check_headers(headers))


def _check_response(status: Any, headers: Any) -> ResponseHead:
    if type(status) is not int or not 200 <= status <= 599:
        raise FrameError("response status must be an integer in 200..599")
    return ResponseHead(status, _check_headers(headers))


def _fits(payload: bytes, what: str) -> bytes:
    if len(payload) > MAX_HEAD_SIZE:
        raise FrameError(f"{what} over {MAX_HEAD_SIZE} bytes", ErrorCode.LIMIT_EXCEEDED)
    return payload


def encode_request_head(head: RequestHead) -> bytes:
    return _dump({"method": head.method, "target": head.target, "headers": head.headers})


def checked_request_head(head: RequestHead) -> bytes:
    """Validate and encode an OPEN payload.

    Raises:
        FrameError: with code LIMIT_EXCEEDED for more than :data:`MAX_HEADERS` headers or
            an encoding over :data:`MAX_HEAD_SIZE`, else FRAME_ERROR (bad method, target,
            header name, or a value with CR, LF or NUL).
    """
    _check_request(head.method, head.target, head.headers)
    return _fits(encode_request_head(head), "request head")


def decode_request_head(payload: bytes) -> RequestHead:
    """Parse an OPEN payload. Raises :class:`FrameError` on any malformed field."""
    obj = _load(payload, "request head")
    return _check_request(obj.get("method"), obj.get("target"), obj.get("headers", []))


def encode_response_head(head: ResponseHead) -> bytes:
    return _dump({"status": head.status, "headers": head.headers})


def checked_response_head(head: ResponseHead) -> bytes:
    """Validate and encode a RESPONSE payload (errors as :func:`checked_request_head`)."""
    _check_response(head.status, head.headers)
    return _fits(encode_response_head(head), "response head")


def decode_response_head(payload: bytes) -> ResponseHead:
    """Parse a RESPONSE payload. Status must be an integer in 200..599."""
    obj = _load(payload, "response head")
    return _check_response(obj.get("status"), obj.get("headers", []))


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
    """First frame of a session, agent -> relay; the agent may send it again later.

    ``name`` is the tunnel name the agent asks for (``None``: let the relay choose, open
    mode only). ``caller_auth``, when not empty, lists the credentials of which public
    callers must present one (at most :data:`MAX_CALLER_AUTH`); ``agent`` identifies the
    software for logs (at most :data:`MAX_AGENT_INFO` characters). A HELLO sent again
    after WELCOME replaces ``caller_auth``; its name must not change.
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
    name, auth, agent = obj.get("name"), obj.get("caller_auth", []), obj.get("agent", "")
    if not (name is None or isinstance(name, str)):
        raise FrameError("hello name must be a string or null")
    if not (isinstance(auth, list) and len(auth) <= MAX_CALLER_AUTH):
        raise FrameError(f"hello caller_auth must be a list of at most {MAX_CALLER_AUTH}")
    if not (isinstance(agent, str) and len(agent) <= MAX_AGENT_INFO):
        raise FrameError(f"hello agent must be a string of at most {MAX_AGENT_INFO} chars")
    return Hello(name, tuple(_credential(c) for c in auth), agent)


def encode_welcome(welcome: Welcome) -> bytes:
    return _dump(
        {
            "name": welcome.name,
            "urls": welcome.urls,
            "max_streams": welcome.max_streams,
            "max_request_body": welcome.max_request_body,
        }
    )


def decode_welcome(payload: bytes) -> Welcome:
    obj = _load(payload, "welcome")
    name, urls = obj.get("name"), obj.get("urls")
    streams, body = obj.get("max_streams"), obj.get("max_request_body")
    if not isinstance(name, str):
        raise FrameError("welcome name must be a string")
    if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise FrameError("welcome urls must be a list of strings")
    if type(streams) is not int or type(body) is not int or streams < 1 or body < 0:
        raise FrameError("welcome max_streams must be >= 1 and max_request_body >= 0")
    return Welcome(name, tuple(urls), streams, body)


def checked_hello(hello: Hello) -> bytes:
    """Encode a HELLO the relay will accept (see :func:`decode_hello`), or raise FrameError.

    Session frames are rare, so the check is a real round trip through the decoder.
    """
    return _round_trip(hello, encode_hello, decode_hello)


def checked_welcome(welcome: Welcome) -> bytes:
    """Encode a WELCOME the agent will accept (see :func:`decode_welcome`)."""
    return _round_trip(welcome, encode_welcome, decode_welcome)


def _round_trip(value: _T, encode: Callable[[_T], bytes], decode: Callable[[bytes], _T]) -> bytes:
    try:
        payload = encode(value)
    except (TypeError, ValueError, AttributeError):
        raise FrameError(f"cannot encode {type(value).__name__}") from None
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload over {MAX_PAYLOAD} bytes", ErrorCode.LIMIT_EXCEEDED)
    decode(payload)  # the peer's own checks, run here first
    return payload
