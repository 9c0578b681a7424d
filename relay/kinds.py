"""Which kind of tunnel a session may open, and its public addresses.

HELLO says what the agent serves (``wire.Hello.tunnel``):

* **HTTP**: every token and open-mode name; public URLs ``<public-url>/a/<name>/`` (and
  ``https://<name>.<domain>/`` with ``--domain``).
* **TCP**: a token issued with ``--tcp`` (or open mode) on a relay with ``--tcp-ports``;
  the address is ``tcp://<relay host>:<port>``, the port the name keeps
  (:mod:`relay.tcp`).
* **TLS** passthrough: a token issued with ``--tls`` (or open mode) on a relay that serves
  TLS itself (``--tls-cert``) and has ``--domain``; callers reach
  ``tls://<name>.<domain>`` on the relay's HTTPS port and the relay routes by SNI
  without decrypting (:mod:`relay.sniroute`).

A refusal ends the session with GOAWAY: ``UNAUTHORIZED`` (the agent stops and shows
the reason) when the token lacks the permission, the relay is not set up for the kind,
or a TCP or TLS HELLO lists caller credentials (the relay cannot check them in bytes it
does not parse: refusing is safer than a tunnel that looks guarded and is not);
``LIMIT_EXCEEDED`` (the agent retries) when no port is free now.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from relay.state import RelayState
from relay.tcp import PortUnavailable
from wire import ErrorCode, Hello, StreamKind
from wire.payloads import TUNNEL_NAMES

#: Why a TCP or TLS session with caller credentials is refused.
NO_CALLER_AUTH: Final = (
    "caller auth cannot be enforced on TCP or TLS tunnels (the relay does not parse "
    "their bytes): leave it out, and let the local service authenticate its callers"
)


class Refused(Exception):
    """The session may not open this kind of tunnel: GOAWAY ``code`` with the message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_caller_auth(hello: Hello) -> None:
    """Raise :class:`Refused` for a TCP or TLS HELLO that lists caller credentials."""
    if hello.caller_auth and hello.tunnel is not StreamKind.HTTP:
        raise Refused(ErrorCode.UNAUTHORIZED, NO_CALLER_AUTH)


def grant(
    state: RelayState, name: str, kind: StreamKind, has_token: bool, port: int | None
) -> tuple[str, ...]:
    """The public addresses of tunnel ``name`` of ``kind``; raises :class:`Refused`.

    ``port``: the relay's bound HTTP(S) port (for URLs when no public URL is set). For
    TCP this binds the tunnel's port.
    """
    settings = state.settings
    if kind is StreamKind.HTTP:
        return settings.tunnel_urls(name, port)
    _check_permission(state, name, kind, has_token)
    base = urlsplit(settings.base_url(port))
    host = base.hostname or settings.host
    host = f"[{host}]" if ":" in host else host
    if kind is StreamKind.TLS:
        if not (settings.tls and settings.domain):
            raise Refused(
                ErrorCode.UNAUTHORIZED,
                "this relay cannot route TLS passthrough tunnels "
                "(it needs --tls-cert and --domain)",
            )
        suffix = f":{base.port}" if base.port not in (None, 443) else ""
        return (f"tls://{name}.{settings.domain}{suffix}",)
    try:
        tcp_port = state.tcp.bind(state, name, has_token)
    except PortUnavailable as exc:
        code = ErrorCode.UNAUTHORIZED if exc.permanent else ErrorCode.LIMIT_EXCEEDED
        raise Refused(code, str(exc)) from None
    return (f"tcp://{host}:{tcp_port}",)


def _check_permission(state: RelayState, name: str, kind: StreamKind, has_token: bool) -> None:
    if not has_token:
        return  # open mode: a development relay lets any free name open any kind
    record = state.store.record(name)
    if record is None or kind not in record.kinds:
        label = TUNNEL_NAMES[kind]
        raise Refused(
            ErrorCode.UNAUTHORIZED,
            f"the relay token for {name} may not open {label.upper()} tunnels "
            f"(the relay operator grants it: edge-relay token issue {name} --{label} --replace)",
        )
