"""Opening the tunnel WebSocket, and the one place where its failures are classified.

Fatal (raised as is by the reconnect loop): 401/403 -> :class:`AuthError`, 409
``name_in_use`` (open mode: another machine holds the name) -> :class:`NameTakenError`,
any other 4xx, a bad URL or name, a relay that does not speak our subprotocol ->
:class:`ConfigError`, an untrusted certificate or pin mismatch -> :class:`TlsError`.
Transient (retried with backoff): network errors, timeouts, broken handshakes, 5xx and
429 -> :class:`RelayUnavailable`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import ssl
from typing import Final

from yarl import URL

import tunnel
from edge_agent import proxy, proxy_dial, relays
from edge_agent.errors import (
    AuthError,
    ConfigError,
    NameTakenError,
    NotARelay,
    RelayUnavailable,
    TlsError,
)
from edge_agent.tls import TlsOptions, check_pin, client_context
from tunnel.client import Response
from wire.rules import AGENT_KEY_HEADER, CONNECT_PATH, valid_name

#: TCP + TLS + HTTP upgrade must finish within this (websockets' default is 10 s too).
OPEN_TIMEOUT: Final = 10.0

#: WebSocket pings: every 20 s, and the relay is declared dead if no pong comes back in
#: 20 s (websockets' defaults, written down because the contract fixes them: a dead
#: relay is noticed within about 40 s, and NAT state stays fresh).
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0

#: Kernel send buffer of the tunnel's socket (Linux doubles it; autotuning lets it
#: grow to megabytes). Frames leave in order, so a small response queued behind a bulk
#: download waits until the relay read everything ahead of it: a bounded buffer bounds
#: that wait (about 2 ms at 250 MB/s) without slowing the download.
SEND_BUFFER: Final = 256 * 1024

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectOptions:
    """Transport settings for the tunnel WebSocket.

    ``proxy``: an HTTP CONNECT or SOCKS5 proxy URL (:mod:`edge_agent.proxy`); None takes
    the environment's (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...), if any.
    ``agent_key``: sent as ``X-Edge-Agent-Key`` (:mod:`edge_agent.agent_key`); None: none.
    """

    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)
    proxy: str | None = None
    agent_key: str | None = None
    open_timeout: float = OPEN_TIMEOUT
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT


def check_name(name: str | None) -> None:
    if name is not None and not valid_name(name):
        raise ConfigError(f"tunnel name {name!r} is not a lowercase DNS label (a-z, 0-9, -)")


def connect_url(relay_url: str, name: str | None) -> str:
    """``https://relay.example`` -> ``wss://relay.example/_edge/connect?name=NAME``."""
    url = URL(relay_url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if url.scheme not in schemes or not url.host:
        raise ConfigError(f"relay URL must be http(s):// or ws(s)://, got {relay_url!r}")
    url = url.with_scheme(schemes[url.scheme]).with_path(url.path.rstrip("/") + CONNECT_PATH)
    return str(url.with_query({"name": name}) if name else url.with_query(None))


async def open_tunnel(
    relay_url: str,
    token: str | None,
    name: str | None,
    options: ConnectOptions,
    address: str | None = None,
) -> tunnel.WsLink:
    """Open the WebSocket to the relay (upgrade with the bearer token and subprotocol),
    through a proxy when one is set (:mod:`edge_agent.proxy`).

    ``address``: connect to this address of the relay's host name (one node of several
    behind one name, :mod:`edge_agent.relays`); ignored through a proxy.

    Raises AuthError, ConfigError, TlsError, ProxyRefused (fatal) or RelayUnavailable
    (transient).
    """
    check_name(name)
    uri = connect_url(relay_url, name)
    sock = await _through_proxy(uri, options)
    if sock is None and address is not None:
        port = URL(uri).port
        assert port is not None  # ws/wss URLs always have one
        sock = await relays.dial(address, port, options.open_timeout)
    try:
        link = await _upgrade(relay_url, uri, token, options, sock)
    except BaseException:
        if sock is not None:
            sock.close()  # never handed to a transport, or already closed by it
        raise
    try:
        _check_connection(link, options.tls)
    except BaseException:
        link.abort()
        raise
    return link


async def _through_proxy(uri: str, options: ConnectOptions) -> socket.socket | None:
    """A socket to the relay through the proxy in use, or None to connect directly."""
    url = URL(uri)
    assert url.host is not None and url.port is not None
    via = proxy.choose(options.proxy, url.host, url.port, url.scheme == "wss")
    if via is None:
        return None
    logger.debug("tunnel_proxy", extra={"proxy": via.display})
    return await proxy_dial.dial(via, url.host, url.port, options.open_timeout)


async def _upgrade(
    relay_url: str,
    uri: str,
    token: str | None,
    options: ConnectOptions,
    sock: socket.socket | None,
) -> tunnel.WsLink:
    """The upgrade itself, its foreign errors mapped into the agent's tree."""
    secure = uri.startswith("wss:")
    headers = [("Authorization", f"Bearer {token}")] if token else []
    if options.agent_key:
        headers.append((AGENT_KEY_HEADER, options.agent_key))
    try:
        link, _response = await tunnel.connect_link(
            uri,
            headers=headers,
            ssl_context=client_context(options.tls) if secure else None,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            open_timeout=options.open_timeout,
            sock=sock,
        )
    except tunnel.HandshakeRefused as exc:
        raise status_error(exc.response) from exc
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(
            f"the relay's certificate is not trusted ({exc.verify_message}); "
            "use --ca-file for a private CA"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"cannot open the tunnel: {exc}") from exc
    except socket.gaierror as exc:
        raise NotARelay(
            f"cannot resolve the relay's host in {relay_url!r}: {exc.strerror}"
        ) from exc
    except ssl.SSLError as exc:
        raise NotARelay(f"no TLS at {relay_url!r} ({exc.reason}): is it an http:// URL?") from exc
    except tunnel.HandshakeFailed as exc:
        raise NotARelay(f"{relay_url!r} does not answer as a relay does ({exc})") from exc
    except (OSError, TimeoutError) as exc:
        raise RelayUnavailable(f"cannot reach the relay: {type(exc).__name__}: {exc}") from exc
    return link


def _check_connection(link: tunnel.WsLink, tls: TlsOptions) -> None:
    transport = link.transport
    if transport is None:
        raise RelayUnavailable("the tunnel connection closed during the upgrade")
    if tls.pin_sha256 is not None:
        check_pin(transport.get_extra_info("ssl_object"), tls.pin_sha256)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass


def status_error(response: Response) -> Exception:
    """Classify a refused upgrade (the relay's JSON error body gives the reason)."""
    status = response.status_code
    reason = _relay_reason(response.body)
    if status == 403 and reason.startswith("name_forbidden"):
        return AuthError(f"the relay refused the name ({status} {reason})")
    if status == 409 and reason.startswith("name_in_use"):
        return NameTakenError(f"the relay refused the name ({status} {reason})")
    if status in (401, 403):
        return AuthError(
            f"the relay refused the agent's token ({status} {reason}); "
            "check the relay token (edge-agent http --token, edge-agent run --relay-token, "
            "or EDGE_RELAY_TOKEN) and that it was issued for this name"
        )
    if status == 429 or status >= 500:
        return RelayUnavailable(f"the relay answered {status} {reason}")
    return ConfigError(f"the relay refused the tunnel ({status} {reason})")


def _relay_reason(body: bytes | bytearray | None) -> str:
    try:
        error = json.loads(body or b"")["error"]
        return f"{error['code']}: {error['message']}"[:300]
    except (ValueError, KeyError, TypeError):
        return (body or b"").decode("utf-8", "replace")[:200].strip()
