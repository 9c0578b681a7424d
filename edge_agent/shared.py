"""Several HTTP tunnels over one connection to the relay (docs/protocol.md section 10.5).

``edge-agent start web api`` serves each tunnel of the config file; those that go to
the same relay with the same connection settings share one WebSocket: the first one's
token opens it, and HELLO lists the others (each with its own name, token and caller
auth). Each stream the relay opens says which tunnel it is for (``stream.tunnel``), and
goes to that tunnel's target, its request lines printed with that tunnel's label.

What happens to one tunnel leaves the others alone where it can:

* The relay refuses an extra tunnel (a bad name, a token for another name...): its
  ``[label]`` line says why, and the others go on. It is not asked for again this run.
* The first tunnel's token is revoked or refused, or another agent takes its name: the
  connection ends; that tunnel is dropped with its reason, and the next one carries a
  new connection for the rest. When no tunnel is left, the last error ends the client.

A blip of the connection is a pause for every tunnel on it: the session is resumed
(:mod:`edge_agent.resume`) with the same tunnels list, so each tunnel keeps its index
and its streams in flight go on.

A relay too old for shared connections answers as if HELLO listed no extra tunnels:
the client says so once and falls back to one connection per tunnel.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import click

import tunnel
from edge_agent.connect import ConnectOptions, check_name
from edge_agent.console import RequestLines
from edge_agent.errors import AuthError, ConfigError, NameTakenError, SharingUnsupported
from edge_agent.session import DRAIN_TIMEOUT, StreamTarget, TunnelSession
from edge_agent.tunnel import ReconnectPolicy, TunnelClient
from wire import MAX_CALLER_AUTH, MAX_SHARED, CallerCredential, TunnelRequest, Welcome

#: Most tunnels one connection carries: its own and the HELLO's extra ones.
PER_CONNECTION = MAX_SHARED + 1


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Member:
    """One tunnel of a shared connection: its label, what it asks the relay for, and
    where its streams go."""

    label: str
    name: str | None
    token: str | None = dataclasses.field(repr=False)
    caller_auth: tuple[CallerCredential, ...]
    target: StreamTarget
    lines: RequestLines


class _Router:
    """The connection's :class:`StreamTarget`: each stream to its tunnel's target."""

    def __init__(self) -> None:
        self.routes: list[StreamTarget] = []  # by tunnel index, for the current session

    def handler(self, stream: tunnel.Stream) -> tunnel.StreamHandler:
        if stream.tunnel >= len(self.routes):
            raise LookupError(f"no tunnel {stream.tunnel} on this connection")
        return self.routes[stream.tunnel].handler(stream)

    async def aclose(self) -> None:
        """The members' targets belong to their owner, who closes them."""


class SharedClient(TunnelClient):
    """A :class:`TunnelClient` whose connection carries ``members`` (the first one's
    name and token open it). Other arguments as :class:`TunnelClient`'s."""

    def __init__(
        self,
        relay_url: str,
        members: Sequence[Member],
        *,
        options: ConnectOptions,
        agent: str,
        policy: ReconnectPolicy | None = None,
    ) -> None:
        if not 1 <= len(members) <= PER_CONNECTION:
            raise ValueError(f"a connection carries 1 to {PER_CONNECTION} tunnels")
        for member in members:
            check_name(member.name)
            if len(member.caller_auth) > MAX_CALLER_AUTH:
                raise ConfigError(
                    f"[{member.label}] at most {MAX_CALLER_AUTH} caller credentials are allowed"
                )
        self.members = list(members)
        self.failed: str | None = None  # the label of the tunnel whose error ended run()
        self._router = _Router()
        self._asked: list[Member] = []  # the current session's extra tunnels, in order
        self.apart: list[TunnelClient] = []  # one client per tunnel, on a relay too old
        first = members[0]
        super().__init__(
            relay_url,
            first.token,
            first.name,
            self._router,
            caller_auth=first.caller_auth,
            on_ready=self._ready_all,
            on_retry=self._retrying,
            on_resumed=self._resumed,
            options=options,
            agent=agent,
            policy=policy or ReconnectPolicy(),
        )

    async def run(self) -> None:
        """Serve until drained or stopped; a tunnel that fails for good is dropped and
        the rest go on, until none is left (then its error is raised)."""
        while True:
            try:
                await super().run()
                return
            except (AuthError, NameTakenError) as exc:
                self._drop_first(exc)
            except SharingUnsupported as exc:
                click.echo(f"[{self.members[0].label}] {exc}: one connection each", err=True)
                await self._run_apart()
                return

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        await asyncio.gather(super().drain(deadline), *(c.drain(deadline) for c in self.apart))

    def stop(self) -> None:
        super().stop()
        for client in self.apart:
            client.stop()

    async def _run_apart(self) -> None:
        """Each tunnel on a connection of its own, as ``start`` did before relays could
        share one; the first that fails for good stops the others."""
        self.apart = [
            TunnelClient(
                ",".join(self.relays.urls),  # every node of a cluster, as the shared client
                member.token,
                member.name,
                member.target,
                policy=self.policy,
                options=self.options,
                caller_auth=member.caller_auth,
                agent=self.agent,
                on_ready=member.lines.ready,
                on_retry=member.lines.retrying,
                on_resumed=member.lines.resumed,
            )
            for member in self.members
        ]
        if self._stop.is_set():  # drained or stopped meanwhile
            return
        tasks = [asyncio.ensure_future(client.run()) for client in self.apart]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t.done() and t.exception() is not None), None)
        if failed is None:
            return
        for client in self.apart:
            client.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.failed = self.members[tasks.index(failed)].label
        error = failed.exception()
        assert error is not None
        raise error

    def _new_session(self, link: tunnel.WsLink) -> TunnelSession:
        if self._parked is None:  # a fresh session: the tunnels left, in their order
            self._asked = self.members[1:]
            self._router.routes = [member.target for member in self.members]
        # else it resumes the parked one: the same list, so that each tunnel keeps its
        # index (streams in flight carry it) and the routes go on as they were
        session = super()._new_session(link)
        session.tunnels = tuple(TunnelRequest(m.name, m.token, m.caller_auth) for m in self._asked)
        return session

    def _drop_first(self, error: AuthError | NameTakenError) -> None:
        gone = self.members.pop(0)
        if not self.members:
            self.failed = gone.label
            raise error
        click.echo(f"[{gone.label}] {error}; the other tunnels go on", err=True)
        first = self.members[0]
        self.name, self._token = first.name, first.token
        self.set_caller_auth(first.caller_auth)

    def _ready_all(self, welcome: Welcome) -> None:
        self.members[0].lines.ready(welcome)
        for member, grant in zip(self._asked, welcome.tunnels or (), strict=False):
            if grant.granted:
                own = dataclasses.replace(
                    welcome, name=grant.name or "", urls=grant.urls, replaced=None, tunnels=None
                )
                member.lines.ready(own)
            elif member in self.members:
                self.members.remove(member)  # not asked for again
                reason = f"the relay refused this tunnel: {grant.refused}"
                click.echo(f"[{member.label}] {reason}", err=True)

    def _resumed(self, detail: str) -> None:
        for member in self.members:
            member.lines.resumed(detail)

    def _retrying(self, delay: float, error: BaseException | None) -> None:
        for member in self.members:
            member.lines.retrying(delay, error)
