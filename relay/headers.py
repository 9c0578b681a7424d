"""Header rules at the relay: what is forwarded, what is added, who may call a tunnel.

Requests: hop-by-hop headers are dropped (RFC 9110 section 7.6.1: Connection and the
names it lists, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade),
as are Proxy-Authorization (never for the agent) and Expect (uvicorn already answered
``100 Continue``). X-Forwarded-For is appended to; X-Forwarded-Proto, -Host and -Prefix
are the relay's own (incoming values are dropped). Names arrive lowercased from uvicorn;
order and duplicates are kept.

Responses: the same hop-by-hop set is dropped, so uvicorn chooses the framing itself
(Content-Length when the agent gave one, chunked otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final

import wire
from relay.asgi import RawHeaders, Scope
from relay.config import MAX_REQUEST_HEADERS
from relay.errors import BadRequest, BodyTooLarge, CallerUnauthorized, HeadersTooLarge, TargetFailed

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP: Final = _HOP_BY_HOP | {
    "proxy-authorization",
    "expect",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
}
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What wire accepts in a value, and what uvicorn refuses to write in a response.
_BAD_REQUEST_VALUE: Final = re.compile(r"[\r\n\x00]")
_BAD_RESPONSE_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET: Final = re.compile(r"/[\x21-\x7e\x80-\xff]*")
_DIGITS: Final = re.compile(r"[0-9]{1,19}")


def _connection_tokens(headers: RawHeaders) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    return tokens


def header_values(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for n, v in scope["headers"] if n == name]


def check_header_size(scope: Scope, limit: int) -> None:
    """Raise HeadersTooLarge when the request head is over ``limit`` bytes or too many lines."""
    headers: RawHeaders = scope["headers"]
    size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    size += sum(len(n) + len(v) + 4 for n, v in headers)
    if size > limit or len(headers) > MAX_REQUEST_HEADERS:
        raise HeadersTooLarge()


def request_target(raw_rest: str, query: bytes) -> str:
    """Origin-form target for the agent: the path after the prefix, query kept, raw."""
    target = raw_rest or "/"
    if query:
        target += "?" + query.decode("latin-1")
    if not _TARGET.fullmatch(target):
        raise BadRequest("invalid request target")
    return target


def forwarded_headers(
    scope: Scope, prefix: str | None, strip_authorization: bool
) -> list[tuple[str, str]]:
    """Request headers as the agent gets them (see the module docstring)."""
    raw: RawHeaders = scope["headers"]
    drop = _REQUEST_DROP | _connection_tokens(raw)
    if strip_authorization:
        drop = drop | {"authorization"}
    pairs: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    host = ""
    for name_b, value_b in raw:
        # OWS around a value is not part of it (RFC 9110 5.5); httptools strips only the
        # leading part, and "Content-Length: 5 " made the agent's HTTP client fail.
        name, value = name_b.decode("latin-1"), value_b.decode("latin-1").strip(" \t")
        if not _TOKEN.fullmatch(name) or _BAD_REQUEST_VALUE.search(value):
            raise BadRequest("invalid header")
        if name == "host":
            host = value
        if name == "x-forwarded-for":
            forwarded_for.append(value)
        elif name not in drop:
            pairs.append((name, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(client[0])
    if forwarded_for:
        pairs.append(("x-forwarded-for", ", ".join(forwarded_for)))
    pairs.append(("x-forwarded-proto", scope.get("scheme", "http")))
    if host:
        pairs.append(("x-forwarded-host", host))
    if prefix:
        pairs.append(("x-forwarded-prefix", prefix))
    return pairs


def announced_length(scope: Scope, limit: int) -> int | None:
    """The request's Content-Length (None: chunked or absent). 413 when over ``limit``.

    Framing is checked here, from the head, before anything is forwarded: uvicorn starts
    the app at the end of the head, before its parser may reject the body's framing.
    The only transfer coding accepted is a single ``chunked`` (another would reach the
    agent undeclared, Transfer-Encoding being hop-by-hop), never with Content-Length.
    """
    codings = header_values(scope, b"transfer-encoding")
    if codings and (len(codings) > 1 or codings[0].strip().lower() != "chunked"):
        raise BadRequest("unsupported Transfer-Encoding")
    values = header_values(scope, b"content-length")
    if not values:
        return None
    if codings:
        raise BadRequest("Content-Length and Transfer-Encoding together")
    if len(set(values)) != 1 or not _DIGITS.fullmatch(values[0].strip()):
        raise BadRequest("invalid Content-Length")
    length = int(values[0])
    if length > limit:
        raise BodyTooLarge()
    return length


def has_body(scope: Scope, length: int | None) -> bool:
    if length is not None:
        return length > 0
    return bool(header_values(scope, b"transfer-encoding"))


# -- caller auth ----------------------------------------------------------------------


def check_caller(scope: Scope, credentials: tuple[wire.CallerCredential, ...], realm: str) -> bool:
    """Enforce a tunnel's caller auth. Returns whether Authorization must be stripped.

    The SHA-256 of the presented credential (bearer token, or ``user:password`` for
    basic) is compared with every stored digest of that scheme in constant time.
    Basic credentials are the relay's business and are stripped; a bearer is forwarded,
    because the agent may check the same secret again.

    Raises:
        CallerUnauthorized: credentials required and none matched.
    """
    if not credentials:
        return False
    scheme, digest = _presented(header_values(scope, b"authorization"))
    matched = False
    for cred in credentials:
        if cred.scheme == scheme and hmac.compare_digest(cred.sha256, digest):
            matched = True
    if not matched:
        schemes = tuple(sorted({c.scheme for c in credentials}))
        raise CallerUnauthorized(schemes, realm)
    return scheme == "basic"


def _presented(values: list[str]) -> tuple[str, str]:
    """(scheme, sha256 hex) of the one Authorization header; ("", "") if unusable."""
    if len(values) != 1:
        return "", ""
    scheme, _, credential = values[0].strip().partition(" ")
    scheme, credential = scheme.lower(), credential.strip()
    if scheme == "basic":
        try:
            credential = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
    elif scheme != "bearer":
        return "", ""
    return scheme, hashlib.sha256(credential.encode("utf-8")).hexdigest()


# -- responses ---------------------------------------------------------------------------


def response_headers(head: wire.ResponseHead) -> RawHeaders:
    """The agent's response headers as uvicorn will write them.

    Raises:
        TargetFailed: a value uvicorn would refuse, or an unusable Content-Length.
    """
    drop = _HOP_BY_HOP | {
        t.strip().lower()
        for n, v in head.headers
        if n.lower() == "connection"
        for t in v.split(",")
    }
    out: RawHeaders = []
    lengths: set[str] = set()
    for name, value in head.headers:
        lname = name.lower()
        if lname in drop:
            continue
        if _BAD_RESPONSE_VALUE.search(value):
            raise TargetFailed("the agent sent an invalid response header")
        if lname == "content-length":
            if lengths:
                lengths.add(value.strip())  # equal duplicates are written once
                continue
            lengths.add(value.strip())
        out.append((lname.encode("latin-1"), value.encode("latin-1")))
    if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(next(iter(lengths)))):
        raise TargetFailed("the agent sent an invalid Content-Length")
    return out
