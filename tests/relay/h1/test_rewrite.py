"""rewrite_head: the head the agent gets, spliced from the caller's bytes; status_of;
trusted_proxy."""

from __future__ import annotations

import ipaddress

import pytest

from relay.h1 import Forwarding, Head, parse_cidrs, rewrite_head, status_of, trusted_proxy
from tests.relay.h1.helpers import head_of


def head(*lines: str, start: str = "GET /a/demo/x?q=1 HTTP/1.1") -> Head:
    return head_of("\r\n".join([start, *lines, "", ""]).encode("latin-1"))


def rewrite(h: Head, **kw: object) -> bytes:
    args: dict[str, object] = {
        "target": b"/x?q=1",
        "client_ip": "203.0.113.7",
        "proto": "https",
        "host": b"relay.test",
        "port": 443,
        "prefix": b"/a/demo",
        "trusted": False,
    }
    args.update(kw)
    forwarding = Forwarding(args.pop("client_ip"), args.pop("proto"), args.pop("port"))  # type: ignore[arg-type]
    return rewrite_head(h, forwarding=forwarding, **args)  # type: ignore[arg-type]


OWN = (
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Host: relay.test\r\n"
    b"X-Forwarded-Port: 443\r\n"
    b"X-Forwarded-Prefix: /a/demo\r\n"
    b"Forwarded: for=203.0.113.7;host=relay.test;proto=https\r\n"
    b"\r\n"
)


def test_lines_are_spliced_byte_for_byte() -> None:
    h = head("HOST:  relay.test ", "accept: */*", "X-Odd:\tv\t", "Cookie: a=1", "Cookie: b=2")
    assert rewrite(h) == (
        b"GET /x?q=1 HTTP/1.1\r\nHOST:  relay.test \r\naccept: */*\r\nX-Odd:\tv\t\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\n" + OWN
    )


def test_hop_by_hop_and_proxy_authorization_are_dropped() -> None:
    h = head(
        "Host: relay.test",
        "Connection: keep-alive, X-Secret",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: X-T",
        "Upgrade: h2c",
        "Proxy-Authorization: Basic eDp5",
        "X-Secret: listed in Connection",
        "Expect: 100-continue",
        "Content-Length: 3",
    )
    out = rewrite(h)
    assert out == (
        b"GET /x?q=1 HTTP/1.1\r\nHost: relay.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\n" + OWN
    )


def test_framing_headers_stay_even_when_connection_lists_them() -> None:
    """Dropping Content-Length or Transfer-Encoding while the body goes raw would
    desynchronise the agent from the relay (a request smuggled in the body)."""
    h = head("Host: relay.test", "Connection: content-length, host", "Content-Length: 5")
    assert b"Content-Length: 5\r\n" in rewrite(h) and b"Host: relay.test\r\n" in rewrite(h)
    chunked = head("Host: h", "Connection: transfer-encoding", "Transfer-Encoding: chunked")
    assert b"Transfer-Encoding: chunked\r\n" in rewrite(chunked)


def test_an_upgrade_keeps_upgrade_and_gets_connection_upgrade() -> None:
    h = head(
        "Host: relay.test",
        "Connection: keep-alive, Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: k",
    )
    out = rewrite(h)
    assert out.startswith(
        b"GET /x?q=1 HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: k\r\nConnection: upgrade\r\nX-Forwarded-For: "
    )


SPOOFED = (
    "Forwarded: for=1.2.3.4;proto=https",
    "X-Forwarded-For: 1.2.3.4",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.test",
    "X-Forwarded-Port: 1",
    "X-Forwarded-Prefix: /evil",
    "X-Real-IP: 1.2.3.4",
    "X_Forwarded_Proto: https",
    "X-Forwarded_For: 1.2.3.4",
    "x_real_ip: 1.2.3.4",
    "X_FORWARDED_HOST: evil.test",
)


def test_spoofable_forwarding_headers_are_stripped_from_untrusted_callers() -> None:
    """Issue 18.6."""
    out = rewrite(head("Host: relay.test", *SPOOFED))
    assert out == b"GET /x?q=1 HTTP/1.1\r\nHost: relay.test\r\n" + OWN
    assert b"1.2.3.4" not in out and b"evil" not in out


def test_a_trusted_proxy_chain_is_extended() -> None:
    h = head(
        "Host: relay.test",
        "X-Forwarded-For: 198.51.100.1, 10.0.0.1",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: app.example",
        "X-Forwarded-Port: 8443",
        "X-Real-IP: 198.51.100.1",
        "Forwarded: for=198.51.100.1;proto=https",
        "X_Forwarded_Proto: http",
    )
    out = rewrite(h, trusted=True, client_ip="10.0.0.2", proto="http", port=8080)
    assert out == (
        b"GET /x?q=1 HTTP/1.1\r\nHost: relay.test\r\nX-Real-IP: 198.51.100.1\r\n"
        b"X-Forwarded-For: 198.51.100.1, 10.0.0.1, 10.0.0.2\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: app.example\r\n"
        b"X-Forwarded-Port: 8443\r\n"
        b"X-Forwarded-Prefix: /a/demo\r\n"
        b"Forwarded: for=198.51.100.1;proto=https, for=10.0.0.2;host=relay.test;proto=http\r\n"
        b"\r\n"
    )


def test_trusted_without_incoming_values_uses_the_relays() -> None:
    out = rewrite(head("Host: relay.test"), trusted=True)
    assert out == b"GET /x?q=1 HTTP/1.1\r\nHost: relay.test\r\n" + OWN


def test_ipv6_client_and_host_with_port_are_quoted_in_forwarded() -> None:
    out = rewrite(head("Host: h"), client_ip="2001:db8::1", host=b"relay.test:8443", prefix=None)
    assert b'Forwarded: for="[2001:db8::1]";host="relay.test:8443";proto=https\r\n' in out
    assert b"X-Forwarded-For: 2001:db8::1\r\n" in out
    assert b"X-Forwarded-Prefix" not in out


def test_one_connection_whose_host_changes_gets_each_hosts_forwarded_element() -> None:
    # The element is kept per connection with the Host it was made for: a later request
    # on the same connection with another Host must not get the first one's.
    forwarding = Forwarding("203.0.113.7", "https", 443)
    h = head("Host: h")
    for host, element in [
        (b"relay.test", b"for=203.0.113.7;host=relay.test;proto=https"),
        (b"relay.test:8443", b'for=203.0.113.7;host="relay.test:8443";proto=https'),
        (b"", b"for=203.0.113.7;proto=https"),
        (b"relay.test", b"for=203.0.113.7;host=relay.test;proto=https"),
    ]:
        out = rewrite_head(
            h, target=b"/", forwarding=forwarding, host=host, prefix=None, trusted=False
        )
        assert b"\r\nForwarded: " + element + b"\r\n\r\n" in out


def test_strip_leaves_out_more_names() -> None:
    h = head("Host: h", "Authorization: Basic eDp5", "Accept: */*")
    assert b"Authorization" not in rewrite(h, strip=(b"authorization",))
    assert b"Authorization: Basic eDp5\r\n" in rewrite(h)


def test_http10_keeps_its_version_and_drops_upgrade() -> None:
    h = head("Connection: Upgrade", "Upgrade: websocket", start="GET / HTTP/1.0")
    assert rewrite(h, target=b"/").startswith(b"GET / HTTP/1.0\r\nX-Forwarded-For")


def test_no_host_no_forwarded_host() -> None:
    out = rewrite(head(start="GET / HTTP/1.0"), host=b"", prefix=None)
    assert out == (
        b"GET /x?q=1 HTTP/1.0\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Port: 443\r\nForwarded: for=203.0.113.7;proto=https\r\n\r\n"
    )


def test_the_rewritten_head_parses_again() -> None:
    h = head("Host: relay.test", "Connection: close", "Content-Length: 2")
    again = head_of(rewrite(h))
    assert again.target == b"/x?q=1" and again.length == 2


# -- status_of -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 404 Not Found\r\n", 404),
        (b"HTTP/1.1 101 Switching Protocols\r\n", 101),
        (b"HTTP/1.1 204\r\n", 204),
        (b"HTTP/1.1 503", 503),
        (b"HTTP/1.1 20", None),
        (b"", None),
        (b"HTTP/2.0 200 OK\r\n", None),
        (b"HTTP/1.1 2x0 OK\r\n", None),
        (b"HTTP/1.1 099 OK\r\n", None),
        (b"HTTP/1.1 2000 OK\r\n", None),
        (b"SSH-2.0-OpenSSH_9\r\n", None),
    ],
)
def test_status_of(data: bytes, status: int | None) -> None:
    assert status_of(data) == status


# -- trusted_proxy ---------------------------------------------------------------------------


def test_trusted_proxy() -> None:
    cidrs = parse_cidrs(["10.0.0.0/8", "fd00::/8", " 192.0.2.1 "])
    assert trusted_proxy("10.1.2.3", cidrs)
    assert trusted_proxy("192.0.2.1", cidrs)
    assert trusted_proxy("::ffff:10.0.0.1", cidrs)  # dual-stack socket
    assert trusted_proxy("fd12::1", cidrs)
    assert not trusted_proxy("203.0.113.7", cidrs)
    assert not trusted_proxy("2001:db8::1", cidrs)
    assert not trusted_proxy("", cidrs)
    assert not trusted_proxy("unix", cidrs)
    assert not trusted_proxy("10.0.0.1", [])
    assert trusted_proxy("127.0.0.1", ["127.0.0.0/8"])
    assert cidrs[0] == ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(ValueError):
        parse_cidrs(["10.0.0.0/33"])
