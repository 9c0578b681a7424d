"""A Starlette app with WebSocket routes, served in-process by the agent
(``edge-agent http --app tests.e2e.ws_app:app``).

* ``/echo``: accepts with ``chat.v2`` if offered (else ``chat.v1``, else none) and sends
  every message back as it came until the caller closes; the close code and reason it
  saw are kept for ``/seen``;
* ``/close-me?code=C``: accepts, then closes with ``C`` and a reason;
* ``/deny``: closes before accepting (a 403 for the caller);
* ``/teapot``: a denial response of its own (418 with a body);
* ``/seen``: JSON list of ``[code, reason]`` the echo sockets got when their caller closed;
* ``/``: a page whose script opens a WebSocket to ``echo`` on its own origin, exchanges
  text and binary messages and writes what came back into ``#result``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

_seen: list[tuple[int, str]] = []

PAGE = """<!doctype html>
<title>ws</title>
<p id="result">pending</p>
<script>
const out = document.getElementById("result");
const url = new URL("echo", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url, ["chat.v1", "chat.v2"]);
ws.binaryType = "arraybuffer";
const got = [];
ws.onopen = () => { ws.send("hello from the browser"); ws.send(new Uint8Array([1, 2, 3])); };
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data)).join(","));
  if (got.length === 2) ws.close(4001, "browser done");
};
ws.onclose = (e) => {
  out.textContent = JSON.stringify({protocol: ws.protocol, got, code: e.code, reason: e.reason});
};
ws.onerror = () => { out.textContent = "error"; };
</script>
"""


async def echo(ws: WebSocket) -> None:
    offered = ws.scope["subprotocols"]
    chosen = next((p for p in ("chat.v2", "chat.v1") if p in offered), None)
    await ws.accept(subprotocol=chosen)
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            _seen.append((message.get("code", 1000), message.get("reason") or ""))
            return
        if message.get("text") is not None:
            await ws.send_text(message["text"])
        else:
            await ws.send_bytes(message.get("bytes") or b"")


async def close_me(ws: WebSocket) -> None:
    await ws.accept()
    code = int(ws.query_params.get("code", "4321"))
    await ws.close(code, f"closed by the app with {code}")


async def deny(ws: WebSocket) -> None:
    await ws.close()


async def teapot(ws: WebSocket) -> None:
    await ws.send_denial_response(Response("no sockets here", status_code=418))


async def seen(request: Request) -> JSONResponse:
    return JSONResponse(_seen)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def raises(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    raise RuntimeError("the app failed")


app = Starlette(
    routes=[
        Route("/", page),
        Route("/seen", seen),
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/close-me", close_me),
        WebSocketRoute("/deny", deny),
        WebSocketRoute("/teapot", teapot),
        WebSocketRoute("/raises", raises),
    ]
)
