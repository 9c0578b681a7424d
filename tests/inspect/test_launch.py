"""The inspector's flags and start-up: loopback addresses only, the next free port when
the default one is taken, every flag on both ``http`` and ``run``."""

from __future__ import annotations

import socket

import click
import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.inspect import tap
from edge_agent.inspect.launch import InspectSettings, parse_addr, running, take_settings
from edge_agent.molecule.cli import RunPrinter
from edge_agent.molecule.settings import resolve_run
from edge_agent.target import HttpTarget


def test_addresses_are_loopback_only() -> None:
    assert parse_addr("4041") == ("127.0.0.1", 4041)
    assert parse_addr(":4041") == ("127.0.0.1", 4041)
    assert parse_addr("localhost:4041") == ("127.0.0.1", 4041)
    assert parse_addr("127.0.0.2:80") == ("127.0.0.2", 80)
    assert parse_addr("[::1]:4041") == ("::1", 4041)
    for bad in ("0.0.0.0:4040", "192.168.1.2:4040", "example.com:4040", "127.0.0.1:x", "99999"):
        with pytest.raises(click.BadParameter):
            parse_addr(bad)


def test_flags_become_settings_and_leave_the_rest() -> None:
    flags = {
        "inspect_addr": "4050",
        "no_inspect": None,
        "inspect_reveal": True,
        "inspect_keep": 10,
        "inspect_body_limit": 0,
        "relay": "http://r",
    }
    settings = take_settings(flags)
    assert flags == {"relay": "http://r"}
    assert settings == InspectSettings(port=4050, search=False, reveal=True, keep=10, body_limit=0)
    assert take_settings({"no_inspect": True}).enabled is False
    assert take_settings({}) == InspectSettings()


@pytest.mark.parametrize("command", [["http"], ["run"]])
def test_both_commands_take_every_flag(command: list[str]) -> None:
    text = CliRunner().invoke(main, [*command, "--help"]).output
    for flag in ("--inspect ", "--no-inspect", "--inspect-reveal", "--inspect-keep",
                 "--inspect-body-limit"):  # fmt: skip
        assert flag in text


async def test_the_next_free_port_when_the_default_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        urls: list[str] = []
        settings = InspectSettings(port=port)
        async with running(settings, HttpTarget("9"), urls.append) as inspector:
            assert inspector is not None and tap.installed() is inspector.recorder
            assert urls == [inspector.url] and inspector.server.port > port
        assert tap.installed() is None


async def test_a_taken_explicit_address_leaves_the_agent_without_inspector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = InspectSettings(port=taken.getsockname()[1], search=False)
        async with running(settings, HttpTarget("9"), print) as inspector:
            assert inspector is None and tap.installed() is None
    assert "the inspector is off" in capsys.readouterr().err


async def test_no_inspect_starts_nothing() -> None:
    async with running(InspectSettings(enabled=False), HttpTarget("9"), print) as inspector:
        assert inspector is None and tap.installed() is None


def test_run_prints_the_inspector_beside_the_public_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = {"relay": "http://r", "to": "8000", "platform": "http://p", "workspace_id": "w"}
    printer = RunPrinter(resolve_run(flags, env={}), "http://127.0.0.1:8000")
    printer.inspector_at("http://127.0.0.1:4040")
    printer.public_url("https://relay.example/a/w/")
    assert capsys.readouterr().out.splitlines() == [
        "Forwarding https://relay.example/a/w/ -> http://127.0.0.1:8000",
        "Inspector http://127.0.0.1:4040",
    ]
