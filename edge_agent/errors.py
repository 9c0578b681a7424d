"""Errors raised by the edge agent.

The tree::

    AgentError                   base of everything ``edge_agent`` raises
    ├── AuthError                the relay refused our token (401/403) or revoked it: fatal
    ├── ConfigError              settings no retry can fix: bad URL or name, another 4xx
    │   ├── SharingUnsupported   the relay ignored HELLO's extra tunnels (too old for them)
    │   ├── TlsError             certificate not trusted, or the pinned fingerprint differs
    │   └── ProxyRefused         the proxy refused: 407, 403, SOCKS authentication or rules
    ├── NameTakenError           another session replaced ours (GOAWAY REPLACED): fatal
    ├── MoleculeError            the platform session: see edge_agent.molecule.errors
    ├── TunnelError              the session failed; the agent reconnects with backoff
    │   ├── RelayUnavailable     network error, timeout, 5xx or 429 while connecting
    │   │   └── NotARelay        unknown host, or not a relay there (fatal at first)
    │   └── SessionEndedEarly    a session ended before it proved healthy
    └── TargetError              the local target failed one request; the stream is RESET
        ├── TargetUnreachable    connection refused (RESET CONNECT_ERROR, relay 502)
        ├── TargetFailed         failed mid-request or mid-response (RESET TARGET_ERROR)
        ├── TargetTimeout        no answer in time (RESET TARGET_TIMEOUT, relay 504)
        ├── Unavailable          paused or not serving (RESET UNAVAILABLE, relay 503)
        └── RequestAborted       the request body was cut off: the relay reset the stream

Only :class:`TunnelError` is retried by the reconnect loop; every other
:class:`AgentError` ends :meth:`edge_agent.tunnel.TunnelClient.run`. Foreign exceptions
(socket and parser errors, handshake failures, ssl) are mapped into this tree at one boundary
each: :mod:`edge_agent.http1` for the local target, :mod:`edge_agent.connect` for the relay.
Messages never contain tokens or secrets.
"""

from __future__ import annotations

from typing import ClassVar

from wire import ErrorCode


class AgentError(Exception):
    """Base class of every error raised by the ``edge_agent`` package."""


class AuthError(AgentError):
    """The relay refused the agent's credentials. Retrying cannot help."""


class ConfigError(AgentError):
    """A setting is wrong (or the relay says so with a 4xx other than 401/403)."""


class SharingUnsupported(ConfigError):
    """The relay answered a HELLO with extra tunnels as if it had none: it cannot carry
    several tunnels on one connection (:mod:`edge_agent.shared` falls back to one each)."""


class TlsError(ConfigError):
    """The relay's certificate failed verification or did not match the pin."""


class ProxyRefused(ConfigError):
    """The proxy to the relay refused the agent (credentials, or its rules)."""


class NameTakenError(AgentError):
    """Another agent session took this tunnel name; reconnecting would fight it."""


class TunnelError(AgentError):
    """The tunnel session could not be opened or ended; transient."""


class RelayUnavailable(TunnelError):
    """The relay could not be reached or answered 5xx/429 to the upgrade."""


class NotARelay(RelayUnavailable):
    """The relay URL's host is unknown, or what answers there is not a relay (plain HTTP
    behind an https URL, not HTTP at all). Fatal until a session has worked once: a
    retry cannot fix a wrong URL, but a relay that worked may be restarting.

    ``fix`` says which setting to check (the relay URL, or the proxy's).
    """

    def __init__(self, message: str, fix: str = "check --relay") -> None:
        super().__init__(message)
        self.fix = fix


class SessionEndedEarly(TunnelError):
    """A session ended before ``HEALTHY_AFTER``; the backoff keeps growing."""


class TargetError(AgentError):
    """One request to the local target failed. :attr:`code` is the RESET code to send."""

    code: ClassVar[ErrorCode] = ErrorCode.TARGET_ERROR


class TargetUnreachable(TargetError):
    """The local target refused the connection (or its address does not resolve)."""

    code = ErrorCode.CONNECT_ERROR


class TargetFailed(TargetError):
    """The local target broke off a request or response."""

    code = ErrorCode.TARGET_ERROR


class TargetTimeout(TargetError):
    """The local target did not answer in time."""

    code = ErrorCode.TARGET_TIMEOUT


class Unavailable(TargetError):
    """The agent does not serve requests right now (paused)."""

    code = ErrorCode.UNAVAILABLE


class RequestAborted(TargetError):
    """Raised by a request body iterator whose stream ended before the relay's FIN
    (the caller went away), so a half-received body is never taken for a whole one."""

    code = ErrorCode.CANCEL
