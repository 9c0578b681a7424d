"""The agent card comes from the local A2A server itself (no ``--agent-card``): the
example agent's card, registered on the public URL; and a card that appears after the
first registration and later changes, pushed each time (real processes, both
generations)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.e2e.procs import free_port
from tests.molecule_e2e.conftest import Served, Stack
from tests.molecule_e2e.test_run import SETTLE, eventually


def test_the_example_agents_own_card_is_registered(served: Served) -> None:
    card = eventually(
        lambda: _card_named(served.stack, served.ws.id, "molecule-edge example agent"),
        what="the local server's card registered",
    )
    assert card["url"] == served.url
    assert {i["url"] for i in card["supportedInterfaces"]} == {served.url}
    assert any(skill["id"] == "echo" for skill in card["skills"])


def test_a_card_that_appears_and_changes_is_pushed(stack: Stack) -> None:
    ws = stack.workspace("card-changes")
    site = stack.tmp / f"site-{ws.id}"
    (site / ".well-known").mkdir(parents=True)
    port = free_port()
    agent = stack.start_agent(
        ws, "--to", f"http://127.0.0.1:{port}",
        "--", sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
        "--directory", str(site),
    )  # fmt: skip
    agent.wait_line(r"^Registered: ", SETTLE)
    _publish(site, {"name": "first card", "url": f"http://127.0.0.1:{port}/", "skills": []})
    first = eventually(lambda: _card_named(stack, ws.id, "first card"), what="first card")
    public = stack.relay.workspace_url(ws.id)
    assert first["url"] == public
    _publish(site, {"name": "second card", "url": f"http://127.0.0.1:{port}/rpc", "skills": []})
    second = eventually(lambda: _card_named(stack, ws.id, "second card"), what="second card")
    assert second["url"] == public + "rpc"  # the local path is kept under the public URL
    assert agent.registrations() == 1  # pushed with update-card, not by registering again


def _publish(site: Path, card: dict[str, Any]) -> None:
    path = site / ".well-known" / "agent-card.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card))
    tmp.replace(path)


def _card_named(stack: Stack, workspace_id: str, name: str) -> dict[str, Any] | None:
    card = stack.admin.workspace(workspace_id)["agent_card"]
    return card if isinstance(card, dict) and card.get("name") == name else None
