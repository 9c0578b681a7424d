"""SSRF rules for agent URLs, at register time and at dispatch time.

Register (``validateAgentURL``): scheme http or https; the host name ``localhost``
is allowed by name without a lookup; an IP literal, or every address a host name
resolves to, must avoid

- always: 169.254/16, 127/8, fe80::/10, ::1, 192.0.2/24, 198.51.100/24,
  203.0.113/24, 100.64/10 (CGNAT), 224/4 (multicast), fc00::/8, 2001:db8::/32;
- unless SaaS mode: 10/8, 172.16/12, 192.168/16, fd00::/8.

A name that does not resolve is refused.

Dispatch (``isSafeURL``, run before every A2A call): scheme http or https, a
non-empty host, and no loopback, unspecified, link-local (unicast or multicast),
169.254/16, TEST-NET, CGNAT, RFC 1918 (unless SaaS) or fc00::/7 (fd00::/8 allowed
in SaaS) address, for the literal or for every resolved address. The real
platform resolves ``localhost`` here and refuses it unless it runs with
``MOLECULE_ENV=development``; the dev platform accepts the name ``localhost``
without a lookup when ``dispatch_localhost`` is on (the default), so an agent on
this machine can be reached while ``http://127.0.0.1:...`` stays refused.
IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from devplatform.config import DNS_TIMEOUT_SECONDS
from devplatform.errors import UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves a host name to its addresses; raises ``OSError`` when it cannot.
Resolver = Callable[[str], Awaitable[list[str]]]

_net = ipaddress.ip_network

REGISTER_ALWAYS_BLOCKED = (
    _net("169.254.0.0/16"),
    _net("127.0.0.0/8"),
    _net("fe80::/10"),
    _net("::1/128"),
    _net("192.0.2.0/24"),
    _net("198.51.100.0/24"),
    _net("203.0.113.0/24"),
    _net("100.64.0.0/10"),
    _net("224.0.0.0/4"),
    _net("fc00::/8"),
    _net("2001:db8::/32"),
)
PRIVATE_V4 = (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"))
ULA_V6, FD00_V6 = _net("fc00::/7"), _net("fd00::/8")
REGISTER_PRIVATE_BLOCKED = (*PRIVATE_V4, FD00_V6)
DISPATCH_ALWAYS_BLOCKED_V4 = (
    _net("169.254.0.0/16"),
    _net("192.0.2.0/24"),
    _net("198.51.100.0/24"),
    _net("203.0.113.0/24"),
    _net("100.64.0.0/10"),
    _net("224.0.0.0/24"),  # link-local multicast (Go's IsLinkLocalMulticast)
)


async def system_resolver(host: str) -> list[str]:
    """Resolve with the system resolver (``getaddrinfo``) in the loop's executor."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def parse_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split(url: str) -> tuple[str, str]:
    """``(scheme, host)`` with the host as Go's ``URL.Hostname()`` gives it (case kept)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeURLError(f"url is not valid: {exc}") from exc
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host = hostport[1 : hostport.find("]")] if "]" in hostport else ""
    else:
        host = hostport.partition(":")[0]
    if parts.scheme not in ("http", "https"):
        raise UnsafeURLError(f"url scheme must be http or https, got {parts.scheme!r}")
    return parts.scheme, host


async def _addresses(host: str, resolver: Resolver) -> list[IPAddress]:
    try:
        texts = await resolver(host)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnsafeURLError(f"hostname {host!r} cannot be resolved") from exc
    addresses = [address for text in texts if (address := parse_address(text)) is not None]
    if not addresses:
        raise UnsafeURLError(f"hostname {host!r} resolved to no address")
    return addresses


def register_blocks(address: IPAddress, saas: bool) -> bool:
    ranges: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = REGISTER_ALWAYS_BLOCKED
    if not saas:
        ranges = (*REGISTER_ALWAYS_BLOCKED, *REGISTER_PRIVATE_BLOCKED)
    return any(address.version == net.version and address in net for net in ranges)


def dispatch_blocks(address: IPAddress, saas: bool) -> bool:
    if address.is_loopback or address.is_unspecified or address.is_link_local:
        return True
    if isinstance(address, ipaddress.IPv4Address):
        if any(address in net for net in DISPATCH_ALWAYS_BLOCKED_V4):
            return True
        return not saas and any(address in net for net in PRIVATE_V4)
    if address.is_multicast and (address.packed[1] & 0x0F) in (1, 2):
        return True  # interface-local (ff01::/16) and link-local (ff02::/16) multicast
    if address in ULA_V6:
        return not (saas and address in FD00_V6)
    return False


async def validate_register_url(url: str, *, saas: bool, resolver: Resolver) -> None:
    """Raise :class:`UnsafeURLError` when register must refuse ``url``."""
    _, host = _split(url)
    literal = parse_address(host)
    if literal is not None:
        if register_blocks(literal, saas):
            raise UnsafeURLError("url targets a blocked address")
        return
    if host == "localhost":
        return
    for address in await _addresses(host, resolver):
        if register_blocks(address, saas):
            raise UnsafeURLError(f"hostname {host!r} resolves to a blocked address")


async def validate_dispatch_url(
    url: str, *, saas: bool, allow_localhost: bool, resolver: Resolver
) -> None:
    """Raise :class:`UnsafeURLError` when an A2A call to ``url`` must not be made."""
    _, host = _split(url)
    if not host:
        raise UnsafeURLError("empty hostname")
    literal = parse_address(host)
    if literal is not None:
        if dispatch_blocks(literal, saas):
            raise UnsafeURLError("forbidden IP literal")
        return
    if allow_localhost and host == "localhost":
        return
    for address in await _addresses(host, resolver):
        if dispatch_blocks(address, saas):
            raise UnsafeURLError(f"hostname {host!r} resolves to a forbidden address")
