"""The relays an agent may use, in turn: every ``--relay`` URL, and for a URL whose host
name has several addresses (DNS round robin over a relay cluster), every address.

:class:`RelayRing` answers "where next?": the client connects to :attr:`RelayRing.url`
(pinned to :meth:`RelayRing.address` when its host has several), and calls
:meth:`RelayRing.advance` after a failed connect or a lost session. Addresses are
resolved again at each connect (DNS may change); a pinned address keeps the URL's host
name for the Host header and TLS (SNI and certificate checks), as a connection by name
would. Through a proxy the proxy resolves the name, and nothing is pinned.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final

from yarl import URL

from edge_agent.errors import ConfigError, RelayUnavailable

logger = logging.getLogger(__name__)

#: Most addresses of one relay host name taken in turn (a resolver may return many).
MAX_ADDRESSES: Final = 16


class RelayRing:
    """Relay URLs (comma-separated, as ``--relay`` repeated arrives) and their addresses."""

    def __init__(self, relay_url: str) -> None:
        self.urls = [url.strip() for url in relay_url.split(",") if url.strip()]
        if not self.urls:
            raise ConfigError("no relay URL: pass --relay or set EDGE_RELAY_URL")
        self._url = 0
        self._address = 0
        self._count = 1  # addresses of the current URL's host, as last resolved

    @property
    def url(self) -> str:
        return self.urls[self._url]

    @property
    def several(self) -> bool:
        return len(self.urls) > 1 or self._count > 1

    async def address(self) -> str | None:
        """The address to pin the next connection to, or None (connect by name)."""
        host = URL(self.url).host
        if host is None or _is_address(host):
            self._count = 1
            return None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            self._count = 1
            return None  # connecting by name reports the resolver's error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))[:MAX_ADDRESSES]
        self._count = len(addresses)
        if len(addresses) < 2:
            return None
        return addresses[self._address % len(addresses)]

    def advance(self) -> bool:
        """Move to the next address, or the next URL. Returns whether anything changed."""
        if self._address + 1 < self._count:
            self._address += 1
            return True
        self._address = 0
        if len(self.urls) < 2:
            return self._count > 1
        self._url = (self._url + 1) % len(self.urls)
        return True


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


async def dial(address: str, port: int, open_timeout: float) -> socket.socket:
    """A TCP connection to ``address:port``. Raises RelayUnavailable."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(open_timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise RelayUnavailable(f"cannot reach the relay at {address}:{port}: {exc}") from exc
    return sock
