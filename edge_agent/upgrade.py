"""WebSocket upgrades to a URL target, piped as bytes behind the object wrappers.

``edge-agent run --to URL`` serves every stream through the object bridge
(:mod:`edge_agent.bridge`), because the Molecule wrappers (inbound secret,
de-duplication) read requests as objects. :class:`UpgradingHttpTarget` wraps the
:class:`~edge_agent.target.HttpTarget` at the end of that chain and gives it the
bridge's ``websocket`` hook: an ``Upgrade: websocket`` request that the wrappers let
through (the inbound secret is checked on it; it is never de-duplicated) goes to the
same byte path ``edge-agent http`` uses, a :class:`~edge_agent.passthrough.Passthrough`
from an :class:`~edge_agent.forward.HttpForwarder` with its own keep-alive pool (the
connection a refusal kept alive serves the next upgrade; a 101's connection is the
socket's, closed with it). No WebSocket is spoken here: the
local server's 101 and every frame after it pass through untouched, and a refusal
(any other status) is passed back as the answer to the request.

The request head is written again from the parsed request (the bridge has read it):
the request line with the target's path prefix, ``Host`` set to the target's own
``host:port`` as :class:`~edge_agent.target.HttpTarget` does for every other request,
then the relay's headers in their order, the hop-by-hop ``Connection`` and ``Upgrade``
included. Bytes the client sent after the head follow as they come. The bridge records
the exchange (the request line printed) when the socket closes.
"""

from __future__ import annotations

from yarl import URL

from edge_agent.bridge import WebSocketClosed
from edge_agent.forward import HttpForwarder
from edge_agent.port import ExchangeRecord, StreamHandler, StreamPort
from edge_agent.target import HttpTarget, LocalRequest, LocalResponse


class UpgradingHttpTarget:
    """``inner`` for plain requests; its WebSocket upgrades piped as raw bytes."""

    def __init__(self, inner: HttpTarget) -> None:
        self.inner = inner
        url = URL(inner.base_url)
        self._prefix = url.raw_path.rstrip("/").encode("latin-1")
        self._host = url.raw_authority.encode("latin-1")
        self._forwarder = HttpForwarder(f"{url.scheme}://{url.raw_authority}")

    async def handle(self, request: LocalRequest) -> LocalResponse:
        return await self.inner.handle(request)

    def websocket(
        self, request: LocalRequest, stream: StreamPort, on_close: WebSocketClosed
    ) -> StreamHandler | None:
        def done(record: ExchangeRecord) -> None:
            on_close(record.status, record.bytes_out, record.error, record.reset)

        exchange = self._forwarder.handler(stream)
        exchange.on_done = done
        exchange.data(self._head(request))
        return exchange

    async def aclose(self) -> None:
        self._forwarder.close()
        await self.inner.aclose()

    def _head(self, request: LocalRequest) -> bytes:
        lines = [
            b"%s %s%s HTTP/1.1"
            % (request.method.encode("latin-1"), self._prefix, request.target.encode("latin-1")),
            b"Host: " + self._host,
        ]
        for name, value in request.headers:
            if name.lower() != "host":
                lines.append(b"%s: %s" % (name.encode("latin-1"), value.encode("latin-1")))
        return b"\r\n".join(lines) + b"\r\n\r\n"
