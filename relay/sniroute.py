"""The relay's HTTPS listener when it can route TLS passthrough tunnels (``--tls-cert``
and ``--domain``): one port shared by the relay's own TLS and TLS it never decrypts.

Theory of operation. The listener accepts connections itself and *peeks* at each one's
first bytes (``MSG_PEEK``: they stay in the kernel's buffer) until the ClientHello is
complete, then reads its server name (:mod:`relay.sni`):

* ``<name>.<domain>`` where ``name`` is a live TLS passthrough tunnel: the socket
  becomes a :class:`relay.pipe.RawPipe`, and every byte, the ClientHello first, goes
  down a TLS stream to the agent untouched (the relay holds no key for that name);
* anything else (the relay's own host, HTTP tunnels, no SNI, not TLS at all): the
  socket is handed to the event loop's TLS with the relay's certificate, exactly as a
  plain ``create_server(ssl=...)`` would serve it.

Peeking consumes nothing, so the TLS layer of the second case reads the ClientHello
itself. While a ClientHello is incomplete the socket stays readable, so the listener
stops watching it and looks again after a short, growing pause; a caller that has not
sent a whole ClientHello within :data:`CLIENT_HELLO_TIMEOUT` seconds is closed, and at
most :data:`MAX_PEEKING` connections wait at once (newer ones are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from relay.pipe import RawPipe
from relay.sni import MAX_CLIENT_HELLO, read_sni
from wire import StreamKind

if TYPE_CHECKING:
    from relay.public import PublicConnection
    from relay.state import RelayState

log = logging.getLogger(__name__)

#: Seconds a new connection has to send its whole ClientHello.
CLIENT_HELLO_TIMEOUT: Final = 10.0

#: Connections whose ClientHello is awaited at once; more are closed at accept.
MAX_PEEKING: Final = 4096

#: Connections accepted per readiness callback (the rest on the next loop turn).
ACCEPT_BATCH: Final = 64

#: Seconds of TLS handshake allowed on the relay's own TLS (asyncio's default is 60).
HANDSHAKE_TIMEOUT: Final = 30.0

#: First and longest pause before looking at an incomplete ClientHello again, seconds.
_RETRY_FIRST: Final = 0.002
_RETRY_MAX: Final = 0.1


class SniRouter:
    """Serves one listening socket (see the module docstring); ``close()`` stops it."""

    def __init__(
        self,
        state: RelayState,
        sock: socket.socket,
        context: ssl.SSLContext,
        factory: Callable[[], PublicConnection],
    ) -> None:
        self.state = state
        self.sock = sock
        self.context = context
        self.factory = factory
        self.suffix = "." + (state.settings.domain or "")
        self.peeking: dict[int, _Peek] = {}
        self.tasks: set[asyncio.Task[object]] = set()
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for peek in list(self.peeking.values()):
            peek.drop()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the kernel keeps the rest queued
                log.warning("accept_failed", extra={"detail": str(exc)})
                return
            if len(self.peeking) >= MAX_PEEKING:
                conn.close()
                continue
            conn.setblocking(False)
            self.peeking[conn.fileno()] = _Peek(self, conn)

    def routed(self, peek: _Peek, name: str | None) -> None:
        """The ClientHello is in: pass the socket on (raw pipe or the relay's TLS)."""
        self.peeking.pop(peek.fd, None)
        label = self._tunnel(name)
        if label is not None:
            state = self.state

            def pipe() -> RawPipe:
                return RawPipe(state, label, StreamKind.TLS)

            self._adopt(self.loop.connect_accepted_socket(pipe, peek.sock), peek.sock)
        else:
            self._adopt(
                self.loop.connect_accepted_socket(
                    self.factory,
                    peek.sock,
                    ssl=self.context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                ),
                peek.sock,
            )

    def _tunnel(self, name: str | None) -> str | None:
        """The TLS passthrough tunnel ``name`` asks for, if one is live."""
        if name is None or not name.endswith(self.suffix):
            return None
        label = name[: -len(self.suffix)]
        session = self.state.registry.lookup(label)
        if session is None or session.kind is not StreamKind.TLS:
            return None
        return label

    def _adopt(self, coro: object, sock: socket.socket) -> None:
        async def run() -> None:
            try:
                await coro  # type: ignore[misc]
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
                sock.close()  # a failed handshake: nothing to answer

        task: asyncio.Task[object] = self.loop.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _Peek:
    """One accepted connection whose ClientHello is awaited."""

    __slots__ = ("delay", "expiry", "fd", "handle", "router", "sock")

    def __init__(self, router: SniRouter, sock: socket.socket) -> None:
        self.router = router
        self.sock = sock
        self.fd = sock.fileno()
        self.delay = _RETRY_FIRST
        self.handle: asyncio.TimerHandle | None = None  # the next look, while incomplete
        self.expiry = router.loop.call_later(CLIENT_HELLO_TIMEOUT, self.drop)
        router.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        loop = self.router.loop
        try:
            data = self.sock.recv(MAX_CLIENT_HELLO, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop()
            return
        if not data:
            self.drop()  # closed before a ClientHello
            return
        complete, name = read_sni(data)
        loop.remove_reader(self.fd)
        if complete or len(data) >= MAX_CLIENT_HELLO:
            self.expiry.cancel()
            self.router.routed(self, name)
        else:
            self.handle = loop.call_later(self.delay, self._again)
            self.delay = min(self.delay * 2, _RETRY_MAX)

    def _again(self) -> None:
        self.handle = None
        self.router.loop.add_reader(self.fd, self._readable)

    def drop(self) -> None:
        self.router.peeking.pop(self.fd, None)
        self.expiry.cancel()
        if self.handle is not None:
            self.handle.cancel()
        with contextlib.suppress(ValueError, OSError):
            self.router.loop.remove_reader(self.fd)
        self.sock.close()


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket for the router; raises OSError as ``create_server`` would."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)
