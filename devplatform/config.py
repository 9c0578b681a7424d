"""Settings of one dev platform instance, and every limit it enforces.

Each limit is the real platform's value unless said otherwise (the platform
contract reference, sections 3.8, 6, 7 and 11). Tests shrink the timeouts and
the TTL through :class:`PlatformConfig`; the CLI exposes the same knobs as flags.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Request body cap of ``POST /workspaces/:id/a2a`` in the "current" generation.
#: Go reads it through ``io.LimitReader``: a longer body is silently cut here and
#: then fails to parse, so the caller gets ``400 invalid JSON``.
MAX_PROXY_REQUEST_BODY_CURRENT = 1 << 20
#: Same in "next": a longer body is refused with 413 ``{error, truncated, max_bytes}``.
MAX_PROXY_REQUEST_BODY_NEXT = 16 << 20
#: Agent response cap, "current": the body is silently truncated at this size.
MAX_PROXY_RESPONSE_BODY_CURRENT = 10 << 20
#: Agent response cap, "next": a longer body is a 502 ``truncated`` error.
MAX_PROXY_RESPONSE_BODY_NEXT = 64 << 20
#: Body cap of every other JSON endpoint. The real platform (gin) has none; a dev
#: stand-in needs one, and no legitimate register/heartbeat body comes near it.
MAX_API_BODY = 1 << 20

#: Redis liveness key TTL (``ws:{id}``). Register sets it, heartbeat only extends it.
LIVENESS_TTL_SECONDS = 180.0
#: Per-dispatch silence window, reset by every event of the target workspace
#: (each heartbeat is one). ``A2A_IDLE_TIMEOUT_SECONDS`` on the real platform.
A2A_IDLE_TIMEOUT_SECONDS = 300.0
#: Absolute ceiling of a dispatch when the caller is an agent (``X-Workspace-ID``
#: set). Canvas callers have none. ``X-Timeout`` overrides both.
A2A_AGENT_CEILING_SECONDS = 1800.0
#: TCP connect timeout to the agent URL. "current" uses Go's DefaultTransport
#: dialer (30 s); "next" sets its own (10 s).
A2A_CONNECT_TIMEOUT_CURRENT = 30.0
A2A_CONNECT_TIMEOUT_NEXT = 10.0
#: "next" only: time from the end of the request to the response head. Go reports
#: it as "timeout awaiting response headers", which is not busy-shaped: a 502.
A2A_HEADER_TIMEOUT_NEXT = 1800.0
#: "next" only: how long a canvas caller (admin credential) waits synchronously
#: before it gets ``200 {"status":"queued","delivery_mode":"push-async"}``.
CANVAS_SYNC_WAIT_SECONDS = 90.0
#: A queued A2A call is re-dispatched at most this many times (``a2a_queue``).
QUEUE_MAX_ATTEMPTS = 5
#: Live tokens per workspace; ``POST /workspaces/:id/tokens`` answers 429 beyond.
MAX_TOKENS_PER_WORKSPACE = 50
#: ``Retry-After`` of the 503-busy answers.
BUSY_RETRY_AFTER_SECONDS = 30
#: DNS lookups done for the SSRF rules give up after this long (then: refused).
DNS_TIMEOUT_SECONDS = 5.0
#: ``PLUGIN_INSTALL_MAX_DIR_BYTES``: sum of the file sizes of one staged plugin.
PLUGIN_MAX_BYTES = 100 * 1024 * 1024
#: ``CORS_ORIGINS``'s default in core's router: the canvas development servers.
CORS_DEFAULT_ORIGINS = ("http://localhost:3000", "http://localhost:3001")
#: Connections the A2A client keeps open at once (aiohttp's default is 100 too).
UPSTREAM_POOL_LIMIT = 100


class Generation(enum.Enum):
    """Which platform the instance imitates (contract section 0 and 11)."""

    CURRENT = "current"
    NEXT = "next"


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Timeouts and size limits of the A2A proxy."""

    idle_timeout: float = A2A_IDLE_TIMEOUT_SECONDS
    agent_ceiling: float = A2A_AGENT_CEILING_SECONDS
    connect_timeout: float | None = None  # None: the generation's default
    header_timeout: float | None = None  # None: the generation's default
    canvas_sync_wait: float = CANVAS_SYNC_WAIT_SECONDS
    max_request_body: int | None = None  # None: the generation's default
    max_response_body: int | None = None  # None: the generation's default


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Everything one instance needs. ``admin_token`` is never logged."""

    admin_token: str
    generation: Generation = Generation.CURRENT
    db_path: str = ":memory:"
    #: ``MOLECULE_DEPLOY_MODE=saas``: RFC 1918 and fd00::/8 agent URLs allowed.
    saas_mode: bool = False
    #: Dispatch accepts the host name ``localhost`` without resolving it, like
    #: register does. The real platform resolves it at dispatch and refuses the
    #: loopback address unless ``MOLECULE_ENV=development``; see docs/devplatform.md.
    dispatch_localhost: bool = True
    #: ``EXTERNAL_PLATFORM_URL``; empty: derived from the request's Host.
    platform_url: str = ""
    liveness_ttl: float = LIVENESS_TTL_SECONDS
    proxy: ProxyLimits = field(default_factory=ProxyLimits)
    #: ``CORS_ORIGINS``: browser origins allowed besides the platform's own (a request
    #: with any other ``Origin`` gets a bare 403; see :mod:`devplatform.cors`).
    cors_origins: tuple[str, ...] = CORS_DEFAULT_ORIGINS
    #: ``local://NAME`` plugins are the folders ``<plugins_dir>/NAME/`` (None: none).
    plugins_dir: str | None = None
    #: ``PLUGIN_INSTALL_MAX_DIR_BYTES``: the largest plugin a download stages.
    plugin_max_bytes: int = PLUGIN_MAX_BYTES

    @property
    def is_next(self) -> bool:
        return self.generation is Generation.NEXT

    @property
    def max_request_body(self) -> int:
        if self.proxy.max_request_body is not None:
            return self.proxy.max_request_body
        return MAX_PROXY_REQUEST_BODY_NEXT if self.is_next else MAX_PROXY_REQUEST_BODY_CURRENT

    @property
    def max_response_body(self) -> int:
        if self.proxy.max_response_body is not None:
            return self.proxy.max_response_body
        return MAX_PROXY_RESPONSE_BODY_NEXT if self.is_next else MAX_PROXY_RESPONSE_BODY_CURRENT

    @property
    def connect_timeout(self) -> float:
        if self.proxy.connect_timeout is not None:
            return self.proxy.connect_timeout
        return A2A_CONNECT_TIMEOUT_NEXT if self.is_next else A2A_CONNECT_TIMEOUT_CURRENT

    @property
    def header_timeout(self) -> float | None:
        """None in "current": the Go client there has no response-head timeout."""
        if not self.is_next:
            return None
        if self.proxy.header_timeout is not None:
            return self.proxy.header_timeout
        return A2A_HEADER_TIMEOUT_NEXT

    @property
    def sweep_interval(self) -> float:
        """How often expired liveness keys are looked for (Redis expires them at once)."""
        return max(0.05, min(5.0, self.liveness_ttl / 10))
