"""Opening a TCP connection to the relay through a proxy: HTTP CONNECT (RFC 9110 9.3.6,
basic auth) or SOCKS5 (RFC 1928, user/password RFC 1929). Returns a connected socket;
TLS to the relay and the WebSocket upgrade then run over it as over a direct one.

Why hand-written: websockets' proxy support is inside its own ``connect()``, which the
agent does not use (it writes its own upgrade over its own connection, see
:mod:`tunnel.client`), and needs python-socks for SOCKS; python-socks' CONNECT reads the
proxy's answer in a single ``recv``. Both handshakes are short; each read is bounded
(:data:`MAX_HEAD`) and the whole exchange has a deadline.

Errors (see :mod:`edge_agent.errors`): a proxy that refuses (407, 403, other 4xx, a SOCKS
authentication failure or ruleset refusal) -> :class:`ProxyRefused`, fatal; a proxy that
cannot be resolved or does not speak its protocol -> :class:`NotARelay` (fatal until a
session has worked); a proxy that cannot be reached, or cannot reach the relay (5xx,
SOCKS network errors) -> :class:`RelayUnavailable`, retried. No message holds a credential.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
from typing import Final

from edge_agent import __version__
from edge_agent.errors import NotARelay, ProxyRefused, RelayUnavailable
from edge_agent.proxy import Proxy

#: Largest CONNECT answer head read (status line and headers).
MAX_HEAD: Final = 16 * 1024

#: SOCKS5 reply codes (RFC 1928 section 6): what they mean, and whether a retry can help.
SOCKS_REPLIES: Final = {
    1: ("general SOCKS server failure", True),
    2: ("connection not allowed by the proxy's rules", False),
    3: ("network unreachable", True),
    4: ("host unreachable", True),
    5: ("connection refused by the relay's host", True),
    6: ("TTL expired", True),
    7: ("command not supported", False),
    8: ("address type not supported", False),
}

_STATUS: Final = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?\r\n")


async def dial(proxy: Proxy, host: str, port: int, seconds: float) -> socket.socket:
    """A socket connected to ``host:port`` through ``proxy`` within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            sock = await _connect(proxy)
            try:
                if proxy.scheme == "http":
                    await _http_connect(sock, proxy, host, port)
                else:
                    await _socks5_connect(sock, proxy, host, port)
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        late = f"the proxy {proxy.display} did not answer in {seconds:g} s"
        raise RelayUnavailable(late) from None
    return sock


async def _connect(proxy: Proxy) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NotARelay(
            f"cannot resolve the proxy's host {proxy.host!r}: {exc.strerror}", fix="check --proxy"
        ) from exc
    error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    reason = f"{type(error).__name__}: {error}" if error is not None else "no address"
    raise RelayUnavailable(f"cannot reach the proxy {proxy.display}: {reason}")


# -- HTTP CONNECT --------------------------------------------------------------------------


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    """The CONNECT request head (with ``Proxy-Authorization`` when the URL has a user)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        f"CONNECT {authority} HTTP/1.1",
        f"Host: {authority}",
        f"User-Agent: edge-agent/{__version__}",
    ]
    if proxy.username is not None:
        pair = f"{proxy.username}:{proxy.password}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _http_connect(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, connect_request(proxy, host, port))
    head = await _read_head(sock, proxy)
    match = _STATUS.match(head)
    if match is None:
        raise NotARelay(
            f"the proxy {proxy.display} does not answer as an HTTP proxy does "
            "(is it a SOCKS proxy? use socks5://)",
            fix="check --proxy",
        )
    status = int(match.group(1))
    reason = (match.group(2) or b"").decode("latin-1")[:100]
    if not 200 <= status < 300:
        raise _http_refusal(proxy, host, port, status, reason, head)


async def _read_head(sock: socket.socket, proxy: Proxy) -> bytes:
    """The answer's head, up to its blank line; nothing past it may have been sent (the
    relay, TLS or WebSocket, waits for the agent to speak first)."""
    loop = asyncio.get_running_loop()
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_HEAD:
            raise NotARelay(f"the proxy {proxy.display}'s answer is too long", fix="check --proxy")
        chunk = await loop.sock_recv(sock, MAX_HEAD + 4 - len(head))
        if not chunk:
            raise RelayUnavailable(f"the proxy {proxy.display} closed the connection")
        head += chunk
    end = head.index(b"\r\n\r\n") + 4
    status = _STATUS.match(head)
    if end != len(head) and status is not None and status.group(1).startswith(b"2"):
        early = f"the proxy {proxy.display} sent data before the relay spoke"
        raise NotARelay(early, fix="check --proxy")
    return head[:end]


def _http_refusal(
    proxy: Proxy, host: str, port: int, status: int, reason: str, head: bytes
) -> Exception:
    where = f"the proxy {proxy.display}"
    said = f"({status} {reason})".replace(" )", ")")
    if status in (401, 407):  # tinyproxy answers a wrong password with 401
        schemes = _auth_schemes(head)
        if schemes and "basic" not in schemes:
            wants = "/".join(schemes)
            return ProxyRefused(
                f"{where} requires {wants} authentication {said}, which edge-agent does not "
                "speak (only Basic)"
            )
        if proxy.username is None:
            fix = "give http://USER:PASSWORD@HOST:PORT"
            return ProxyRefused(f"{where} requires authentication {said}: {fix}")
        return ProxyRefused(f"{where} refused the user name or password {said}")
    if status >= 500:
        return RelayUnavailable(f"{where} could not reach the relay {host}:{port} {said}")
    return ProxyRefused(f"{where} refused to connect to the relay {host}:{port} {said}")


def _auth_schemes(head: bytes) -> list[str]:
    """The schemes of the answer's ``Proxy-Authenticate`` headers (lower case)."""
    schemes = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"proxy-authenticate" and value.strip():
            schemes.append(value.split()[0].decode("latin-1").lower()[:20])
    return schemes


# -- SOCKS5 --------------------------------------------------------------------------------


async def _socks5_connect(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    await loop.sock_sendall(sock, b"\x05" + bytes((len(methods),)) + methods)
    version, method = await _exactly(sock, 2, proxy)
    if version != 5:
        raise NotARelay(
            f"the proxy {proxy.display} does not speak SOCKS5 (is it an HTTP proxy? use http://)",
            fix="check --proxy",
        )
    if method == 0x02 and proxy.username is not None:
        await _socks5_login(sock, proxy)
    elif method != 0x00:
        fix = "give socks5://USER:PASSWORD@HOST:PORT" if proxy.username is None else ""
        raise ProxyRefused(
            f"the SOCKS5 proxy {proxy.display} accepts none of the agent's authentication "
            f"methods{': ' + fix if fix else ''}"
        )
    await loop.sock_sendall(sock, await _socks5_request(proxy, host, port))
    _version, reply, _reserved, kind = await _exactly(sock, 4, proxy)
    if reply != 0:
        meaning, transient = SOCKS_REPLIES.get(reply, (f"error {reply}", False))
        text = f"the SOCKS5 proxy {proxy.display} could not connect to {host}:{port}: {meaning}"
        raise RelayUnavailable(text) if transient else ProxyRefused(text)
    await _skip_bound_address(sock, kind, proxy)


async def _socks5_login(sock: socket.socket, proxy: Proxy) -> None:
    assert proxy.username is not None
    user, password = proxy.username.encode(), proxy.password.encode()
    login = b"\x01" + bytes((len(user),)) + user + bytes((len(password),)) + password
    await asyncio.get_running_loop().sock_sendall(sock, login)
    _version, status = await _exactly(sock, 2, proxy)
    if status != 0:
        raise ProxyRefused(f"the SOCKS5 proxy {proxy.display} refused the user name or password")


async def _socks5_request(proxy: Proxy, host: str, port: int) -> bytes:
    """CONNECT to the relay: by name for ``socks5h``, else by the address resolved here."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if proxy.scheme == "socks5h":
            name = host.encode("idna")
            return b"\x05\x01\x00\x03" + bytes((len(name),)) + name + port.to_bytes(2, "big")
        address = await _resolve(host, port)
    kind = b"\x01" if address.version == 4 else b"\x04"
    return b"\x05\x01\x00" + kind + address.packed + port.to_bytes(2, "big")


async def _resolve(host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NotARelay(
            f"cannot resolve the relay's host {host!r} here: {exc.strerror} (with socks5h:// "
            "the proxy resolves it)"
        ) from exc
    return ipaddress.ip_address(infos[0][4][0])


async def _skip_bound_address(sock: socket.socket, kind: int, proxy: Proxy) -> None:
    """Read the reply's BND.ADDR and BND.PORT (unused) so no byte of them reaches TLS."""
    if kind == 0x01:
        await _exactly(sock, 4 + 2, proxy)
    elif kind == 0x04:
        await _exactly(sock, 16 + 2, proxy)
    elif kind == 0x03:
        (length,) = await _exactly(sock, 1, proxy)
        await _exactly(sock, length + 2, proxy)
    else:
        odd = f"the SOCKS5 proxy {proxy.display} sent address type {kind}"
        raise NotARelay(odd, fix="check --proxy")


async def _exactly(sock: socket.socket, size: int, proxy: Proxy) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise RelayUnavailable(f"the proxy {proxy.display} closed the connection")
        data += chunk
    return data
