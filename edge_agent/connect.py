"""Opening the tunnel WebSocket, and the one place where its failures are classified.

Fatal (raised as is by the reconnect loop): 401/403 -> :class:`AuthError`, any other
4xx, a bad URL or name, a relay that does not speak our subprotocol ->
:class:`ConfigError`, an untrusted certificate or pin mismatch -> :class:`TlsError`.
Transient (retried with backoff): network errors, timeouts, broken handshakes, 5xx and
429 -> :class:`RelayUnavailable`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import ssl
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, NegotiationError
from websockets.http11 import Response
from websockets.typing import Subprotocol
from yarl import URL

from edge_agent.errors import AuthError, ConfigError, RelayUnavailable, TlsError
from edge_agent.tls import TlsOptions, check_pin, client_context
from wire import MAX_FRAME_SIZE, SUBPROTOCOL

#: The relay's agent endpoint, under its reserved prefix.
CONNECT_PATH: Final = "/_edge/connect"

#: TCP + TLS + HTTP upgrade must finish within this (websockets' default is 10 s too).
OPEN_TIMEOUT: Final = 10.0

#: Closing handshake limit (websockets' default is 10 s). Short, because websockets also
#: waits this long for the relay's close after a keepalive ping timed out: with 10 s a
#: dead relay was noticed ~50 s after it died instead of ~40 s. A live relay answers a
#: close within one round trip.
CLOSE_TIMEOUT: Final = 3.0

#: WebSocket pings: every 20 s, and the relay is declared dead if no pong comes back in
#: 20 s (websockets' defaults, written down because the contract fixes them: a dead
#: relay is noticed within about 40 s, and NAT state stays fresh).
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0

#: Incoming messages buffered before websockets stops reading the socket (its default
#: is 16). The reader only dispatches, so the buffer drains quickly.
MAX_QUEUE: Final = 16

#: Outgoing bytes buffered before ``send()`` waits (websockets' default is 32 KiB). A
#: couple of DATA frames, so the writer batches without holding much memory.
WRITE_LIMIT: Final = 128 * 1024

#: Kernel send buffer of the tunnel's socket (Linux doubles it; autotuning lets it
#: grow to megabytes). Frames leave in order, so a small response queued behind a bulk
#: download waits until the relay read everything ahead of it: a bounded buffer bounds
#: that wait (about 2 ms at 250 MB/s) without slowing the download.
SEND_BUFFER: Final = 256 * 1024

#: Tunnel names: a lowercase DNS label (workspace UUIDs fit).
NAME_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

logger = logging.getLogger(__name__)


class _RedactAuthorization(logging.Filter):
    """websockets logs handshake headers at DEBUG; never let the token through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() == "authorization":
            record.args = (args[0], "[redacted]")
        return True


_ws_logger = logging.getLogger("edge_agent.websocket")
_ws_logger.addFilter(_RedactAuthorization())


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectOptions:
    """Transport settings for the tunnel WebSocket.

    ``proxy``: an HTTP(S)/SOCKS proxy URL, or None for a direct connection (the default;
    websockets would otherwise pick one up from the environment).
    """

    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)
    proxy: str | None = None
    open_timeout: float = OPEN_TIMEOUT
    close_timeout: float = CLOSE_TIMEOUT
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT


def check_name(name: str | None) -> None:
    if name is not None and not NAME_RE.fullmatch(name):
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
    relay_url: str, token: str | None, name: str | None, options: ConnectOptions
) -> ClientConnection:
    """Open the WebSocket to the relay (upgrade with the bearer token and subprotocol).

    Raises AuthError, ConfigError, TlsError (fatal) or RelayUnavailable (transient).
    """
    check_name(name)
    uri = connect_url(relay_url, name)
    secure = uri.startswith("wss:")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await connect(
            uri,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=headers,
            compression=None,  # permessage-deflate costs 10-20x on incompressible bodies
            max_size=MAX_FRAME_SIZE,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            open_timeout=options.open_timeout,
            close_timeout=options.close_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            proxy=options.proxy,
            ssl=client_context(options.tls) if secure else None,
            logger=_ws_logger,
        )
    except InvalidStatus as exc:
        raise status_error(exc.response) from exc
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(
            f"the relay's certificate is not trusted ({exc.verify_message}); "
            "use --ca-file for a private CA"
        ) from exc
    except (InvalidURI, NegotiationError, ValueError) as exc:
        raise ConfigError(f"cannot open the tunnel: {exc}") from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise RelayUnavailable(f"cannot reach the relay: {type(exc).__name__}: {exc}") from exc
    try:
        _check_connection(ws, options.tls)
    except BaseException:
        await ws.close()
        raise
    return ws


def _check_connection(ws: ClientConnection, tls: TlsOptions) -> None:
    if ws.subprotocol != SUBPROTOCOL:
        raise ConfigError(f"the relay does not speak {SUBPROTOCOL} (got {ws.subprotocol!r})")
    if tls.pin_sha256 is not None:
        check_pin(ws.transport.get_extra_info("ssl_object"), tls.pin_sha256)
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:  # asyncio and uvloop set it already; make sure small frames go out
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass


def status_error(response: Response) -> Exception:
    """Classify a refused upgrade (the relay's JSON error body gives the reason)."""
    status = response.status_code
    reason = _relay_reason(response.body)
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
