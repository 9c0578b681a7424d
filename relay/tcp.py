"""The ports of raw TCP tunnels: one listening port per TCP tunnel name, from the range
``edge-relay serve --tcp-ports FIRST-LAST``.

A name keeps its port. For a name with a token the port is kept in the token's record
(:meth:`relay.tokens.TokenStore.assign_port`), so it survives reconnects, relay restarts
and token rotation; an open-mode name (no token) keeps its port while this relay process
runs, unless the range fills up while it is offline and its port is the one left. A
port is bound when the name's first TCP session is welcomed and closed when the last
session for the name ends (connections then get a refusal from the kernel, as a stopped
server would); a session that replaces another keeps the listener.

A port another record holds is never given to a second name. A name's own port that
cannot be bound (another program took it) refuses the session with a transient error
(the agent retries) rather than moving the name to another port behind its users' back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from relay.pipe import RawPipe
from wire import StreamKind

if TYPE_CHECKING:
    from relay.state import RelayState

log = logging.getLogger(__name__)

#: Pending connections the kernel queues on each TCP tunnel port.
BACKLOG: Final = 128


class PortUnavailable(Exception):
    """No port for this TCP tunnel now; ``permanent``: retrying will not help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclasses.dataclass(slots=True)
class _Listener:
    port: int
    sock: socket.socket
    server: asyncio.Server | None = None
    starting: asyncio.Task[None] | None = None


class TcpPorts:
    """The relay's TCP tunnel listeners (one process)."""

    def __init__(self) -> None:
        self._listeners: dict[str, _Listener] = {}
        self._open_mode: dict[str, int] = {}  # ports of open-mode names, this process

    def port_of(self, name: str) -> int | None:
        listener = self._listeners.get(name)
        return listener.port if listener is not None else None

    def bind(self, state: RelayState, name: str, has_token: bool) -> int:
        """Listen on ``name``'s port (binding it if needed) and return it.

        Raises PortUnavailable when the relay has no TCP range, the name's port is
        taken by another program, or the range is full.
        """
        listener = self._listeners.get(name)
        if listener is not None:
            return listener.port
        ports = state.settings.tcp_ports
        if ports is None:
            raise PortUnavailable(
                "this relay serves no TCP tunnels (edge-relay serve --tcp-ports)", permanent=True
            )
        bound: dict[int, socket.socket] = {}

        def pick(current: int | None, taken: set[int]) -> int | None:
            return self._pick(state.settings.host, ports, name, current, taken, bound)

        if has_token:
            port = state.store.assign_port(name, pick)
        else:
            port = pick(self._open_mode.get(name), set(state.store.ports()))
            if port is not None:
                self._open_mode[name] = port
        if port is None:
            raise PortUnavailable(f"no free TCP port in {ports[0]}-{ports[1]} on the relay")
        self._start(state, name, port, bound.pop(port))
        return port

    def _pick(
        self,
        host: str,
        ports: tuple[int, int],
        name: str,
        current: int | None,
        taken: set[int],
        bound: dict[int, socket.socket],
    ) -> int | None:
        """Bind ``name``'s port: its own (``current``) when in the range, else the lowest
        free one. Ports other open-mode names had are avoided while others are free;
        when none is, the lowest of them whose name is offline is reused."""
        busy = taken | {lst.port for lst in self._listeners.values()}
        if current in busy:
            current = None  # an open-mode name's old port now belongs to a token
        remembered = {p: n for n, p in self._open_mode.items() if n != name}
        for avoid in (busy | set(remembered), busy):
            for port in _candidates(ports, current):
                if port in avoid:
                    continue
                sock = _listen(host, port)
                if sock is not None:
                    bound[port] = sock
                    self._open_mode.pop(remembered.get(port, ""), None)
                    return port
                if port == current:
                    raise PortUnavailable(f"port {port} of this tunnel is in use on the relay")
        return None

    def release(self, name: str) -> None:
        """No session holds ``name`` any more: stop listening on its port."""
        listener = self._listeners.pop(name, None)
        if listener is None:
            return
        if listener.starting is not None:
            listener.starting.cancel()
        if listener.server is not None:
            listener.server.close()
        listener.sock.close()
        log.info("tcp_port_closed", extra={"agent": name, "port": listener.port})

    def close_all(self) -> None:
        for name in list(self._listeners):
            self.release(name)

    def _start(self, state: RelayState, name: str, port: int, sock: socket.socket) -> None:
        listener = self._listeners[name] = _Listener(port, sock)
        loop = asyncio.get_running_loop()

        def factory() -> RawPipe:
            return RawPipe(state, name, StreamKind.TCP)

        async def serve() -> None:
            listener.server = await loop.create_server(factory, sock=sock, backlog=BACKLOG)

        listener.starting = loop.create_task(serve())
        log.info("tcp_port_open", extra={"agent": name, "port": port})


def _candidates(ports: tuple[int, int], current: int | None) -> Iterator[int]:
    """The name's own port alone when it is in the range, else every port of it."""
    first, last = ports
    if current is not None and first <= current <= last:
        yield current
        return
    yield from range(first, last + 1)


def _listen(host: str, port: int) -> socket.socket | None:
    """A listening non-blocking socket on ``host:port``, or None if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        with contextlib.suppress(OSError):
            sock.close()
        return None
    return sock
