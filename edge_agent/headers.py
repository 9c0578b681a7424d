"""Header hygiene shared by the targets: hop-by-hop headers and forwarded-header parsing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus
#: the legacy ones proxies still see. Never forwarded in either direction; the names a
#: ``Connection`` header lists are dropped as well.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def strip_hop_by_hop(
    headers: Iterable[tuple[str, str]], also: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Return ``headers`` without hop-by-hop ones (and without the lower-case ``also``).

    Order and duplicates of the remaining pairs are kept.
    """
    pairs = list(headers)
    drop = HOP_BY_HOP | also
    listed = [v for n, v in pairs if n.lower() == "connection"]
    if listed:
        extra = {t.strip().lower() for v in listed for t in v.split(",")}
        drop = drop | extra
    return [(n, v) for n, v in pairs if n.lower() not in drop]


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The last value of ``name`` (case-insensitive), or None."""
    found = None
    lowered = name.lower()
    for n, v in headers:
        if n.lower() == lowered:
            found = v
    return found


def split_host(host: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` (IPv6 in brackets) into host and port."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else default_port
