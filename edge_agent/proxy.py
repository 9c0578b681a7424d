"""Which proxy, if any, the tunnel WebSocket goes through: ``--proxy URL``, else the
environment as curl reads it.

* An ``https://`` relay uses ``https_proxy`` / ``HTTPS_PROXY``, an ``http://`` relay
  ``http_proxy`` / ``HTTP_PROXY``; both fall back to ``all_proxy`` / ``ALL_PROXY``. The
  lower-case form wins when both are set; an empty value is unset.
* ``no_proxy`` / ``NO_PROXY`` lists hosts reached directly: ``*``, a host name (its
  subdomains too; a leading ``.`` or ``*.`` is ignored), an IP address or a CIDR block,
  each optionally with ``:PORT``. It applies to the environment's proxies, not to an
  explicit ``--proxy``.
* Proxy URLs: ``http://[USER:PASSWORD@]HOST[:PORT]`` (HTTP CONNECT, basic auth; port 80
  by default), ``socks5://`` (the agent resolves the relay's name) and ``socks5h://``
  (the proxy does), both ``[USER:PASSWORD@]HOST[:PORT]``, port 1080 by default.

Credentials are kept out of every message and log: :attr:`Proxy.display` is the URL
without them, and the dataclass's repr hides them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

from edge_agent.errors import ConfigError

#: Default ports by scheme.
SCHEMES: Final = {"http": 80, "socks5": 1080, "socks5h": 1080}

#: Longest user name and password (SOCKS5's RFC 1929 field is one length byte).
MAX_CREDENTIAL: Final = 255

#: Longest NO_PROXY value read (a long list is a few hundred bytes).
MAX_NO_PROXY: Final = 16 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Proxy:
    """A parsed proxy URL. ``username`` is None when the URL has no credentials."""

    scheme: str  # http | socks5 | socks5h
    host: str
    port: int
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str = dataclasses.field(default="", repr=False)

    @property
    def display(self) -> str:
        """The URL without credentials, for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_proxy(url: str, origin: str = "--proxy") -> Proxy:
    """Parse a proxy URL; ``origin`` names where it came from, for the error message.

    A URL without a scheme is an HTTP proxy, as curl takes it. Raises ConfigError,
    whose message never repeats the URL (it may hold a password).
    """
    url = url.strip()
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{origin}: not a proxy URL ({_safe(exc)})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{origin}: proxy scheme {scheme or 'missing'!r} is not supported: use "
            "http://HOST:PORT (CONNECT), socks5:// or socks5h://"
        )
    if not parts.hostname:
        raise ConfigError(f"{origin}: the proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{origin}: a proxy URL has no path or query: {scheme}://HOST:PORT")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password or "")
    if user is not None and max(len(user.encode()), len(password.encode())) > MAX_CREDENTIAL:
        raise ConfigError(f"{origin}: proxy user name or password over {MAX_CREDENTIAL} bytes")
    if user is not None and ":" in user:
        raise ConfigError(f"{origin}: a proxy user name cannot hold ':'")
    return Proxy(scheme, parts.hostname, port or SCHEMES[scheme], user, password)


def _safe(exc: ValueError) -> str:
    """urllib's message, which may quote the URL's port part but never its user info."""
    text = str(exc)
    return text if "@" not in text else "malformed URL"


def choose(
    explicit: str | None, host: str, port: int, secure: bool, env: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy for the relay at ``host:port`` (``secure``: an https/wss relay), or None
    to connect directly. Raises ConfigError for an unusable proxy URL."""
    if explicit:
        return parse_proxy(explicit)
    env = os.environ if env is None else env
    names = ["https_proxy", "HTTPS_PROXY"] if secure else ["http_proxy", "HTTP_PROXY"]
    for name in [*names, "all_proxy", "ALL_PROXY"]:
        value = env.get(name, "").strip()
        if value:
            break
    else:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if bypassed(host, port, no_proxy[:MAX_NO_PROXY]):
        return None
    return parse_proxy(value, f"${name}")


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """True when ``no_proxy`` (a NO_PROXY value) says to reach ``host:port`` directly."""
    host = host.lower().strip("[]").rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        entry, want_port = _split_port(entry)
        if not entry or (want_port is not None and want_port != port):
            continue
        if _matches(host, entry):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port
        addr, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return addr, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


def _matches(host: str, entry: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if "/" in entry and address is not None:
        try:
            return address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    entry = entry.removeprefix("*").lstrip(".").rstrip(".")
    return host == entry or (address is None and host.endswith("." + entry))
