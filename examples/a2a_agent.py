"""An example A2A agent, built with a2a-sdk 1.x, to put behind molecule-edge.

What it answers (JSON-RPC binding, A2A 1.0; the 0.3 method names are served too):

* ``SendMessage``: a Task (SUBMITTED, WORKING, then INPUT_REQUIRED), returned when it
  waits for input: its ``history`` holds the user's message, its one new artifact
  (``echo-N``) the user's text upper-cased and a line saying which of the watched secret
  environment variables are set (names only: the values never leave the process); the
  same facts are in the artifact's metadata: ``{"echo": ..., "secrets": [...]}``. The
  task stays open: a message with its ``taskId`` adds the next artifact, ``CancelTask``
  ends it. (``returnImmediately`` returns the Task as soon as it exists.)
* ``SendStreamingMessage``: a Task lifecycle produced over time: the Task, a WORKING
  status, ``chunks`` artifact chunks ``interval`` seconds apart (the text
  ``[i/n] TEXT\\n`` each), optionally a silent ``gap`` in the middle of the stream, then
  COMPLETED. A cancelled stream ends with a CANCELED status.
* ``GetTask``, ``ListTasks``, ``CancelTask`` and ``SubscribeToTask``: the SDK's, on an
  in-memory store of at most ``MAX_TASKS`` tasks.

It follows the mandatory tests of the A2A conformance kit (a2aproject/a2a-tck) for A2A
1.0 over JSON-RPC; ``examples/a2a_spec.py`` fills, in the server's wiring, what a2a-sdk
1.3.0 lacks for them, and tests/examples/test_conformance.py checks each one, directly
and through a tunnel.

Run it as a server, or import it as an ASGI app (configured from the environment)::

    python examples/a2a_agent.py --port 8000 --public-url https://relay.example/a/demo/
    edge-agent http --app examples.a2a_agent:app --relay ...

Settings (flag, environment variable, default):

* ``--public-url`` / ``A2A_PUBLIC_URL``: the URL callers use, written into the card's
  ``supportedInterfaces[0].url`` (a trailing slash is added: the SDK client does not
  follow the redirect a missing one causes). Unset: derived per request from
  ``X-Forwarded-Proto/Host/Prefix`` (as the relay sets them), else from the request.
* ``--chunks`` / ``A2A_CHUNKS`` (5), ``--interval`` / ``A2A_INTERVAL`` (0.2 s),
  ``--gap`` / ``A2A_GAP`` (0 s): the stream's shape. A message may override each one
  with a number in its metadata (``{"chunks": 3, "interval": 0.1, "gap": 30}``);
  values are clamped to the ``MAX_*`` limits below.
* ``--sse-ping`` / ``A2A_SSE_PING`` (15 s, sse-starlette's default; 0 turns it off):
  the keep-alive comment the SDK's SSE responses send when idle. A silent gap is only
  silent on the wire with the ping off.
* ``--secret-names`` / ``A2A_SECRET_NAMES`` (``DEMO_SECRET``): comma-separated names of
  the environment variables reported as present or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import uvicorn
from a2a.helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_agent_card_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Message,
    TaskState,
)
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

try:  # imported from the examples package (python -m, --app examples.a2a_agent:app)
    from examples.a2a_spec import BoundedTaskStore, SpecRequestHandler, spec_jsonrpc_routes
except ModuleNotFoundError:  # run as a script: python examples/a2a_agent.py
    from a2a_spec import (  # type: ignore[no-redef,import-not-found]
        BoundedTaskStore,
        SpecRequestHandler,
        spec_jsonrpc_routes,
    )

#: Most artifact chunks one stream may ask for.
MAX_CHUNKS: Final = 1000
#: Longest pause between chunks, in seconds.
MAX_INTERVAL: Final = 60.0
#: Longest silent gap inside a stream, in seconds.
MAX_GAP: Final = 600.0
#: Longest text echoed back (longer input is cut, so a reply stays small).
MAX_ECHO: Final = 4096
#: Methods answered with a Task lifecycle over time; SendMessage gets one echo artifact.
STREAMING_METHODS: Final = frozenset({"SendStreamingMessage", "message/stream"})
CARD_PATH: Final = "/.well-known/agent-card.json"
#: Default of ``Settings.idle_release``, in seconds.
IDLE_RELEASE: Final = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    public_url: str | None = None
    chunks: int = 5
    interval: float = 0.2
    gap: float = 0.0
    sse_ping: float = 15.0
    secret_names: tuple[str, ...] = ("DEMO_SECRET",)
    #: Seconds a task waiting for input keeps its in-memory runner (the SDK's default is
    #: forever: one per open task); after that a follow-up rebuilds it from the store.
    idle_release: float = IDLE_RELEASE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read the ``A2A_*`` variables; unset ones keep the defaults."""
        d = cls()
        names = env.get("A2A_SECRET_NAMES")
        return cls(
            public_url=env.get("A2A_PUBLIC_URL") or None,
            chunks=_clamp_int(env.get("A2A_CHUNKS"), d.chunks, MAX_CHUNKS),
            interval=_clamp(env.get("A2A_INTERVAL"), d.interval, MAX_INTERVAL),
            gap=_clamp(env.get("A2A_GAP"), d.gap, MAX_GAP),
            sse_ping=_clamp(env.get("A2A_SSE_PING"), d.sse_ping, MAX_GAP),
            secret_names=_split_names(names) if names is not None else d.secret_names,
        )


def _clamp(raw: object, default: float, limit: float) -> float:
    """A number in [0, limit] from ``raw``; ``default`` when it is not a number."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return min(max(value, 0.0), limit) if value == value else default  # NaN -> default


def _clamp_int(raw: object, default: int, limit: int) -> int:
    return max(1, int(_clamp(raw, default, limit)))


def _split_names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


@dataclasses.dataclass(frozen=True, slots=True)
class StreamShape:
    chunks: int
    interval: float
    gap: float

    @classmethod
    def for_message(cls, settings: Settings, metadata: Mapping[str, Any]) -> StreamShape:
        return cls(
            chunks=_clamp_int(metadata.get("chunks"), settings.chunks, MAX_CHUNKS),
            interval=_clamp(metadata.get("interval"), settings.interval, MAX_INTERVAL),
            gap=_clamp(metadata.get("gap"), settings.gap, MAX_GAP),
        )


def _metadata(message: Message | None) -> dict[str, Any]:
    if message is None or not message.HasField("metadata"):
        return {}
    # A protobuf Struct: scalar values read back as Python numbers, strings and bools.
    return {key: message.metadata[key] for key in message.metadata.keys()}


class ExampleExecutor(AgentExecutor):
    """Echo for SendMessage, a chunked task over time for SendStreamingMessage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        method = context.call_context.state.get("method")
        if method in STREAMING_METHODS:
            await self._stream(context, event_queue)
        else:
            await self._reply(context, event_queue)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # The SDK cancels execute() right after this returns; CANCELED ends the stream.
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()

    def secrets_present(self) -> list[str]:
        return [name for name in self.settings.secret_names if os.environ.get(name)]

    def _secrets_line(self) -> str:
        return "secrets: " + (", ".join(self.secrets_present()) or "none")

    async def _reply(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await _task_for(context, event_queue)
        await updater.start_work()
        echo = context.get_user_input()[:MAX_ECHO].upper()
        turn = len(context.current_task.artifacts) + 1 if context.current_task else 1
        await updater.add_artifact(
            parts=[new_text_part(echo), new_text_part(self._secrets_line())],
            artifact_id=f"echo-{turn}",
            name="echo",
            metadata={"echo": echo, "secrets": self.secrets_present()},
        )
        # Interrupted, not finished: the caller may send more text to this task (each
        # reply is one more artifact) or cancel it.
        await updater.requires_input()

    async def _stream(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await _task_for(context, event_queue)
        note = updater.new_agent_message(parts=[new_text_part("working; " + self._secrets_line())])
        await updater.start_work(message=note)
        shape = StreamShape.for_message(self.settings, _metadata(context.message))
        await self._chunks(updater, context.get_user_input()[:MAX_ECHO].upper(), shape)
        await updater.complete()

    async def _chunks(self, updater: TaskUpdater, text: str, shape: StreamShape) -> None:
        for i in range(shape.chunks):
            await asyncio.sleep(shape.interval)
            if shape.gap and i == shape.chunks // 2:
                await asyncio.sleep(shape.gap)
            await updater.add_artifact(
                parts=[new_text_part(f"[{i + 1}/{shape.chunks}] {text}\n")],
                artifact_id="result",
                name="result",
                append=i > 0,
                last_chunk=i == shape.chunks - 1,
            )


async def _task_for(context: RequestContext, event_queue: EventQueue) -> TaskUpdater:
    """An updater for the request's task, the Task itself enqueued first if it is new
    (the SDK wants a Task before any update), SUBMITTED with the user's message.

    A follow-up may name its task without the context: the task's own context is used
    (the SDK would give the request a new one, which the task then refuses)."""
    task_id, context_id = context.task_id or "", context.context_id or ""
    if context.current_task is not None:
        context_id = context.current_task.context_id
    else:
        history = [context.message] if context.message is not None else []
        task = new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=history)
        await event_queue.enqueue_event(task)
    return TaskUpdater(event_queue, task_id, context_id)


def make_card(url: str) -> AgentCard:
    """The agent card; ``url`` is where callers POST (it gets a trailing slash)."""
    url = url if url.endswith("/") else url + "/"
    return AgentCard(
        name="molecule-edge example agent",
        description="Echoes text upper-cased; streams it back in chunks over time.",
        version="0.1.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="echo",
                description="Upper-cases the text; streamed as timed chunks on request.",
                tags=["demo"],
                examples=["hello"],
            )
        ],
    )


def public_url_of(request: Request) -> str:
    """This agent's base URL as the caller sees it, from proxy headers if present.

    The relay sets ``X-Forwarded-Proto/Host/Prefix``. An example can trust them; a
    real agent exposed without a proxy in front should use a configured URL instead.
    """
    headers = request.headers
    proto = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", headers.get("host", request.url.netloc))
    prefix = headers.get("x-forwarded-prefix", "").rstrip("/")
    return f"{proto}://{host.split(',')[0].strip()}{prefix}/"


async def _derived_card(request: Request) -> JSONResponse:
    return JSONResponse(agent_card_to_dict(make_card(public_url_of(request))))


def card_routes(settings: Settings) -> Sequence[BaseRoute]:
    if settings.public_url:
        return create_agent_card_routes(make_card(settings.public_url), card_url=CARD_PATH)
    return [Route(CARD_PATH, _derived_card, methods=["GET"])]


def build_app(settings: Settings) -> Starlette:
    """The ASGI app: the card at ``/.well-known/agent-card.json``, JSON-RPC at ``/``."""
    # sse-starlette reads its ping interval from this class attribute (process-wide).
    EventSourceResponse.DEFAULT_PING_INTERVAL = settings.sse_ping  # type: ignore[assignment]
    handler = SpecRequestHandler(
        agent_executor=ExampleExecutor(settings),
        task_store=BoundedTaskStore(),
        agent_card=make_card(settings.public_url or "http://127.0.0.1/"),
        interrupted_task_timeout=settings.idle_release,
    )
    rpc = spec_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await handler.aclose()  # the runners of tasks still open (waiting for input)

    return Starlette(routes=[*card_routes(settings), *rpc], lifespan=lifespan)


#: The app for ``edge-agent --app examples.a2a_agent:app`` and ``uvicorn``: configured
#: from the ``A2A_*`` environment variables at import.
app = build_app(Settings.from_env(os.environ))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = Settings.from_env(os.environ)  # flags default to the environment
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--public-url", default=env.public_url)
    p.add_argument("--chunks", type=int, default=env.chunks)
    p.add_argument("--interval", type=float, default=env.interval)
    p.add_argument("--gap", type=float, default=env.gap)
    p.add_argument("--sse-ping", type=float, default=env.sse_ping)
    p.add_argument("--secret-names", default=",".join(env.secret_names))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    settings = Settings(
        public_url=args.public_url,
        chunks=_clamp_int(args.chunks, 5, MAX_CHUNKS),
        interval=_clamp(args.interval, 0.2, MAX_INTERVAL),
        gap=_clamp(args.gap, 0.0, MAX_GAP),
        sse_ping=_clamp(args.sse_ping, 15.0, MAX_GAP),
        secret_names=_split_names(args.secret_names),
    )
    # uvicorn defaults written down: keep-alive 5 s, no limit on concurrency; access log
    # on, so a demo shows each call.
    uvicorn.run(build_app(settings), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
