"""The agent card registered with the platform.

The platform's A2A proxy POSTs to the registered URL, and A2A clients POST to the card's
interface URL verbatim, so both must be the relay's public URL of this workspace,
``<relay public url>/a/<workspace-id>/`` (trailing slash: without it a Starlette
server answers 307, which the a2a-sdk client does not follow).

A built card has the A2A 1.0 shape (``supportedInterfaces``) and keeps the 0.3-style
top-level ``url`` too: the Molecule platform reads ``agent_card.url``, and the a2a-sdk
1.x parser ignores it when ``supportedInterfaces`` is present.

A user-supplied card keeps everything but its interface URLs, which are moved onto the
public URL with their path kept: ``http://localhost:8000/rpc`` becomes
``<public url>rpc``, because the relay maps ``<public url>X`` to the local ``/X``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

#: The only binding the relay path carries end to end (HTTP POST + SSE).
JSONRPC_BINDING: Final = "JSONRPC"

#: Largest card file we load (cards are a few KiB; the platform stores them as JSONB).
MAX_CARD_FILE_BYTES: Final = 1024 * 1024


def public_workspace_url(relay_public_url: str, workspace_id: str) -> str:
    """``<relay public url>/a/<workspace-id>/``, the URL the platform and callers use."""
    return f"{relay_public_url.rstrip('/')}/a/{workspace_id}/"


def build_agent_card(
    public_url: str,
    *,
    name: str,
    description: str = "",
    version: str = "1.0.0",
    skills: Sequence[Mapping[str, Any]] = (),
    streaming: bool = True,
    protocol_versions: Sequence[str] = ("1.0",),
) -> dict[str, Any]:
    """A minimal A2A card whose interfaces all point at ``public_url``.

    ``protocol_versions`` lists what the local server speaks, preferred first
    (``("1.0", "0.3")`` for an a2a-sdk server with its 0.3 compatibility on).
    """
    url = _with_slash(public_url)
    card: dict[str, Any] = {
        "name": name,
        "description": description or name,
        "version": version,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": JSONRPC_BINDING, "protocolVersion": v}
            for v in protocol_versions
        ],
        "capabilities": {"streaming": streaming},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [dict(skill) for skill in skills],
        # 0.3 fields: the Molecule platform reads `url`; 0.3 clients read all three.
        "url": url,
        "preferredTransport": JSONRPC_BINDING,
    }
    if "0.3" in protocol_versions:
        card["protocolVersion"] = "0.3.0"
    return card


def rewrite_card_urls(card: Mapping[str, Any], public_url: str) -> dict[str, Any]:
    """A copy of ``card`` with every interface URL moved onto ``public_url``.

    Rewrites the top-level ``url`` and the ``url`` of each ``supportedInterfaces`` and
    ``additionalInterfaces`` entry. A card with no URL at all gets ``url`` and a 1.0
    JSON-RPC interface at ``public_url``.
    """
    base = _with_slash(public_url)
    result = copy.deepcopy(dict(card))
    for key in ("supportedInterfaces", "additionalInterfaces"):
        for entry in result.get(key) or ():
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                entry["url"] = _rebase(entry["url"], base)
    if isinstance(result.get("url"), str):
        result["url"] = _rebase(result["url"], base)
    else:
        result["url"] = _first_interface_url(result) or base
    if not result.get("supportedInterfaces") and "additionalInterfaces" not in result:
        result["supportedInterfaces"] = [
            {"url": result["url"], "protocolBinding": JSONRPC_BINDING, "protocolVersion": "1.0"}
        ]
    return result


def load_agent_card(path: Path | str, public_url: str) -> dict[str, Any]:
    """Read a JSON card file and rewrite its URLs (see :func:`rewrite_card_urls`).

    Raises:
        ValueError: the file is too large, not JSON, or not a JSON object.
        OSError: it cannot be read.
    """
    raw = Path(path).read_bytes()
    if len(raw) > MAX_CARD_FILE_BYTES:
        raise ValueError(f"agent card {path} is larger than {MAX_CARD_FILE_BYTES} bytes")
    card = json.loads(raw)
    if not isinstance(card, dict):
        raise ValueError(f"agent card {path} is not a JSON object")
    return rewrite_card_urls(card, public_url)


def _rebase(url: str, base: str) -> str:
    if url.startswith(base):
        return url
    parts = urlsplit(url)
    suffix = parts.path.lstrip("/")
    if parts.query:
        suffix = f"{suffix}?{parts.query}"
    return base + suffix


def _first_interface_url(card: Mapping[str, Any]) -> str | None:
    for entry in card.get("supportedInterfaces") or ():
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            return str(entry["url"])
    return None


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
