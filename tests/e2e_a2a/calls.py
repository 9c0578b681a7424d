"""A2A calls made with the a2a-sdk client, timed as the events arrive."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
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

    @property
    def answer(self) -> list[str]:
        """The example's SendMessage answer: the text parts of the Task's artifacts."""
        assert self.kind == "task", self.event
        return [part.text for a in self.event.task.artifacts for part in a.parts]

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


def first_answer_part(result: dict[str, Any]) -> Any:
    """The first part of the example's raw SendMessage ``result`` (a Task's artifact)."""
    return result["task"]["artifacts"][0]["parts"][0]


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


#: Shape of the timed stream: the example sleeps INTERVAL before each chunk and GAP more
#: before chunk CHUNKS // 2, so the production gaps between artifacts are uneven.
CHUNKS, INTERVAL, GAP = 5, 0.6, 1.5
PRODUCED_GAPS = [INTERVAL, INTERVAL + GAP, INTERVAL, INTERVAL]

#: How far an arrival gap may stray from its production gap. An event may be late by
#: up to LATE seconds on a busy machine; it may look early (its predecessor was late)
#: by at most half the gap. A buffering hop fails both: the gaps collapse to ~0 and the
#: long one lands at the end.
LATE = 1.0


def timed_stream_request() -> SendMessageRequest:
    return request("tick", chunks=CHUNKS, interval=INTERVAL, gap=GAP)


def check_timed_stream(name: str, events: list[Arrival]) -> None:
    """The events of :func:`timed_stream_request` arrived as the agent produced them."""
    body = ["artifact_update"] * CHUNKS
    assert kinds(events) == ["task", "status_update", *body, "status_update"]
    working, completed = events[1], events[-1]
    assert (working.state, completed.state) == ("TASK_STATE_WORKING", "TASK_STATE_COMPLETED")
    assert text_of(events) == chunks_text("tick", CHUNKS)

    times = [a.at for a in artifacts(events)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    produced = completed.produced_at() - working.produced_at()  # the agent's own clock
    arrived = completed.at - working.at
    print(
        f"\n{name}: artifact gaps produced "
        + ", ".join(f"{g:.2f}" for g in PRODUCED_GAPS)
        + " s, arrived "
        + ", ".join(f"{g:.3f}" for g in gaps)
        + f" s; WORKING->COMPLETED produced {produced:.3f} s, arrived {arrived:.3f} s"
    )
    for got, want in zip(gaps, PRODUCED_GAPS, strict=True):
        assert want / 2 <= got <= want + LATE, (gaps, PRODUCED_GAPS)
    assert abs(arrived - produced) <= LATE
