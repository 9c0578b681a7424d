"""relay.tcp in one process: which port a TCP tunnel name gets, and keeps."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from relay.config import Settings
from relay.state import RelayState
from relay.tcp import PortUnavailable, TcpPorts
from tests.tcp.procs import free_range
from wire import StreamKind


def relay_state(tmp_path: Path, count: int) -> tuple[RelayState, int]:
    first, last = free_range(count)
    return RelayState.create(Settings(state_dir=tmp_path, tcp_ports=(first, last))), first


async def test_open_mode_names_keep_their_ports_until_the_range_is_full(tmp_path: Path) -> None:
    state, first = relay_state(tmp_path, 2)
    ports = state.tcp
    assert ports.bind(state, "a", has_token=False) == first
    ports.release("a")
    assert ports.bind(state, "b", has_token=False) == first + 1  # a's port is a's
    assert ports.bind(state, "a", has_token=False) == first  # back: the same port
    ports.release("a")
    ports.release("b")
    # Full of remembered ports: an offline name's port goes to a newcomer.
    assert ports.bind(state, "c", has_token=False) == first
    assert ports.bind(state, "b", has_token=False) == first + 1  # b's is still b's
    with pytest.raises(PortUnavailable) as info:
        ports.bind(state, "d", has_token=False)  # both ports are live now
    assert not info.value.permanent
    ports.close_all()


async def test_a_token_name_keeps_its_port_and_waits_for_it(tmp_path: Path) -> None:
    state, first = relay_state(tmp_path, 3)
    state.store.issue("t", kinds=frozenset({StreamKind.TCP}))
    state.store.issue("u", kinds=frozenset({StreamKind.TCP}))
    ports = state.tcp
    assert ports.bind(state, "t", has_token=True) == first
    assert ports.bind(state, "t", has_token=True) == first  # a second session: same listener
    ports.release("t")
    assert ports.bind(state, "u", has_token=True) == first + 1  # first is t's, in its record
    ports.release("u")
    squatter = socket.create_server(("127.0.0.1", first))  # another program took t's port
    try:
        with pytest.raises(PortUnavailable, match=f"port {first} of this tunnel is in use"):
            ports.bind(state, "t", has_token=True)
    finally:
        squatter.close()
    assert ports.bind(state, "t", has_token=True) == first
    ports.close_all()


async def test_a_relay_without_a_range_refuses_for_good(tmp_path: Path) -> None:
    state = RelayState.create(Settings(state_dir=tmp_path))
    with pytest.raises(PortUnavailable, match="serves no TCP tunnels") as info:
        TcpPorts().bind(state, "a", has_token=False)
    assert info.value.permanent
