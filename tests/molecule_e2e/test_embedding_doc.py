"""The example of docs/embedding.md, run as written against the dev platform and the
relay (both generations): it must register, answer a call through the platform's
proxy, and exit 0 when drained by SIGTERM."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from tests.e2e.procs import ROOT, Proc, clean_env
from tests.molecule_e2e.conftest import Stack
from tests.molecule_e2e.stack import answer_text

DOC = ROOT / "docs" / "embedding.md"


def doc_example() -> str:
    """The first ```python block of the document."""
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"no python example in {DOC}"
    return match.group(1)


def test_the_documented_example_serves_a_workspace(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "my_agent.py"
    script.write_text(doc_example())
    ws = stack.workspace("embedded")
    env = clean_env(
        EDGE_PLATFORM_URL=stack.platform.url,
        EDGE_WORKSPACE_ID=ws.id,
        EDGE_PLATFORM_TOKEN=ws.token,
        EDGE_RELAY_URL=stack.relay.url,
        EDGE_RELAY_TOKEN=ws.relay_token,
        HOME=str(tmp_path),  # the token cache goes to ~/.molecule
    )
    proc = stack.procs.add(Proc("embedded", [sys.executable, str(script)], env=env))
    url = proc.wait_line(r"^public URL: (\S+)").group(1)
    assert url == stack.relay.workspace_url(ws.id)
    proc.wait_line(r"^registered with the platform")
    assert answer_text(stack.admin.a2a(ws.id, "from the docs")) == "FROM THE DOCS"
    assert (tmp_path / ".molecule" / ws.id / ".auth_token").read_text() == ws.token
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
