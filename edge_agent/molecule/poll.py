"""Poll delivery: the platform's inbound A2A calls fetched through the activity cursor,
answered by the local server, the answers posted back through the platform.

What :meth:`PollDelivery.run_once` does (contract 11 and 9.1; the bookkeeping is
:mod:`.inbox`)::

    GET  /workspaces/:id/activity?type=a2a_receive&since_id=<cursor>&limit=100
           410 (cursor lost): POST .../activity/ack {"acked_seq": 0} (a no-op that answers
           the platform's last_acked_seq), then the newest rows without since_id
    each row, oldest first, that is a call still to answer:
      POST / to the local server (through the messageId de-duplication of the push
           path, so a message that also came by push reaches the local agent once)
      the answer back, as the Molecule SDK's reply() does:
           a calling workspace: POST /workspaces/<caller>/a2a, a new message/send
             (role agent) as this workspace; its messageId is derived from the call's,
             so a re-post after a failure is the same message
           a canvas user: POST /workspaces/:id/notify {"message": text}
    POST /workspaces/:id/activity/ack {"acked_seq": <highest seq done>}

Calls are answered one at a time, in the order they came (as the Molecule CLI's bridge
does). A failure that may pass (the platform or the local server unreachable) stops the
batch: the cursor stays before that row and the next round tries again, at most
:data:`MAX_ATTEMPTS` times; then a local failure is answered with its error text and an
undeliverable answer is dropped (logged), so one bad row cannot block the inbox.

What a caller gets: the text parts of the local server's answer (a message, a task's
artifacts and status messages, or the events of a stream), each as a text part, with
``metadata.inReplyTo`` = the call's messageId and the call's ``contextId``. Other part
kinds (files, data) are not carried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from edge_agent.errors import TargetError
from edge_agent.molecule.calls import decode_reply, reply_result
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import (
    CallQueued,
    CallTimedOut,
    MoleculeError,
    PeerCallError,
    PeerError,
    PeerUnreachable,
    PlatformRejected,
    PlatformUnavailable,
)
from edge_agent.molecule.inbox import InboundCall, Inbox
from edge_agent.target import LocalRequest, Target, close_response

logger = logging.getLogger(__name__)

#: Seconds between two fetches while polling (the SDK's PollDelivery waits 5, the
#: Molecule CLI 1): an inbound call waits this long at most before it is fetched.
POLL_INTERVAL: Final = 2.0
#: Rows per fetch with a cursor; without one (after a 410) the platform's maximum.
BATCH: Final = 100
RESET_BATCH: Final = 500
#: Tries of one row before its failure is final (see the module docstring).
MAX_ATTEMPTS: Final = 5
#: Longest answer of the local server read, and how long it may take (the platform's
#: own idle timeout for a pushed call).
MAX_ANSWER_BYTES: Final = 10 * 1024 * 1024
LOCAL_TIMEOUT: Final = 300.0
#: How long posting an answer to a calling workspace may take.
REPLY_TIMEOUT: Final = 60.0
#: Where calls go on the local server: what the relay hands it for the registered URL.
LOCAL_PATH: Final = "/"
#: Namespace of the answers' messageIds (uuid5 of the call's messageId).
REPLY_NAMESPACE: Final = uuid.UUID("0f6d1c52-5a4e-4f57-9b4e-6d6f6c6c706f")


class _Later(Exception):
    """This row could not be finished now; the next round tries it again."""


class PollDelivery:
    """Answers the workspace's queued calls (see the module docstring).

    Args:
        client: the workspace's platform client.
        target: where calls go (the push path's de-duplication, in front of the local
            server).
        inbox: the cursor state; kept across poll periods of one run.
        interval: seconds between rounds of :meth:`run`.
        on_answered: called with each call answered (for output).
    """

    def __init__(
        self,
        client: PlatformClient,
        target: Target,
        *,
        inbox: Inbox | None = None,
        interval: float = POLL_INTERVAL,
        on_answered: Callable[[InboundCall], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._target = target
        self.inbox = inbox or Inbox()
        self._interval = interval
        self._on_answered = on_answered
        self._sleep = sleep
        self._attempts: dict[str, int] = {}

    async def run(self) -> None:
        """Poll until cancelled. Platform outages are logged and waited out."""
        while True:
            await self.round()
            await self._sleep(self._interval)

    async def round(self) -> int:
        """One :meth:`run_once` whose platform failure is only logged (the session
        deals with the platform's outages and refusals)."""
        try:
            return await self.run_once()
        except MoleculeError as exc:
            logger.warning("poll_failed", extra={"error": str(exc)})
        except Exception:  # a bug must not end poll delivery silently: log, go on
            logger.exception("poll_round_failed")
        return 0

    async def run_once(self) -> int:
        """Fetch once and answer what came; returns the number of rows fetched."""
        rows, with_cursor = await self._fetch()
        try:
            for row in Inbox.chronological(rows, with_cursor=with_cursor):
                call = self.inbox.to_handle(row)
                if call is not None:
                    await self._answer(call)
                self.inbox.done(row, call)
        except _Later:
            pass
        await self._ack()
        return len(rows)

    async def _fetch(self) -> tuple[list[dict[str, Any]], bool]:
        cursor = self.inbox.cursor
        if cursor is not None:
            try:
                rows = await self._client.get_activity(
                    since_id=cursor, activity_type="a2a_receive", limit=BATCH
                )
                return rows, True
            except PlatformRejected as exc:
                if exc.status != 410:
                    raise
            logger.warning("poll_cursor_lost: starting over from the newest rows")
            self.inbox.cursor_lost()
        self.inbox.raise_floor(await self._client.ack_activity(0))
        rows = await self._client.get_activity(activity_type="a2a_receive", limit=RESET_BATCH)
        return rows, False

    async def _ack(self) -> None:
        seq = self.inbox.to_ack()
        if seq is not None:
            self.inbox.acked(await self._client.ack_activity(seq))

    async def _answer(self, call: InboundCall) -> None:
        try:
            texts = await self._ask_local(call)
        except (TargetError, TimeoutError, OSError) as exc:
            self._retry_or_give_up(call, f"the local server failed: {exc}")
            texts = [f"error: the agent could not handle the message ({exc})"]
        await self._post(call, texts)
        self._attempts.pop(call.row_id, None)
        logger.info(
            "poll_answered",
            extra={"message_id": call.message_id, "caller": call.caller_id or "canvas"},
        )
        if self._on_answered is not None:
            self._on_answered(call)

    def _retry_or_give_up(self, call: InboundCall, reason: str) -> None:
        """Raise :class:`_Later` unless the row had its :data:`MAX_ATTEMPTS`."""
        attempts = self._attempts.get(call.row_id, 0) + 1
        self._attempts[call.row_id] = attempts
        logger.warning(
            "poll_call_failed",
            extra={"message_id": call.message_id, "attempt": attempts, "reason": reason},
        )
        if attempts < MAX_ATTEMPTS:
            raise _Later(reason)
        self._attempts.pop(call.row_id, None)

    async def _ask_local(self, call: InboundCall) -> list[str]:
        request = LocalRequest(
            stream_id=0,
            method="POST",
            target=LOCAL_PATH,
            headers=[
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(call.body))),
            ],
            body=_once(call.body),
        )
        async with asyncio.timeout(LOCAL_TIMEOUT):
            response = await self._target.handle(request)
            try:
                body = await _read_capped(response.body, MAX_ANSWER_BYTES)
            finally:
                await close_response(response)
        return answer_texts(response.status, body)

    async def _post(self, call: InboundCall, texts: list[str]) -> None:
        try:
            if call.caller_id is None:
                await self._client.notify("\n".join(texts))
            else:
                await self._client.call_peer(
                    call.caller_id, reply_message(call, texts), reply_timeout=REPLY_TIMEOUT
                )
        except (CallQueued, PeerError, CallTimedOut):
            pass  # it reached the platform; a timeout may still deliver it: no re-post
        except (PlatformUnavailable, PeerUnreachable) as exc:
            self._retry_or_give_up(call, f"the answer was not delivered: {exc}")
            logger.error("poll_answer_dropped", extra={"message_id": call.message_id})
        except (PlatformRejected, PeerCallError) as exc:
            logger.error(
                "poll_answer_refused", extra={"message_id": call.message_id, "error": str(exc)}
            )


def answer_texts(status: int, body: bytes) -> list[str]:
    """The text parts of the local server's answer, or one line saying what went wrong."""
    if not 200 <= status < 300:
        return [f"error: the agent answered HTTP {status}"]
    try:
        texts = reply_result("local", status, decode_reply(body)).texts
    except PeerError as exc:
        return [f"error: {exc}"]
    return texts or ["(the agent's answer holds no text)"]


def reply_message(call: InboundCall, texts: list[str]) -> dict[str, Any]:
    """The A2A message that carries the answer to ``call`` back to its caller."""
    message: dict[str, Any] = {
        "role": "agent",
        "messageId": str(uuid.uuid5(REPLY_NAMESPACE, call.message_id)),
        "parts": [{"kind": "text", "text": text} for text in texts],
        "metadata": {"inReplyTo": call.message_id},
    }
    if call.context_id is not None:
        message["contextId"] = call.context_id
    return message


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TargetError(f"the answer is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
