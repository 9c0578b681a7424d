"""A2A calls made with the a2a-sdk client, timed as the events arrive."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import datetime
from typing import Any

from a2a.client import Client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import Role, SendMessageRequest, StreamResponse, TaskState


def request(text: str, **metadata: float) -> SendMessageRequest:
    """A user message; ``metadata`` shapes the example's stream (chunks, interval, gap)."""
    message = new_text_message(text, role=Role.ROLE_USER)
    if metadata:
        message.metadata.update(metadata)
    return SendMessageRequest(message=message)


@dataclasses.dataclass
class Arrival:
    at: float  # seconds since the call started, on the caller's monotonic clock
    event: StreamResponse

    @property
    def kind(self) -> str:
        return str(self.event.WhichOneof("payload"))

    @property
    def state(self) -> str:
        return str(TaskState.Name(self.event.status_update.status.state))

    def produced_at(self) -> float:
        """The agent's wall-clock timestamp of a status update, in epoch seconds."""
        stamp = self.event.status_update.status.timestamp
        return datetime.fromisoformat(stamp.ToJsonString().replace("Z", "+00:00")).timestamp()


async def collect(client: Client, req: SendMessageRequest, within: float = 60.0) -> list[Arrival]:
    """Every event of one call, with its arrival time; fails after ``within`` seconds."""
    start, arrivals = time.monotonic(), []
    async with asyncio.timeout(within):
        async for event in client.send_message(req):
            arrivals.append(Arrival(time.monotonic() - start, event))
    return arrivals


def kinds(arrivals: list[Arrival]) -> list[str]:
    return [a.kind for a in arrivals]


def artifacts(arrivals: list[Arrival]) -> list[Arrival]:
    return [a for a in arrivals if a.kind == "artifact_update"]


def text_of(arrivals: list[Arrival]) -> str:
    return "".join(get_stream_response_text(a.event) for a in artifacts(arrivals))


def chunks_text(text: str, count: int, upto: int | None = None) -> str:
    """The example's artifact text for ``text`` in ``count`` chunks (the first ``upto``)."""
    return "".join(f"[{i}/{count}] {text.upper()}\n" for i in range(1, (upto or count) + 1))


def rpc_body(method: str, text: str, **metadata: float) -> dict[str, Any]:
    """A raw A2A 1.0 JSON-RPC request, for the wire-level checks."""
    message: dict[str, Any] = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": text}],
    }
    if metadata:
        message["metadata"] = metadata
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": message}}
