"""Router: one connection's requests routed in turn, each as if it were the first.

The router keeps what the last request's Host and tunnel name gave; these tests change
them between requests on one router, so a result kept for the wrong request shows.
"""

from __future__ import annotations

import pytest

from relay.errors import BadRequest, PublicError, UnknownTunnel
from relay.public import Route, Router
from tests.relay.h1.helpers import head_of


def route(router: Router, target: str, host: str) -> Route | type[PublicError]:
    head = head_of(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        return router.route(head)
    except PublicError as exc:
        return type(exc)


def test_path_routing_sees_each_requests_name() -> None:
    router = Router(None)
    steps = [
        ("/a/one/x?q=1", Route("one", b"/x?q=1", b"/a/one")),
        ("/a/one", Route("one", b"/", b"/a/one")),
        ("/a/two/y", Route("two", b"/y", b"/a/two")),
        ("/a/Two/y", BadRequest),
        ("/a/two/z", Route("two", b"/z", b"/a/two")),
        ("/a//x", UnknownTunnel),
        ("/a/two%2e/x", BadRequest),
        ("/b/two/x", UnknownTunnel),
        ("/a/one/", Route("one", b"/", b"/a/one")),
    ]
    for target, expected in steps:
        assert route(router, target, "relay.test") == expected, target


def test_host_routing_sees_each_requests_host() -> None:
    router = Router(b".tunnels.test")
    steps = [
        ("demo.tunnels.test", "/p", Route("demo", b"/p", None)),
        ("DEMO.tunnels.test:443", "/p", Route("demo", b"/p", None)),
        ("bad_name.tunnels.test", "/p", UnknownTunnel),
        ("demo.tunnels.test", "/a/other/p", Route("demo", b"/a/other/p", None)),
        # The relay's own hosts: path routing.
        ("relay.tunnels.test", "/a/demo/p", Route("demo", b"/p", b"/a/demo")),
        ("bad_name.tunnels.test", "/a/demo/p", UnknownTunnel),
        ("[::1]:8080", "/a/demo/p", Route("demo", b"/p", b"/a/demo")),
        ("other.tunnels.test", "/q", Route("other", b"/q", None)),
    ]
    for host, target, expected in steps:
        assert route(router, target, host) == expected, (host, target)


@pytest.mark.parametrize(
    ("host", "label"),
    [("demo.tunnels.test", "demo"), ("www.tunnels.test", None), ("tunnels.test", None)],
)
def test_label_follows_the_host(host: str, label: str | None) -> None:
    router = Router(b".tunnels.test")
    assert router.label(b"first.tunnels.test") == "first"
    assert router.label(host.encode()) == label
    assert Router(None).label(host.encode()) is None
