"""Calls to peer workspaces (A2A through the platform's proxy), minus the HTTP.

The HTTP exchange is :meth:`edge_agent.molecule.client.PlatformClient.call_peer`; this
module builds the JSON-RPC request, reads the answer, and keeps the peers' URLs.

Why always through the proxy: the Molecule SDK calls a peer's URL directly when it
knows one, sending this workspace's platform token to that URL; the proxy is the only
path where the platform checks the caller and the hierarchy, and in the "next"
generation a peer behind a relay only accepts the platform's inbound secret anyway.

What the proxy may answer to a ``message/send`` (contract 3.8, 7.3, 11):

* 2xx with the peer's JSON-RPC response, buffered (a ``message/stream`` reply comes as
  one blob of ``data:`` lines once the peer closed its stream);
* 200 ``{"status": "queued", "delivery_mode": "poll"|"push-async"}`` ("next": the peer
  polls, or a canvas caller waited too long) or 202 ``{"queued": true, ...}`` (the peer
  was busy or slow): not an answer; :func:`~.httperrors.call_error_for` makes them
  :class:`~.errors.CallQueued`;
* an error status with ``{"error": ...}``, mapped by the same function.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from edge_agent.molecule.errors import PeerError

SEND: Final = "message/send"
STREAM: Final = "message/stream"

#: How long a peer's URL is kept (the SDK's ``url_cache_ttl``).
PEER_URL_TTL: Final = 300.0

#: Keys of a reply whose parts are not the peer's answer (the caller's own message
#: echoed in a task's history, free-form metadata).
_NOT_ANSWER: Final = frozenset({"history", "metadata"})


@dataclasses.dataclass(frozen=True, slots=True)
class CallResult:
    """A peer's answer. ``documents``: the JSON-RPC response(s) (several for a stream);
    ``texts``: every text part of the answer, in order."""

    status: int
    documents: list[Any]
    texts: list[str]

    @property
    def text(self) -> str:
        return "\n".join(text.rstrip("\n") for text in self.texts)


def request_body(message: str | Mapping[str, Any], *, stream: bool = False) -> dict[str, Any]:
    """The JSON-RPC request for ``message``: a text, or an A2A message object (a
    ``messageId`` and the ``user`` role are added when missing)."""
    if isinstance(message, str):
        doc: dict[str, Any] = {"role": "user", "parts": [{"kind": "text", "text": message}]}
    else:
        doc = dict(message)
        doc.setdefault("role", "user")
    doc.setdefault("messageId", str(uuid.uuid4()))
    return {
        "jsonrpc": "2.0",
        "id": str(uuid.uuid4()),
        "method": STREAM if stream else SEND,
        "params": {"message": doc},
    }


def is_queued(document: Any) -> bool:
    """The "next" generation's 200 that says queued instead of answering."""
    return (
        isinstance(document, dict)
        and document.get("status") == "queued"
        and "result" not in document
        and "jsonrpc" not in document
    )


def decode_reply(body: bytes) -> list[Any]:
    """The JSON-RPC document(s) of a reply: one JSON value, or SSE ``data:`` lines.

    Raises:
        PeerError: the body is neither.
    """
    try:
        return [json.loads(body)]
    except ValueError:
        pass
    documents = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            try:
                documents.append(json.loads(line[5:].strip()))
            except ValueError as exc:
                raise PeerError(
                    "the peer's stream holds an event that is not JSON", status=200
                ) from exc
    if not documents:
        raise PeerError("the peer's answer is not JSON", status=200)
    return documents


def reply_result(target: str, status: int, documents: list[Any]) -> CallResult:
    """The answer in ``documents``, or PeerError for a JSON-RPC error among them."""
    texts: list[str] = []
    for document in documents:
        if not isinstance(document, dict):
            raise PeerError(f"call {target}: the answer is not a JSON-RPC response", status=status)
        error = document.get("error")
        if error is not None:
            raise PeerError(
                f"call {target}: the peer answered with an error: {_describe(error)}", status=status
            )
        texts.extend(_texts(document.get("result")))
    return CallResult(status, documents, texts)


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{message} (code {code})" if code is not None else str(message)
    return str(error)[:200]


def _texts(value: Any) -> Iterator[str]:
    """Text parts anywhere in a result (message, task artifacts and status messages,
    stream events of A2A 0.3 and 1.0), skipping the caller's own echoed message."""
    if isinstance(value, list):
        for item in value:
            yield from _texts(item)
        return
    if not isinstance(value, dict):
        return
    parts = value.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                if part.get("kind", "text") == "text":
                    yield part["text"]
    for key, item in value.items():
        if key not in _NOT_ANSWER and key != "parts":
            yield from _texts(item)


class PeerUrlCache:
    """Peers' URLs as discovery found them, for ``ttl`` seconds (the guide's 30.6).

    Seeded by the peers list and by discovery; an entry is dropped when a call to that
    peer found it unreachable. Only ``http(s)`` URLs are kept. In memory only, like the
    SDK's: a URL is a hint, the platform's answer is the truth.
    """

    def __init__(self, ttl: float = PEER_URL_TTL, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._urls: dict[str, tuple[str, float]] = {}

    def put(self, peer_id: str, url: str) -> None:
        if urlsplit(url).scheme in ("http", "https"):
            self._urls[peer_id] = (url, self._clock() + self._ttl)

    def get(self, peer_id: str) -> str | None:
        entry = self._urls.get(peer_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._urls[peer_id]
            return None
        return entry[0]

    def invalidate(self, peer_id: str) -> None:
        self._urls.pop(peer_id, None)

    def __len__(self) -> int:
        return len(self._urls)
