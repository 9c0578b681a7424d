"""What the platform answers, as typed values (parsed by :mod:`.client`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterResult:
    """What a registration answered. ``is_next``: the "next" generation's fields came back."""

    token_issued: bool
    delivery_mode: str | None
    inbound_secret: str | None = dataclasses.field(repr=False)

    @property
    def is_next(self) -> bool:
        return self.delivery_mode is not None or self.inbound_secret is not None


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatResult:
    inbound_secret: str | None = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkspaceState:
    """``GET /workspaces/:id/state``; ``deleted`` also covers the 404 "deleted" shapes."""

    workspace_id: str
    status: str
    paused: bool
    deleted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """One row of ``GET /registry/:id/peers``."""

    id: str
    name: str
    role: str | None
    status: str
    url: str
    parent_id: str | None
    tier: int | None
    active_tasks: int
    agent_card: Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True, slots=True)
class DiscoveredPeer:
    """``GET /registry/discover/:id``."""

    id: str
    url: str
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class PluginDownload:
    """A plugin tarball as the platform sent it, and the source it came from."""

    data: bytes = dataclasses.field(repr=False)
    source: str


class Secrets(Mapping[str, str]):
    """The secrets bundle. Its ``repr`` names the keys only, so a stray log line is safe."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(keys={sorted(self._values)!r})"


def peer_from_row(row: dict[str, Any]) -> Peer:
    card = row.get("agent_card")
    return Peer(
        id=str(row["id"]),
        name=str_or(row.get("name"), ""),
        role=row.get("role") if isinstance(row.get("role"), str) else None,
        status=str_or(row.get("status"), "unknown"),
        url=str_or(row.get("url"), ""),
        parent_id=row.get("parent_id") if isinstance(row.get("parent_id"), str) else None,
        tier=int_or_none(row.get("tier")),
        active_tasks=int_or_none(row.get("active_tasks")) or 0,
        agent_card=card if isinstance(card, dict) else None,
    )


def str_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
