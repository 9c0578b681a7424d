"""The head the agent gets: the caller's head, spliced, never re-encoded.

:func:`rewrite_head` copies the caller's header lines from ``Head.raw`` byte for byte,
leaves out the ones the agent must not see, puts the new target in the request line and
appends the relay's forwarding headers. Content-Length and Transfer-Encoding stay: the
body is forwarded as it came, so its framing must reach the agent unchanged (and no
Connection option may remove them, which would desynchronise the agent from the relay).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Collection, Iterable
from typing import Final

from relay.h1.events import FORWARDING_FIELDS, Head

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Hop-by-hop (RFC 9110 section 7.6.1), plus Proxy-Authorization (credentials for the
# relay, never for the agent). Connection and Upgrade come back for an upgrade request.
_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
_FORWARDING: Final = FORWARDING_FIELDS


def _underscore_forms(name: bytes) -> set[bytes]:
    """Every spelling of ``name`` with some dashes written as underscores, which WSGI
    servers merge with the dash form (``X_Forwarded_Proto`` is HTTP_X_FORWARDED_PROTO)."""
    parts = name.split(b"-")
    forms = set()
    for seps in itertools.product((b"-", b"_"), repeat=len(parts) - 1):
        form = parts[0] + b"".join(s + p for s, p in zip(seps, parts[1:], strict=True))
        if b"_" in form:
            forms.add(form)
    return forms


_UNDERSCORED: Final = frozenset(f for n in _FORWARDING for f in _underscore_forms(n))
# Untrusted callers: every forwarding header is theirs to forge, so none passes.
_DROP: Final = _HOP_BY_HOP | {b"proxy-authorization"} | set(_FORWARDING) | _UNDERSCORED
# A trusted proxy's values are kept (X-Forwarded-For and Forwarded are extended), except
# the ones the relay always sets itself and the underscore forms no proxy writes.
_DROP_TRUSTED: Final = (
    _HOP_BY_HOP
    | {
        b"proxy-authorization",
        b"x-forwarded-for",
        b"forwarded",
        b"x-forwarded-prefix",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
    }
    | _UNDERSCORED
)
# A Connection option never removes the framing or the routing of the request.
_PROTECTED: Final = frozenset({b"content-length", b"transfer-encoding", b"host"})
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Forwarding:
    """What the forwarding headers say about one caller connection, encoded once.

    The caller's address, the scheme and the port it reached belong to the connection,
    so they are encoded when it is accepted rather than for every request on it. The
    Forwarded element also names the Host, which a caller may change between requests:
    the last one is kept with the Host it was made for (one Host per connection is the
    rule in practice).

    Args:
        client_ip: the caller's address (the TCP peer).
        proto: ``http`` or ``https``, as the caller reached the relay.
        port: the port the caller reached (X-Forwarded-Port).
    """

    __slots__ = ("_element", "_host", "ip", "port", "scheme")

    def __init__(self, client_ip: str, proto: str, port: int) -> None:
        self.ip = client_ip.encode("latin-1")
        self.scheme = proto.encode("latin-1")
        self.port = port
        self._host: bytes | None = None
        self._element = b""

    def element(self, host: bytes) -> bytes:
        """The RFC 7239 Forwarded element of a request whose Host is ``host``."""
        if host != self._host:
            self._element = _forwarded_element(self.ip, host, self.scheme)
            self._host = host
        return self._element


def rewrite_head(
    head: Head,
    *,
    target: bytes,
    forwarding: Forwarding,
    host: bytes,
    prefix: bytes | None,
    trusted: bool,
    strip: Collection[bytes] = (),
) -> bytes:
    """The request head for the agent, built by splicing ``head.raw``.

    Args:
        head: the caller's head, from :class:`~relay.h1.RequestReader`.
        target: the request target for the agent (origin form, prefix removed).
        forwarding: the caller's connection (address, scheme, port reached).
        host: the Host the caller used (X-Forwarded-Host, Forwarded ``host=``).
        prefix: the path prefix the relay removed (X-Forwarded-Prefix), or None.
        trusted: the peer is a trusted front proxy (:func:`trusted_proxy`): its
            forwarding headers are kept and extended instead of dropped.
        strip: more lowercased names to leave out (``b"authorization"`` when the relay
            consumed Basic caller credentials).

    Left out: hop-by-hop headers (Connection and the names it lists, Keep-Alive,
    Proxy-Connection, TE, Trailer, Upgrade), Proxy-Authorization, and unless
    ``trusted`` every forwarding header (Forwarded, X-Forwarded-For/-Proto/-Host/-Port/
    -Prefix, X-Real-IP and their underscore spellings). An upgrade request keeps its
    Upgrade lines and gets ``Connection: upgrade``. Appended: X-Forwarded-For (the
    trusted incoming list, then the caller's address), X-Forwarded-Proto, -Host, -Port (a
    trusted proxy's own values win), X-Forwarded-Prefix, and an RFC 7239 Forwarded
    element (after a trusted incoming list).
    """
    drop = _DROP_TRUSTED if trusted else _DROP
    connection = head.connection
    extra = [t for t in connection if t not in drop and t not in _PROTECTED] if connection else ()
    if extra or strip or head.upgrade is not None:
        drop = (drop | set(extra) | set(strip)) - ({b"upgrade"} if head.upgrade else set())
    lines = head.raw.split(b"\r\n")
    out = [head.method + b" " + target + b" " + head.version]
    out += [
        line for line, (name, _) in zip(lines[1:-2], head.headers, strict=True) if name not in drop
    ]
    if head.upgrade is not None:
        out.append(b"Connection: upgrade")
    ip, scheme, port = forwarding.ip, forwarding.scheme, forwarding.port
    element = forwarding.element(host)
    if trusted:
        out += _trusted_forwarding(head, ip, scheme, host, port, prefix, element)
        out += (b"", b"")
    elif prefix:
        out.append(_OWN_PREFIXED % (ip, scheme, host, port, prefix, element))
    else:
        out.append(_OWN % (ip, scheme, host, port, element))
    if not host:  # an HTTP/1.0 request without Host: no X-Forwarded-Host either
        return b"\r\n".join(out).replace(b"\r\nX-Forwarded-Host: \r\n", b"\r\n")
    return b"\r\n".join(out)


_OWN: Final = (
    b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n"
    b"X-Forwarded-Port: %d\r\nForwarded: %s\r\n\r\n"
)
_OWN_PREFIXED: Final = (
    b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n"
    b"X-Forwarded-Port: %d\r\nX-Forwarded-Prefix: %s\r\nForwarded: %s\r\n\r\n"
)


def _trusted_forwarding(
    head: Head,
    ip: bytes,
    scheme: bytes,
    host: bytes,
    port: int,
    prefix: bytes | None,
    element: bytes,
) -> list[bytes]:
    """Behind a trusted proxy: extend its lists, and prefer its view of the caller's
    scheme, host and port (it is the one the caller talked to)."""
    got: dict[bytes, list[bytes]] = {}
    for name, value in head.headers:
        if name.startswith((b"x-forwarded-", b"forwarded")) and value:
            got.setdefault(name, []).append(value)

    def one(name: bytes, ours: bytes) -> bytes:
        theirs = got.get(name)
        return theirs[0] if theirs and len(theirs) == 1 else ours

    chain = [*got.get(b"x-forwarded-for", []), ip]
    lines = [
        b"X-Forwarded-For: " + b", ".join(chain),
        b"X-Forwarded-Proto: " + one(b"x-forwarded-proto", scheme),
        b"X-Forwarded-Host: " + one(b"x-forwarded-host", host),
        b"X-Forwarded-Port: " + one(b"x-forwarded-port", str(port).encode()),
    ]
    outer = one(b"x-forwarded-prefix", b"").rstrip(b"/")
    if outer or prefix:
        lines.append(b"X-Forwarded-Prefix: " + outer + (prefix or b""))
    lines.append(b"Forwarded: " + b", ".join([*got.get(b"forwarded", []), element]))
    return lines


_COMMON: Final = frozenset({b"http", b"https"})


def _forwarded_element(ip: bytes, host: bytes, proto: bytes) -> bytes:
    """``for=...;host=...;proto=...`` (RFC 7239 section 4); an IPv6 node is quoted."""
    node = b'"[' + ip + b']"' if b":" in ip else (ip or b"unknown")
    if proto not in _COMMON:
        proto = _value(proto)
    if not host:
        return b"for=%s;proto=%s" % (node, proto)
    if host.translate(None, _TCHAR):  # not a token (a port's colon...): quoted
        host = _value(host)
    return b"for=%s;host=%s;proto=%s" % (node, host, proto)


def _value(value: bytes) -> bytes:
    """A token as is, anything else as a quoted-string (RFC 9110 section 5.6.4)."""
    if value in _COMMON or (value and not value.translate(None, _TCHAR)):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``--trusted-proxy`` values as networks. Raises ValueError for an invalid one."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def trusted_proxy(addr: str, cidrs: Iterable[IPNetwork | str]) -> bool:
    """Whether the peer ``addr`` is inside one of ``cidrs`` (a trusted front proxy).

    An IPv4-mapped IPv6 peer (``::ffff:10.0.0.1``, from a dual-stack socket) is matched
    as its IPv4 address. Anything that is not an IP address (a Unix socket) is not
    trusted.
    """
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False) if isinstance(cidr, str) else cidr
        if ip.version == net.version and ip in net:
            return True
    return False


def status_of(first_bytes: bytes) -> int | None:
    """The status code at the start of a response (``HTTP/1.x NNN``), for metrics.

    None until 12 bytes have arrived, and None for bytes that do not start an HTTP/1.0 or
    1.1 status line (so after 12 bytes, None means "not HTTP/1.x").
    """
    if len(first_bytes) < 12:
        return None
    if first_bytes[:7] != b"HTTP/1." or first_bytes[7:9] not in (b"0 ", b"1 "):
        return None
    code = first_bytes[9:12]
    if not code.isdigit() or code[0] == 0x30 or first_bytes[12:13] not in (b"", b" ", b"\r"):
        return None
    return int(code)
