"""Payloads: OPEN (binary), HELLO and WELCOME (JSON).

OPEN carries the stream's kind in one byte, then the stream's first bytes (for an HTTP
stream, the request head as the relay rewrote it, and as much of the body as came with
it). No head is ever encoded as an object: the bytes are the caller's.

HELLO and WELCOME are compact JSON objects, sent once per session. Encoders emit ASCII
(non-ASCII as ``\\u`` escapes); decoders accept UTF-8 JSON and ignore unknown keys, so a
later minor revision can add fields (session resumption added ``resume``).

Every JSON payload has one validator shared by both directions: the decoder runs it on
what the peer sent (a failure is the peer's :class:`wire.errors.FrameError`), and the
``checked_*`` encoders run it on what we are about to send, so this side never emits a
frame the peer would have to reject.
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
    ErrorCode,
    StreamKind,
)
from wire.errors import FrameError
from wire.resume import (
    ResumeOffer,
    ResumeTicket,
    decode_offer,
    decode_ticket,
    encode_offer,
    encode_ticket,
)
from wire.shared import (
    TunnelGrant,
    TunnelRequest,
    decode_grants,
    decode_requests,
    encode_grants,
    encode_requests,
)

#: Largest HELLO or WELCOME payload. Both are a few hundred bytes; the cap keeps a
#: hostile peer's JSON from costing the other side more than a small parse.
MAX_SESSION_PAYLOAD: Final = 64 * 1024

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_KINDS: Final = {int(k): k for k in StreamKind}
_KIND_BYTES: Final = {k: bytes((k,)) for k in StreamKind}

#: The ``tunnel`` key of HELLO and WELCOME: what kind of tunnel the agent opens. Left out
#: for ``http`` (the default), so an HTTP session's frames are those of every v2 peer.
TUNNEL_NAMES: Final = {StreamKind.HTTP: "http", StreamKind.TCP: "tcp", StreamKind.TLS: "tls"}
_TUNNELS: Final = {text: kind for kind, text in TUNNEL_NAMES.items()}

_T = TypeVar("_T")


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_SESSION_PAYLOAD:
        raise FrameError(f"{what} over {MAX_SESSION_PAYLOAD} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FrameError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError(f"{what} must be a JSON object")
    return obj


# --- OPEN -----------------------------------------------------------------------------


def encode_open(kind: StreamKind, data: bytes, index: int | None = None) -> bytes:
    """OPEN payload: the kind byte, the tunnel index byte on a session that carries
    several tunnels (:mod:`wire.shared`; None: a single-name session, no byte), then the
    stream's first bytes (may be empty)."""
    if index is None:
        return _KIND_BYTES[kind] + data
    return _KIND_BYTES[kind] + bytes((index,)) + data


def decode_open(payload: bytes) -> tuple[StreamKind, bytes]:
    """Split an OPEN payload. Raises FrameError for an empty payload or unknown kind."""
    if not payload:
        raise FrameError("OPEN without a stream kind")
    kind = _KINDS.get(payload[0])
    if kind is None:
        raise FrameError(f"unknown stream kind {payload[0]}")
    return kind, payload[1:]


def decode_shared_open(payload: bytes) -> tuple[StreamKind, int, bytes]:
    """Split the OPEN payload of a session that carries several tunnels: kind, tunnel
    index, first bytes. Raises FrameError as :func:`decode_open` does, or without an
    index."""
    kind, rest = decode_open(payload)
    if not rest:
        raise FrameError("OPEN without a tunnel index on a shared session")
    return kind, rest[0], rest[1:]


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
    software for logs (at most :data:`MAX_AGENT_INFO` characters). ``tunnel`` is what
    the agent serves: HTTP exchanges (the default), or raw TCP or TLS connections, each
    public connection one stream of that kind. A HELLO sent again after WELCOME replaces
    ``caller_auth``; its name and tunnel must not change. ``pool``: join the name's pool
    (several sessions serve it, new exchanges spread over them) instead of replacing
    the session that holds it; encoded only when true. ``tunnels``: extra HTTP
    tunnels for this session (:mod:`wire.shared`); encoded only when not empty.
    ``resume`` (see :mod:`wire.resume`): asks for resumption, or resumes a dropped
    session; left out when None.
    """

    name: str | None = None
    caller_auth: tuple[CallerCredential, ...] = ()
    agent: str = ""
    tunnel: StreamKind = StreamKind.HTTP
    pool: bool = False
    tunnels: tuple[TunnelRequest, ...] = ()
    resume: ResumeTicket | None = None


#: Largest ``pool`` count a WELCOME may carry (the relay's cap on one name's pool is
#: lower or equal).
MAX_POOL: Final = 1024

#: Longest ``replaced`` text in a WELCOME (an address, or an address and a port).
MAX_REPLACED: Final = 200


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome:
    """The relay's answer to HELLO: the name granted, its public URLs, and limits.

    ``replaced``, when not None, says this session took the name from a session that
    was live: the address that session came from (at most :data:`MAX_REPLACED`
    characters). Encoded only when set, so a WELCOME without it is byte for byte the
    same as before the key existed.

    ``tunnel`` repeats the kind of tunnel granted (left out for HTTP, likewise): an
    agent that asked for TCP or TLS and gets a WELCOME without it is talking to a relay
    that does not know such tunnels.

    ``pool``, for a session that joined its name's pool: how many sessions the pool
    holds with this one (at most :data:`MAX_POOL`); 0 (not encoded) otherwise.
    ``resume`` (see :mod:`wire.resume`): the relay offers resumption of this session,
    or says it resumed one; left out when None.
    """

    name: str
    urls: tuple[str, ...]
    max_streams: int
    max_request_body: int
    replaced: str | None = None
    tunnel: StreamKind = StreamKind.HTTP
    pool: int = 0
    tunnels: tuple[TunnelGrant, ...] | None = None  # one per HELLO ``tunnels`` entry
    resume: ResumeOffer | None = None


def encode_hello(hello: Hello) -> bytes:
    obj: dict[str, Any] = {
        "name": hello.name,
        "caller_auth": _auth(hello.caller_auth),
        "agent": hello.agent,
    }
    if hello.pool:
        obj["pool"] = True
    if hello.tunnels:
        obj["tunnels"] = encode_requests(hello.tunnels, _auth)
    if hello.resume is not None:
        obj["resume"] = encode_ticket(hello.resume)
    return _dump(_with_tunnel(obj, hello.tunnel))


def _auth(caller_auth: tuple[CallerCredential, ...]) -> list[dict[str, str]]:
    return [{"scheme": c.scheme, "sha256": c.sha256} for c in caller_auth]


def _with_tunnel(obj: dict[str, Any], tunnel: StreamKind) -> dict[str, Any]:
    if tunnel is not StreamKind.HTTP:
        obj["tunnel"] = TUNNEL_NAMES[tunnel]
    return obj


def _tunnel(obj: dict[str, Any], what: str) -> StreamKind:
    raw = obj.get("tunnel", "http")
    kind = _TUNNELS.get(raw) if isinstance(raw, str) else None
    if kind is None:
        raise FrameError(f"{what} tunnel must be one of http, tcp, tls")
    return kind


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
    pool = obj.get("pool", False)
    if type(pool) is not bool:
        raise FrameError("hello pool must be true or false")
    kind, tunnels = _tunnel(obj, "hello"), decode_requests(obj.get("tunnels"), _credential)
    if tunnels and kind is not StreamKind.HTTP:
        raise FrameError("hello tunnels are for http tunnels only")
    if tunnels and pool:
        raise FrameError("hello pool and tunnels do not go together: a pooled name has its own")
    credentials = tuple(_credential(c) for c in auth)
    resume = decode_ticket(obj["resume"]) if "resume" in obj else None
    return Hello(name, credentials, agent, kind, pool, tunnels, resume=resume)


def encode_welcome(welcome: Welcome) -> bytes:
    obj: dict[str, Any] = {
        "name": welcome.name,
        "urls": welcome.urls,
        "max_streams": welcome.max_streams,
        "max_request_body": welcome.max_request_body,
    }
    if welcome.replaced is not None:
        obj["replaced"] = welcome.replaced
    if welcome.resume is not None:
        obj["resume"] = encode_offer(welcome.resume)
    if welcome.pool:
        obj["pool"] = welcome.pool
    if welcome.tunnels is not None:
        obj["tunnels"] = encode_grants(welcome.tunnels)
    return _dump(_with_tunnel(obj, welcome.tunnel))


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
    replaced = obj.get("replaced")
    if not (replaced is None or (isinstance(replaced, str) and len(replaced) <= MAX_REPLACED)):
        raise FrameError(f"welcome replaced must be a string of at most {MAX_REPLACED} chars")
    pool = obj.get("pool", 0)
    if type(pool) is not int or not 0 <= pool <= MAX_POOL:
        raise FrameError(f"welcome pool must be a count from 0 to {MAX_POOL}")
    kind, tunnels = _tunnel(obj, "welcome"), decode_grants(obj.get("tunnels"))
    resume = decode_offer(obj["resume"]) if "resume" in obj else None
    return Welcome(name, tuple(urls), streams, body, replaced, kind, pool, tunnels, resume)


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
    if len(payload) > MAX_SESSION_PAYLOAD:
        raise FrameError(f"payload over {MAX_SESSION_PAYLOAD} bytes", ErrorCode.LIMIT_EXCEEDED)
    decode(payload)  # the peer's own checks, run here first
    return payload
