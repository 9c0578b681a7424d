"""Which proxy the tunnel uses (``--proxy``, the environment, NO_PROXY) and the CONNECT
request it sends; no I/O. The handshakes run against real proxies in
tests/e2e/test_proxy.py and tests/nat/test_proxy.py."""

from __future__ import annotations

import base64

import pytest

from edge_agent.errors import ConfigError
from edge_agent.proxy import Proxy, bypassed, choose, parse_proxy
from edge_agent.proxy_dial import connect_request


def test_parse_proxy_urls() -> None:
    assert parse_proxy("http://proxy.corp:3128") == Proxy("http", "proxy.corp", 3128)
    assert parse_proxy("http://proxy.corp").port == 80
    assert parse_proxy("proxy.corp:3128") == Proxy("http", "proxy.corp", 3128)  # as curl
    socks = parse_proxy("socks5h://u%40corp:p%3Ass@[::1]")
    assert (socks.scheme, socks.host, socks.port) == ("socks5h", "::1", 1080)
    assert (socks.username, socks.password) == ("u@corp", "p:ss")
    assert socks.display == "socks5h://[::1]:1080"
    assert "p:ss" not in repr(socks) and "u@corp" not in repr(socks)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://p:3128", "scheme 'https' is not supported"),
        ("socks4://p:1080", "scheme 'socks4' is not supported"),
        ("http://:3128", "has no host"),
        ("http://p:3128/path", "no path or query"),
        ("http://user:secret@p:99999", "not a proxy URL"),
        ("http://" + "u" * 256 + ":x@p", "over 255 bytes"),
    ],
)
def test_bad_proxy_urls_are_one_line_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_proxy(url)
    assert "secret" not in str(caught.value)


def test_the_environment_as_curl_reads_it() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    env |= {"HTTP_PROXY": "http://plain:3", "ALL_PROXY": "socks5://all:4"}
    assert choose(None, "relay.example", 443, True, env) == Proxy("http", "lower", 2)
    assert choose(None, "relay.example", 80, False, env) == Proxy("http", "plain", 3)
    del env["HTTPS_PROXY"], env["https_proxy"]
    assert choose(None, "relay.example", 443, True, env) == Proxy("socks5", "all", 4)
    assert choose(None, "relay.example", 443, True, {"https_proxy": "host:8"}) == Proxy(
        "http", "host", 8
    )  # no scheme: http, as curl
    assert choose(None, "relay.example", 443, True, {"HTTPS_PROXY": ""}) is None
    # --proxy wins, and NO_PROXY does not apply to it
    explicit = choose("socks5h://x:9", "relay.example", 443, True, env | {"NO_PROXY": "*"})
    assert explicit == Proxy("socks5h", "x", 9)
    with pytest.raises(ConfigError, match=r"^\$ALL_PROXY: proxy scheme 'ftp'"):
        choose(None, "relay.example", 443, True, {"ALL_PROXY": "ftp://p"})


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("relay.example.com", 443, "example.com", True),
        ("relay.example.com", 443, ".example.com", True),
        ("relay.example.com", 443, "*.example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("relay.example.com", 443, "example.com:8443", False),
        ("relay.example.com", 8443, "localhost, example.com:8443", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("::1", 443, "[::1]:443", True),
        ("::1", 443, "::1", True),
        ("relay.example.com", 443, "*", True),
        ("relay.example.com", 443, "", False),
        ("relay.example.com", 443, " , ,", False),
    ],
)
def test_no_proxy(host: str, port: int, no_proxy: str, direct: bool) -> None:
    assert bypassed(host, port, no_proxy) is direct
    env = {"https_proxy": "http://p:1", "no_proxy": no_proxy}
    assert (choose(None, host, port, True, env) is None) is direct


def test_connect_request() -> None:
    request = connect_request(parse_proxy("http://alice@p:1"), "relay.example", 443)
    assert request.startswith(b"CONNECT relay.example:443 HTTP/1.1\r\nHost: relay.example:443\r\n")
    assert request.endswith(b"\r\n\r\n")
    assert f"Basic {base64.b64encode(b'alice:').decode()}\r\n".encode() in request
    with pytest.raises(ConfigError, match="cannot hold ':'"):
        parse_proxy("http://al%3Aice:pw@p:1")
    request = connect_request(parse_proxy("http://alice:pw@p:1"), "::1", 8443)
    assert request.startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")
    auth = base64.b64encode(b"alice:pw").decode()
    assert f"\r\nProxy-Authorization: Basic {auth}\r\n".encode() in request
    assert b"Proxy-Authorization" not in connect_request(parse_proxy("http://p:1"), "r", 1)
