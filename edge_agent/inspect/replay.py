"""Replay, and edit-and-replay, of a captured request against the local target.

A replay sends the captured request again, straight to the local target (not through
the relay, nor the de-duplication: it is meant to reach the local server), optionally
with edits of its method, path, headers and body. It goes through the same observed
path as tunnelled requests (:func:`edge_agent.inspect.tap.observe`), so its exchange is
a new row whose ``replay_of`` names the original. :meth:`Replayer.replay` returns that
row's id at once; the response is read to its end in the background (a replayed SSE
stream runs until the target ends it or the inspector closes).

For a port or URL target the replayer has its own :class:`~edge_agent.target.HttpTarget`
(so its own :class:`~edge_agent.http1.Pool`, apart from the tunnel's); an in-process app
is replayed into the running app.

Secrets: the page and the API show masked values. An edited header whose value is
still the masked text of the original's same header, or an edited body still equal to
the masked original, is sent with the original value: what the user did not change is
sent as it was captured.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any, Final

from edge_agent.headers import strip_hop_by_hop
from edge_agent.inspect import tap
from edge_agent.inspect.observe import Recorder
from edge_agent.inspect.store import Exchange, Store
from edge_agent.inspect.views import body as body_view
from edge_agent.target import EmptyBody, LocalRequest, Target, close_response

#: Replays in flight at once; more are refused with 429.
MAX_REPLAYS: Final = 16
#: Headers never copied from the capture (recomputed or this hop's own).
_DROP: Final = frozenset({"content-length", "host"})
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class ReplayError(ValueError):
    """A replay that cannot be done; ``status`` is the API's answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Replayer:
    """Replays rows of ``store`` into ``target``, recording through ``recorder``."""

    def __init__(self, store: Store, recorder: Recorder, target: Target) -> None:
        self.store = store
        self.recorder = recorder
        self.target = target
        self._tasks: set[asyncio.Task[None]] = set()

    def replay(self, exchange_id: int, edits: dict[str, Any]) -> int:
        """Start the replay of row ``exchange_id`` with ``edits``; returns the new row id.

        ``edits`` may hold ``method``, ``path``, ``headers`` (a list of ``[name, value]``
        or an object) and ``body`` (text) or ``body_base64``. Raises ReplayError.
        """
        original = self.store.get(exchange_id)
        if original is None:
            raise ReplayError(404, f"no request {exchange_id} (gone, or never was)")
        if len(self._tasks) >= MAX_REPLAYS:
            raise ReplayError(429, f"{MAX_REPLAYS} replays are running already")
        request = build_request(original, edits, self.store)
        new_id, pending = tap.observe(self.recorder, self.target, request, replay_of=exchange_id)
        task = asyncio.get_running_loop().create_task(_finish(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return new_id

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _finish(pending: Any) -> None:
    """Read the replay's response to its end (the Recorder sees it as it goes)."""
    try:
        response = await pending
    except Exception:  # recorded on the row already
        return
    try:
        async for _chunk in response.body:
            pass
    except Exception:  # recorded on the row already
        pass
    finally:
        await close_response(response)


def build_request(original: Exchange, edits: dict[str, Any], store: Store) -> LocalRequest:
    """The request to send: the captured one with ``edits`` applied (see
    :meth:`Replayer.replay`). Raises ReplayError for an incomplete capture or bad edits."""
    unknown = set(edits) - {"method", "path", "headers", "body", "body_base64"}
    if unknown:
        raise ReplayError(400, f"unknown edits: {', '.join(sorted(unknown))}")
    if not original.method:
        raise ReplayError(409, "the request head was not captured")
    method = _method(edits.get("method", original.method))
    path = _path(edits.get("path", original.path))
    headers = _headers(original, edits.get("headers"), store)
    body = _body(original, edits, store)
    headers = [(n, v) for n, v in strip_hop_by_hop(headers) if n.lower() not in _DROP]
    if body or method in ("POST", "PUT", "PATCH"):
        headers.append(("content-length", str(len(body))))
    stream = _once(body) if body else EmptyBody()
    return LocalRequest(0, method, path, headers, stream)


def _method(value: Any) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _TOKEN_CHARS:
        raise ReplayError(400, "method must be an HTTP token")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or not value.isprintable():
        raise ReplayError(400, "path must start with '/' and hold no control characters")
    if " " in value:
        raise ReplayError(400, "path must not contain spaces (percent-encode them)")
    return value


def _headers(original: Exchange, edited: Any, store: Store) -> list[tuple[str, str]]:
    captured = original.request.headers
    if edited is None:
        return list(captured)
    pairs = list(edited.items()) if isinstance(edited, dict) else edited
    if not isinstance(pairs, list) or not all(_is_pair(p) for p in pairs):
        raise ReplayError(400, "headers must be [[name, value], ...] or {name: value}")
    masked = {
        (n.lower(), store.masker.header(n, v)): v for n, v in captured
    }  # what the page showed -> what was sent
    out = []
    for name, value in pairs:
        if not name or not set(name) <= _TOKEN_CHARS or any(c in value for c in "\r\n\0"):
            raise ReplayError(400, f"invalid header {name!r}")
        out.append((name, masked.get((name.lower(), value), value)))
    return out


def _is_pair(pair: Any) -> bool:
    return (
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
    )


def _body(original: Exchange, edits: dict[str, Any], store: Store) -> bytes:
    side = original.request
    if "body_base64" in edits:
        try:
            return base64.b64decode(edits["body_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ReplayError(400, "body_base64 is not base64") from None
    if "body" in edits:
        text = edits["body"]
        if not isinstance(text, str):
            raise ReplayError(400, "body must be text (or use body_base64)")
        if not side.truncated and text == body_view(side, store.masker).get("text"):
            return bytes(side.body)  # unchanged as shown: send it as captured
        return text.encode("utf-8")
    if side.truncated or not side.complete:
        raise ReplayError(409, "the request body was not captured whole; send an edited body")
    return bytes(side.body)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
