"""A plain HTTP origin for the laptop namespace (stdlib only, run as a process).

* ``GET /hello``: ``200 hello from the laptop``.
* ``GET /events?n=N&interval=S``: an SSE stream (chunked) of ``N`` events written
  ``S`` seconds apart; event ``i`` is ``id: i`` and ``data: {"i": i, "sent": <unix time>}``,
  so a reader on the same machine can measure each event's delay. The stream then ends
  cleanly (last chunk).

Binds ``--host`` on port 0 and prints ``listening on PORT``.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

#: Bounds on what one request may ask for, so a stray request cannot run for long.
MAX_EVENTS: Final = 10_000
MAX_INTERVAL: Final = 10.0


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
        else:
            self.send_error(404)

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
