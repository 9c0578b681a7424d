"""Settings of a relay process and the limits it enforces.

Every limit is a named constant with what happens when it is hit. :class:`Settings` holds
the values a running relay uses; the CLI fills it from flags, environment and a TOML file,
and tests build it directly with small values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import wire

#: Names no token and no open-mode agent may claim: they would read as the relay's own
#: host names under a wildcard domain.
RESERVED_NAMES: Final = frozenset({"www", "relay", "admin", "api", "edge"})

#: Largest request body forwarded to an agent, in bytes. A Content-Length above it is
#: answered 413 before anything is sent down the tunnel; a chunked body that grows past
#: it resets the stream and answers 413 (or cuts the response if it already started).
DEFAULT_MAX_REQUEST_BODY: Final = 1024**3

#: Concurrent streams per agent session; the next request gets 429 too_many_streams.
#: The protocol default (1,024) allows 1,000 concurrent requests on one tunnel.
DEFAULT_MAX_STREAMS: Final = wire.DEFAULT_MAX_STREAMS

#: Seconds the relay waits for the agent's response head before answering 504
#: response_timeout and resetting the stream. Long, because an A2A task can take minutes.
#: There is no total timeout: a stream that keeps sending may last forever.
DEFAULT_RESPONSE_TIMEOUT: Final = 300.0

#: Seconds a graceful shutdown (SIGTERM/SIGINT) lets in-flight streams finish.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0

#: Seconds the relay keeps a resumable session, its streams and their public
#: connections after its WebSocket dropped (``--resume-grace``; 0: no resumption).
#: Requests for the name meanwhile wait for it. At most ``wire.resume.MAX_GRACE``.
DEFAULT_RESUME_GRACE: Final = 60

#: Largest request head a caller may send: request line plus header lines, in bytes,
#: counted as they arrive (an unfinished line counts too). Over it the caller gets 431
#: headers_too_large and the connection is closed.
DEFAULT_MAX_HEADER_BYTES: Final = 32 * 1024

#: Most header lines in one request; more is 431.
MAX_REQUEST_HEADERS: Final = 200

#: Seconds a client may take to send a complete request head (slowloris guard); then
#: 408 and the connection is closed.
DEFAULT_HEADER_TIMEOUT: Final = 30.0

#: Seconds a request body may stay silent while the relay is waiting for it; then 408
#: (before the response head) or a cut response. Waiting for the agent's credit does
#: not count: only a silent caller does.
DEFAULT_BODY_IDLE_TIMEOUT: Final = 60.0

#: Bytes per second a request body must average over 30 s (``relay.public``); below it
#: the caller gets 408 and the connection is closed. 256 B/s is far below any real
#: upload (a poor mobile uplink moves tens of KiB/s), far above an attack that trickles a
#: byte every few seconds to hold a stream (issue: slow uploads took a tunnel down).
DEFAULT_MIN_BODY_RATE: Final = 256

#: Seconds over which a request body must average ``--min-body-rate``.
BODY_RATE_WINDOW: Final = 30.0

#: Requests one caller address may have in flight on one tunnel; the next gets 429
#: ``too_many_client_streams``. A quarter of the stream limit: one address (slow uploads,
#: a flood of long polls) can never hold all of a tunnel's streams, while a load test
#: from one machine (wrk at 64 connections) and a platform proxying many calls from one
#: address stay far below it. A trusted front proxy is not counted (it speaks for many).
DEFAULT_MAX_CLIENT_STREAMS: Final = wire.DEFAULT_MAX_STREAMS // 4

#: Seconds an idle keep-alive connection stays open (a little longer than the common
#: 5 s, so bursty callers reuse connections).
KEEP_ALIVE_TIMEOUT: Final = 15.0

#: Seconds an agent has between the WebSocket upgrade and its HELLO; then the socket is
#: closed.
HELLO_TIMEOUT: Final = 10.0

#: WebSocket keepalive, both ends (contract): a ping every 20 s, the peer is dropped if
#: no pong arrives within 20 s, so a dead agent is noticed within about 40 s.
WS_PING_INTERVAL: Final = 20.0
WS_PING_TIMEOUT: Final = 20.0

#: Tunnels up to which the metrics carry per-tunnel series (``tunnel="name"``); with more
#: tunnels connected, tunnels without a series get none (0: never).
DEFAULT_METRICS_PER_TUNNEL: Final = 100

#: Seconds between checks of the token store for revocations (mtime poll).
TOKEN_POLL_INTERVAL: Final = 1.0


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/edge-relay`` or ``~/.local/state/edge-relay``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-relay"


@dataclasses.dataclass(slots=True)
class Settings:
    """What a relay process is told. Defaults are the production values."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None  # default: http(s)://host:port
    domain: str | None = None  # wildcard domain for host-based routing
    state_dir: Path = dataclasses.field(default_factory=default_state_dir)
    open_mode: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    max_streams: int = DEFAULT_MAX_STREAMS
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    resume_grace: int = DEFAULT_RESUME_GRACE
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT
    min_body_rate: int = DEFAULT_MIN_BODY_RATE
    body_rate_window: float = BODY_RATE_WINDOW
    max_client_streams: int = DEFAULT_MAX_CLIENT_STREAMS
    #: CIDRs of front proxies whose forwarding headers are believed (``--trusted-proxy``).
    trusted_proxies: tuple[str, ...] = ()
    #: ``/_edge/metrics`` wants ``Authorization: Bearer <this>`` when set.
    metrics_token: str | None = None
    metrics_per_tunnel: int = DEFAULT_METRICS_PER_TUNNEL
    token_poll_interval: float = TOKEN_POLL_INTERVAL
    hello_timeout: float = HELLO_TIMEOUT
    ws_ping_interval: float = WS_PING_INTERVAL
    ws_ping_timeout: float = WS_PING_TIMEOUT
    #: Ports of raw TCP tunnels, first and last included (``--tcp-ports``); None: none.
    tcp_ports: tuple[int, int] | None = None
    #: Redis URL of the relay cluster (``--cluster``); None: one process, no Redis.
    cluster: str | None = None
    #: How the other nodes reach this one (``--node-url``), with --cluster.
    node_url: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def base_url(self, bound_port: int | None = None) -> str:
        """The public base URL without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{bound_port or self.port}"

    def route_domain(self) -> str | None:
        """The domain of host routing: ``--domain``, else ``localhost`` for a relay on
        loopback whose public URL is on loopback too (development: browsers and curl
        send ``<name>.localhost`` to loopback, so host routing needs no DNS work)."""
        if self.domain:
            return self.domain.lower().removesuffix(".")
        public_host = urlsplit(self.public_url).hostname if self.public_url else self.host
        if is_loopback(self.host) and is_loopback(public_host or ""):
            return LOCALHOST
        return None

    def tunnel_urls(self, name: str, bound_port: int | None = None) -> tuple[str, ...]:
        """Public URLs of tunnel ``name``: path-based first (the protocol fixes
        ``urls[0]``), host-based second when host routing is on (:meth:`route_domain`)."""
        urls = [f"{self.base_url(bound_port)}/a/{name}/"]
        domain = self.route_domain()
        if domain:
            urls.append(host_url(self.base_url(bound_port), name, domain))
        return tuple(urls)


#: The development domain: every ``<name>.localhost`` is loopback (RFC 6761).
LOCALHOST: Final = "localhost"


def is_loopback(host: str) -> bool:
    """``localhost``, or an address in 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]").lower()
    if host == LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LABEL: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_domain(text: str) -> str:
    """``--domain``, lowercased; ValueError saying what is wrong with it.

    A DNS name such as ``tunnels.example.com`` or ``localhost`` (browsers and curl send
    ``*.localhost`` to loopback): no ``*.`` in front, no scheme, port or path.
    """
    domain = text.strip().lower().removesuffix(".")
    if domain.startswith("*."):
        raise ValueError(f"{text!r}: give the domain without '*.' (e.g. {domain[2:]!r})")
    if not domain or len(domain) > 253 or not all(map(_LABEL.fullmatch, domain.split("."))):
        raise ValueError(
            f"{text!r} is not a domain name (letters, digits and '-' in dot-separated "
            "labels, e.g. tunnels.example.com; no scheme, port or path)"
        )
    return domain


#: Most ports ``--tcp-ports`` may span: each bound port is a listening socket.
MAX_TCP_PORTS: Final = 10_000


def check_port_range(text: str) -> tuple[int, int]:
    """``--tcp-ports``: ``30000-30099`` (or one port); ValueError saying what is wrong."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", text)
    if not match:
        raise ValueError(f"{text!r} is not a port range (e.g. 30000-30099)")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{text!r}: ports must be 1-65535, the first no larger than the last")
    if last - first + 1 > MAX_TCP_PORTS:
        raise ValueError(f"{text!r}: at most {MAX_TCP_PORTS} ports")
    return first, last


def host_url(base_url: str, name: str, domain: str) -> str:
    """The host-routed URL of tunnel ``name``: scheme and port of the relay's public URL."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{name}.{domain}{port}/"
