"""Caddy in front of the relay, as deploy/Caddyfile sets it up, all on loopback (the
stack is in conftest.py)."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.deploy.conftest import DOMAIN, RELAY_HOST, Stack
from tests.e2e.procs import issue_token


def peer_certificate(stack: Stack, host: str) -> dict[str, object]:
    context = stack.caddy.client_context()
    with socket.create_connection(("127.0.0.1", stack.caddy.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            cert = tls.getpeercert()
    assert cert is not None
    return dict(cert)


def test_agent_tunnel_crosses_caddy(stack: Stack) -> None:
    """The agent's WebSocket went through Caddy's TLS; the relay tells both URLs."""
    assert stack.agent.url == f"https://{RELAY_HOST}:{stack.caddy.port}/a/demo/"
    # The host-routed URL keeps the public URL's scheme and port (item 5 of the usability issue).
    stack.agent.wait_line(rf"^Forwarding https://demo\.{DOMAIN}:{stack.caddy.port}/ ")
    assert stack.relay.count(r"agent_connected") == 1


def test_host_routing_gets_an_on_demand_certificate(stack: Stack) -> None:
    host = f"demo.{DOMAIN}"
    answer = stack.get(host, "/echo?x=1")
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert (seen["raw_path"], seen["query_string"]) == ("/echo", "x=1")
    headers = dict(seen["headers"])
    assert headers["x-forwarded-host"] == host
    # docs/deploy.md: the relay trusts Caddy (--trusted-proxy): the caller, then its hop.
    assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    cert = peer_certificate(stack, host)
    assert ("DNS", host) in cert["subjectAltName"]  # type: ignore[operator]
    assert "Caddy Local Authority" in str(cert["issuer"])


def test_base_name_routes_by_path(stack: Stack) -> None:
    answer = stack.get(RELAY_HOST, "/a/demo/echo")
    assert answer.status_code == 200, answer.text
    assert answer.json()["raw_path"] == "/echo"
    assert stack.get(RELAY_HOST, "/_edge/healthz").json() == {"status": "ok"}


def test_certificates_only_for_names_a_token_owns(stack: Stack) -> None:
    """Caddy asks the relay before each new name: refused, the handshake fails and
    nothing is issued; once a token owns the name, the same handshake succeeds."""
    issued = stack.caddy.home / "data" / "caddy" / "certificates"
    with pytest.raises(ssl.SSLError):
        peer_certificate(stack, f"late.{DOMAIN}")
    assert not list(issued.rglob(f"late.{DOMAIN}*"))
    issue_token(stack.relay.state_dir, "late")
    cert = peer_certificate(stack, f"late.{DOMAIN}")
    assert ("DNS", f"late.{DOMAIN}") in cert["subjectAltName"]  # type: ignore[operator]
    assert list(issued.rglob(f"late.{DOMAIN}.crt"))


def test_ask_and_metrics_are_not_public(stack: Stack) -> None:
    for path in ("/_edge/tls-ask?domain=demo.edge.test", "/_edge/metrics"):
        answer = stack.get(RELAY_HOST, path)
        assert answer.status_code == 404
        assert "x-edge-error" not in answer.headers  # Caddy answered, not the relay
    direct = httpx.get(f"{stack.relay.url}/_edge/tls-ask?domain=demo.{DOMAIN}", timeout=10.0)
    assert direct.status_code == 200


def test_server_sent_events_are_not_buffered(stack: Stack) -> None:
    """The first event reaches the caller while the origin holds back the second."""
    host = f"demo.{DOMAIN}"
    with stack.client() as client:
        request = stack.request(client, host, "/events?key=caddy&n=2")
        response = client.send(request, stream=True)
        try:
            lines = response.iter_lines()
            first = [next(lines) for _ in range(2)]
            assert first == ["id: 0", "data: event 0 of caddy"]
            assert "caddy" not in stack.origin.completed
            stack.origin.release("caddy/0")
            rest = list(lines)
        finally:
            response.close()
    assert "data: event 1 of caddy" in rest
    assert response.headers["content-type"] == "text/event-stream"


def test_websocket_through_caddy_by_name(stack: Stack) -> None:
    """A WebSocket to a tunnel's own name crosses Caddy's TLS and the relay to the local
    server (the origin echoes), and back."""
    host = f"demo.{DOMAIN}"
    raw = socket.create_connection(("127.0.0.1", stack.caddy.port), timeout=10)
    uri = f"wss://{host}:{stack.caddy.port}/chat"
    with ws_connect(
        uri, sock=raw, ssl=stack.caddy.client_context(), server_hostname=host, open_timeout=10
    ) as ws:
        ws.send("hello through caddy")
        assert ws.recv(timeout=10) == "hello through caddy"
        ws.send(b"\x00binary")
        assert ws.recv(timeout=10) == b"\x00binary"
