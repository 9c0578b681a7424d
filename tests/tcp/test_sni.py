"""relay.sni: the server name read from real ClientHellos (made by Python's ssl, which
is OpenSSL), from every truncation of them, and from hostile bytes."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sni import MAX_CLIENT_HELLO, read_sni


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (OpenSSL through Python's ssl)."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()  # the ClientHello is out; the server's answer is awaited
    raise AssertionError("a TLS client finished a handshake without a server")


@pytest.mark.parametrize(
    ("asked", "read"),
    [
        ("web.edge.test", "web.edge.test"),
        ("Web.Edge.Test", "web.edge.test"),
        ("x" * 63 + ".example.com", "x" * 63 + ".example.com"),
        (None, None),
    ],
)
def test_a_real_client_hello(asked: str | None, read: str | None) -> None:
    assert read_sni(client_hello(asked)) == (True, read)


def test_every_truncation_asks_for_more() -> None:
    hello = client_hello("web.edge.test")
    for end in range(len(hello)):
        assert read_sni(hello[:end]) == (False, None), end
    assert read_sni(hello + b"\x17\x03\x03") == (True, "web.edge.test")  # bytes after it


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # plain HTTP on the HTTPS port
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x02\x00\x00\x05hello",  # not TLS 1.x
        b"\x16\x03\x01\xff\xff",  # a record longer than TLS allows
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello, not a ClientHello
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # a handshake longer than its record
    ],
)
def test_what_is_not_a_client_hello_has_no_name(data: bytes) -> None:
    assert read_sni(data) == (True, None)


def test_a_name_with_control_characters_is_ignored() -> None:
    hello = bytearray(client_hello("web.edge.test"))
    at = hello.index(b"web.edge.test")
    hello[at + 3] = 0x0A  # "web\nedge.test"
    assert read_sni(bytes(hello)) == (True, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_never_raise(data: bytes) -> None:
    complete, name = read_sni(data)
    assert complete or len(data) < MAX_CLIENT_HELLO
    assert name is None or (name.isascii() and name == name.lower())


HELLO = client_hello("web.edge.test")  # once: making a context costs tens of ms


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 600), st.integers(0, 255))
def test_a_corrupted_client_hello_never_raises(at: int, value: int) -> None:
    hello = bytearray(HELLO)
    hello[at % len(hello)] = value
    name = read_sni(bytes(hello))[1]
    assert name is None or name.isascii()
