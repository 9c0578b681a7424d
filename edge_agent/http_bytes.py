"""HTTP/1.1 bytes observed, not re-serialised: where a response ends, and a Host splice.

:class:`ResponseObserver` feeds the target's response bytes to httptools (llhttp, C)
only to learn where the response ends; it never changes or copies them, and registers
no ``on_body`` callback, so a body costs no Python call per chunk. The ends it knows:

* 1xx interim heads (100, 103) are skipped: the final head follows on the same bytes;
* HEAD: the response ends with its head, whatever Content-Length it announces;
* 204/304, Content-Length, chunked (trailers included): llhttp's message end;
* no framing: the end of the connection (:meth:`ResponseObserver.ends_at_eof`);
* 101: the end of HTTP on this connection (:attr:`ResponseObserver.upgrade`).

One observer lives with one connection and is :meth:`~ResponseObserver.start`-ed per
exchange; its parser is replaced only after an exchange that left it mid-message (HEAD).
"""

from __future__ import annotations

import httptools

from edge_agent.errors import TargetFailed


class ResponseObserver:
    """Watches one response at a time (see the module docstring)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.stale = False  # the parser stopped mid-message: a new one for the next exchange
        self.start(head_only=False)

    def start(self, head_only: bool) -> None:
        """Get ready for the response to a new request (``head_only``: a HEAD request; a
        pooled connection is started before the request line is read, and
        :attr:`head_only` is set once it is)."""
        if self.stale:
            self.parser = httptools.HttpResponseParser(self)
            self.stale = False
        self.head_only = head_only
        self.status = 0  # final status, once its head is complete
        self.framed = False  # Content-Length or Transfer-Encoding in the final head
        self.conn_close = False  # "Connection: close" in the final head
        self.keep_alive = False  # the connection may carry another exchange after this one
        self.complete = False
        self.upgrade = False

    def feed(self, data: bytes) -> None:
        """Observe ``data``; then check :attr:`complete` and :attr:`upgrade`.

        Raises:
            TargetFailed: the bytes are not a valid HTTP/1.1 response.
        """
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgrade = self.complete = True
        except httptools.HttpParserError as exc:
            self.stale = True
            raise TargetFailed(f"local target sent an invalid response: {exc}") from None
        if self.complete and self.status == 101:
            self.upgrade = True

    def ends_at_eof(self) -> bool:
        """The final head is in and its body runs to the end of the connection."""
        return self.status >= 200 and not self.framed and not self.complete

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 14 or n == 17:
            low = name.lower()
            if low == b"content-length" or low == b"transfer-encoding":
                self.framed = True
        elif n == 10 and name.lower() == b"connection" and b"close" in value.lower():
            self.conn_close = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:  # interim: the real head follows
            self.framed = self.conn_close = False
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_only:
            # llhttp does not know the request was HEAD and would wait for the body.
            self.keep_alive = not self.conn_close and self.parser.get_http_version() == "1.1"
            self.complete = self.stale = True

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True


def splice_host(head: bytes, host: bytes) -> bytes:
    """``head`` (request line and header lines, each ending in CRLF, no blank line) with
    every Host line replaced by one ``Host: host`` in the first one's place (added
    after the request line if there was none)."""
    lines = head.split(b"\r\n")
    out = [lines[0]]
    placed = False
    for line in lines[1:-1]:
        if line[:5].lower() == b"host:":
            if not placed:
                out.append(b"Host: " + host)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.insert(1, b"Host: " + host)
    out.append(b"")
    return b"\r\n".join(out)
