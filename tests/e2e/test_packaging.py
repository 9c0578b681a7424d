"""What ``pip install .`` ships: every package of the project, so the installed commands
import what they import from a checkout (a missing ``edge_agent.molecule`` once made
the installed ``edge-agent`` fail at start-up)."""

from __future__ import annotations

import tomllib

from tests.e2e.procs import ROOT


def test_every_package_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in listed
        if "." not in top
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"not shipped: {sorted(found - listed)}"
