"""The attacks of ``scripts/bench attacks``, one per process: ``python -m bench.attackers
NAME --port P --seconds S`` attacks the relay on 127.0.0.1:P and prints one JSON object
(what was sent, what the relay accepted, how it ended).

Public-side attacks open raw sockets; agent-side ones are a hostile agent ``mallory``
speaking raw WebSocket frames (:mod:`tunnel.wsframe`, masked as a client must) to an
``--open`` relay. An attacker whose session or connection is cut comes back at once
until ``--seconds`` are up: the relay sees a sustained attack, not one burst. Every
loop is bounded by that deadline (and by counts).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

import wire
from tunnel import wsframe
from wire import ErrorCode, Flag, FrameType
from wire.frames import decode_frame, encode_parts
from wire.payloads import Hello, encode_hello

#: The address every attacking connection comes from (``--source``): the relay holds back
#: an address or agent that keeps breaking the rules (relay.penalty), so each attack comes
#: from an address of its own, never bob's or the other callers'.
SOURCE = "127.0.0.1"
#: Bytes per send while feeding an endless header.
CHUNK: Final = 64 * 1024
#: Bytes one header-feeding connection sends at most (the issue's 16 MiB).
HEADER_CAP: Final = 16 * 1024 * 1024
#: Concurrent header-feeding connections (the issue's 20).
HEADER_CONNECTIONS: Final = 20
#: Frames written per ``sendall`` in a flood.
BATCH: Final = 256
#: Frames one flooding session sends at most.
FLOOD_CAP: Final = 2_000_000
#: Slow uploads and their pace (the issue's 1,030 and a byte every 20 s).
UPLOADS: Final = 1030
UPLOAD_PACE: Final = 20.0
#: The source address of alice's other caller (Linux routes all of 127/8 to loopback),
#: so the relay's per-address limits tell it from the attacker.
OTHER_CALLER: Final = "127.0.0.2"
SMALL_RESPONSE: Final = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

Result = dict[str, object]
_CODES: Final = frozenset(int(c) for c in ErrorCode)


# --- public side ---------------------------------------------------------------------------


def _feed_header(port: int, prefix: bytes, filler: bytes, out: list[tuple[int, str]]) -> None:
    """One connection: ``prefix`` then ``filler`` until the relay answers or cuts."""
    sent = 0
    status = "none"
    try:
        with socket.create_connection(("127.0.0.1", port), 10, (SOURCE, 0)) as sock:
            # A small send buffer: what the relay takes in is counted, not megabytes
            # that the kernel would queue on loopback for a peer that stopped reading.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
            sock.sendall(prefix)
            chunk = filler * (CHUNK // len(filler))
            try:
                while sent < HEADER_CAP:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                status = sock.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed"
    except OSError as exc:
        status = type(exc).__name__
    out.append((sent, status))


def header_attack(port: int, seconds: float, prefix: bytes, filler: bytes) -> Result:
    deadline = time.monotonic() + seconds
    results: list[tuple[int, str]] = []
    rounds = 0
    while time.monotonic() < deadline:
        threads = [
            threading.Thread(target=_feed_header, args=(port, prefix, filler, results))
            for _ in range(HEADER_CONNECTIONS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rounds += 1
    accepted = [sent for sent, _ in results]
    return {
        "connections": len(results),
        "rounds": rounds,
        "max_bytes_accepted": max(accepted, default=0),
        "statuses": _tally(status for _, status in results),
    }


def _tally(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def slow_uploads(port: int, seconds: float) -> Result:
    """UPLOADS connections each announcing a 1 MB body, sending a byte every UPLOAD_PACE
    seconds, until the relay ends them; meanwhile one GET a second to alice from another
    address, as another caller of the tunnel. (The origin's echo answers 200 at once: an
    upload is over when the relay answers otherwise or closes the connection.)"""
    head = b"POST /a/alice/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    uploads: dict[socket.socket, str] = {}
    for _ in range(UPLOADS):
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", port), 5, (SOURCE, 0))
            sock.sendall(head)
            sock.setblocking(False)
            uploads[sock] = ""
    started = time.monotonic()
    deadline = started + seconds
    others: list[str] = []
    ended: list[tuple[str, float]] = []
    next_byte = started + UPLOAD_PACE
    while uploads and time.monotonic() < deadline:
        others.append(_get_status(port, "/a/alice/small", OTHER_CALLER))
        if time.monotonic() >= next_byte:
            next_byte += UPLOAD_PACE
            for sock in uploads:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
        _collect(uploads, ended, started)
        time.sleep(1.0)
    for sock in uploads:
        sock.close()
    return {
        "uploads": UPLOADS,
        "ended": _tally(how for how, _ in ended),
        "still_open": len(uploads),
        "ended_after_s": _span(t for _, t in ended),
        "alice_other_caller_each_s": "".join("." if s == "200" else "x" for s in others),
    }


def _span(times: Iterable[float]) -> str:
    values = sorted(times)
    return f"{values[0]:.0f}-{values[-1]:.0f}" if values else "-"


def _collect(
    uploads: dict[socket.socket, str], ended: list[tuple[str, float]], started: float
) -> None:
    """Read what the relay sent each upload; an upload closed by the relay is over."""
    for sock in list(uploads):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            if not uploads[sock]:
                uploads[sock] = data.split(b"\r\n")[0].decode(errors="replace")[9:] or "?"
            continue
        status = uploads.pop(sock) or "no answer"
        ended.append((f"{status}, then closed", time.monotonic() - started))
        sock.close()


def _get_status(port: int, path: str, source: str = "127.0.0.1") -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).split(b" ")[1].decode(errors="replace")
    except (OSError, IndexError):
        return "error"


# --- a hostile agent -----------------------------------------------------------------------


class Mallory:
    """A raw agent session named ``mallory``: WebSocket handshake, HELLO, then frames
    as written. A reader thread records the streams the relay opens and its GOAWAY.

    It connects from :data:`SOURCE` (``--source``): the relay makes an open-mode agent
    cut off for a protocol error wait before it may connect again, by address
    (relay.penalty), so each attack comes from an address of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), 10, (SOURCE, 0))
        self.masks = wsframe.Masks()
        self.opened: list[int] = []
        self.goaway: str | None = None
        self.closed = threading.Event()
        self.welcomed = threading.Event()
        rest = self._handshake()
        self._reader = threading.Thread(target=self._read, args=(rest,), daemon=True)
        self._reader.start()
        self.send([encode_parts(FrameType.HELLO, 0, self._hello(), Flag.NONE)])
        if not self.welcomed.wait(10):
            raise ConnectionError("no WELCOME")

    @staticmethod
    def _hello() -> bytes:
        return encode_hello(Hello("mallory", (), "bench-attacker"))

    def _handshake(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /_edge/connect HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {wire.SUBPROTOCOL}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
        return rest

    def _read(self, first: bytes) -> None:
        parser = wsframe.Parser(1 << 20, masked=False)
        data = first
        try:
            while True:
                for opcode, payload in parser.feed(data):
                    if opcode == wsframe.OP_BINARY:  # never split: no split= asked for
                        self._frame(payload if isinstance(payload, bytes) else b"".join(payload))
                    elif opcode == wsframe.OP_CLOSE:
                        return
                data = self.sock.recv(65536)
                if not data:
                    return
        except (OSError, wsframe.WsError, wire.RemoteProtocolError):
            return
        finally:
            self.closed.set()

    def _frame(self, message: bytes) -> None:
        frame = decode_frame(message)
        if frame.type is FrameType.WELCOME:
            self.welcomed.set()
        elif frame.type is FrameType.OPEN:
            self.opened.append(frame.stream_id)
        elif frame.type is FrameType.GOAWAY:
            code = int.from_bytes(frame.payload[4:8], "big")
            self.goaway = ErrorCode(code).name if code in _CODES else str(code)

    def send(self, frames: list[bytes]) -> None:
        encode = wsframe.encode
        self.sock.sendall(b"".join(encode(wsframe.OP_BINARY, f, self.masks) for f in frames))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _request_in_background(port: int, path: str) -> None:
    """A caller of mallory's tunnel (the relay opens a stream to mallory for it)."""

    def run() -> None:
        _get_status(port, path)

    threading.Thread(target=run, daemon=True).start()


def _open_stream(agent: Mallory, port: int, within: float = 10.0) -> int:
    _request_in_background(agent.port, "/a/mallory/x")
    deadline = time.monotonic() + within
    while not agent.opened and time.monotonic() < deadline:
        time.sleep(0.005)
    if not agent.opened:
        raise ConnectionError("the relay opened no stream")
    return agent.opened[-1]


def _closed_stream(agent: Mallory, port: int) -> int:
    sid = _open_stream(agent, port)
    agent.send([encode_parts(FrameType.DATA, sid, SMALL_RESPONSE, Flag.FIN)])
    time.sleep(0.05)
    return sid


FrameMaker = Callable[[Mallory, int], bytes]


def _goaway(agent: Mallory, port: int) -> bytes:
    return encode_parts(FrameType.GOAWAY, 0, bytes(8), Flag.NONE)


def _reset_closed(agent: Mallory, port: int) -> bytes:
    sid = _closed_stream(agent, port)
    return encode_parts(FrameType.RESET, sid, bytes(4), Flag.NONE)


def _response_closed(agent: Mallory, port: int) -> bytes:
    sid = _closed_stream(agent, port)
    return encode_parts(FrameType.DATA, sid, SMALL_RESPONSE, Flag.NONE)


def _empty_data(agent: Mallory, port: int) -> bytes:
    sid = _open_stream(agent, port)
    return encode_parts(FrameType.DATA, sid, b"", Flag.NONE)


def flood(port: int, seconds: float, make: FrameMaker) -> Result:
    """Sessions that each send one frame over and over until the relay cuts them."""
    deadline = time.monotonic() + seconds
    per_session: list[int] = []
    codes: dict[str, int] = {}
    cut_ms: list[float] = []
    while time.monotonic() < deadline:
        try:
            agent = Mallory(port)
        except (OSError, ConnectionError):
            time.sleep(0.05)
            continue
        try:
            sent, took = _flood_one(agent, make(agent, port), deadline)
        except (OSError, ConnectionError):
            agent.close()
            continue
        if time.monotonic() < deadline:
            agent.closed.wait(5)
        agent.close()
        code = agent.goaway or ("none" if agent.closed.is_set() else "not cut by the deadline")
        if code == "not cut by the deadline":
            continue  # the deadline ended a session that had sent too little to be cut
        per_session.append(sent)
        cut_ms.append(took * 1000)
        codes[code] = codes.get(code, 0) + 1
    return {
        "sessions": len(per_session),
        "frames_total": sum(per_session),
        "max_frames_per_session": max(per_session, default=0),
        "max_ms_to_cut": round(max(cut_ms, default=0.0), 1),
        "goaway": codes,
    }


def _flood_one(agent: Mallory, message: bytes, deadline: float) -> tuple[int, float]:
    batch = [message] * BATCH
    sent = 0
    started = time.monotonic()
    try:
        while not agent.closed.is_set() and sent < FLOOD_CAP and time.monotonic() < deadline:
            agent.send(batch)
            sent += BATCH
    except OSError:
        pass
    return sent, time.monotonic() - started


def cpu_burn(port: int, seconds: float) -> Result:
    """The control: no traffic at all, one process busy for ``seconds`` (what any of the
    attackers costs the machine's CPU by itself)."""
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += sum(range(1000)) > 0
    return {"busy_loops": spins}


ATTACKS: Final[dict[str, Callable[[int, float], Result]]] = {
    "cpu-burn": cpu_burn,
    "header-line": lambda port, s: header_attack(
        port, s, b"GET /a/alice/ HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a"
    ),
    "header-name": lambda port, s: header_attack(
        port, s, b"GET /a/alice/ HTTP/1.1\r\nHost: x\r\n", b"X"
    ),
    "goaway-flood": lambda port, s: flood(port, s, _goaway),
    "reset-flood": lambda port, s: flood(port, s, _reset_closed),
    "response-flood": lambda port, s: flood(port, s, _response_closed),
    "empty-data-flood": lambda port, s: flood(port, s, _empty_data),
    "slow-uploads": slow_uploads,
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.attackers")
    p.add_argument("attack", choices=list(ATTACKS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--source", default="127.0.0.1", help="loopback address agents connect from")
    args = p.parse_args()
    global SOURCE
    SOURCE = args.source
    result = ATTACKS[args.attack](args.port, args.seconds)
    print(json.dumps({"attack": args.attack, **result}), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
