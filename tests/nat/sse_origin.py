"""A plain HTTP origin for the laptop namespace (stdlib only, run as a process).

* ``GET /hello``: ``200 hello from the laptop``.
* ``GET /events?n=N&interval=S``: an SSE stream (chunked) of ``N`` events written
  ``S`` seconds apart; event ``i`` is ``id: i`` and ``data: {"i": i, "sent": <unix time>}``,
  so a reader on the same machine can measure each event's delay. The stream then ends
  cleanly (last chunk).
* ``GET /bytes?n=N``: ``N`` bytes of :func:`block` ``i`` after block ``i`` (a lost,
  repeated or reordered block changes the SHA-256), with Content-Length.
* ``POST /sink``: reads the body, answers ``{"size": ..., "sha256": ...}``.
* ``GET /slow?key=K&s=S``: counts the request under ``K``, answers ``done`` after ``S``
  seconds; ``GET /hits?key=K`` answers that count (each request reached us how often).

Binds ``--host`` on port 0 and prints ``listening on PORT``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

#: Bounds on what one request may ask for, so a stray request cannot run for long.
MAX_EVENTS: Final = 10_000
MAX_INTERVAL: Final = 10.0
MAX_BYTES: Final = 1 << 30
MAX_SLOW: Final = 60.0
BLOCK: Final = 64 * 1024

_hits: Counter[str] = Counter()
_hits_lock = threading.Lock()


def block(i: int) -> bytes:
    """Block ``i`` of a /bytes body: its index, then filler that depends on it."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return (seed * (BLOCK // len(seed) + 1))[:BLOCK]


def body_digest(n: int) -> str:
    """SHA-256 of the first ``n`` bytes of a /bytes body."""
    digest, i = hashlib.sha256(), 0
    while n > 0:
        piece = block(i)[:n]
        digest.update(piece)
        n -= len(piece)
        i += 1
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/hello":
            self._hello()
        elif url.path == "/events":
            query = parse_qs(url.query)
            n = min(int(query.get("n", ["50"])[0]), MAX_EVENTS)
            interval = min(float(query.get("interval", ["0.1"])[0]), MAX_INTERVAL)
            self._events(n, interval)
        elif url.path == "/bytes":
            self._bytes(min(int(parse_qs(url.query)["n"][0]), MAX_BYTES))
        elif url.path in ("/slow", "/hits"):
            query = parse_qs(url.query)
            self._slow(query["key"][0], min(float(query.get("s", ["0"])[0]), MAX_SLOW), url.path)
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/sink":
            self.send_error(404)
            return
        left = min(int(self.headers.get("Content-Length", "0")), MAX_BYTES)
        digest, size = hashlib.sha256(), 0
        while left > 0:
            piece = self.rfile.read(min(left, BLOCK))
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
            left -= len(piece)
        self._send(json.dumps({"size": size, "sha256": digest.hexdigest()}).encode())

    def _bytes(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        i = 0
        while n > 0:
            piece = block(i)[:n]
            self.wfile.write(piece)
            n -= len(piece)
            i += 1

    def _slow(self, key: str, seconds: float, path: str) -> None:
        if path == "/hits":
            with _hits_lock:
                count = _hits[key]
            self._send(str(count).encode())
            return
        with _hits_lock:
            _hits[key] += 1
        time.sleep(seconds)
        self._send(b"done")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hello(self) -> None:
        body = b"hello from the laptop"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self, n: int, interval: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(n):
            if i:
                time.sleep(interval)
            data = json.dumps({"i": i, "sent": time.time()})
            self._chunk(f"id: {i}\ndata: {data}\n\n".encode())
        self._chunk(b"")

    def _chunk(self, payload: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    server = ThreadingHTTPServer((args.host, 0), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
