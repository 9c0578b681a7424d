"""Several HTTP tunnels on one session: HELLO's and WELCOME's ``tunnels`` lists.

A HELLO may list *extra* tunnels after its own name (at most :data:`MAX_SHARED`), each
with its own name, relay token and caller credentials. The WELCOME then answers with a
``tunnels`` list of the same length and order: each entry the name granted with its
URLs, or ``refused`` with a reason (the others keep working). From then on every OPEN of
the session carries a tunnel index after its kind byte: 0 for the session's own name,
``i`` for ``tunnels[i - 1]``. A session whose HELLO had no ``tunnels`` never sees the
key in WELCOME nor the index in OPEN, so single-name sessions keep their bytes.

Tokens travel in HELLO as text (inside the connection's TLS); the relay compares their
hashes as it does for the upgrade's ``Authorization`` header. Nothing here logs them,
and :class:`TunnelRequest`'s ``repr`` hides them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from wire.codes import MAX_CALLER_AUTH
from wire.errors import FrameError

if TYPE_CHECKING:
    from wire.payloads import CallerCredential

#: Most extra tunnels one HELLO may list (the session's own name comes on top). More
#: is a FRAME_ERROR. Each is a registry entry and a token check on the relay.
MAX_SHARED: Final = 16

#: Longest relay token text in a ``tunnels`` entry (relay tokens are ~50 characters).
MAX_TOKEN: Final = 256

#: Longest name in a ``tunnels`` entry: a DNS label's 63 characters. A longer one is a
#: FRAME_ERROR (a shorter invalid one is refused alone), so WELCOME, which echoes the
#: names, stays small.
MAX_NAME: Final = 63

#: Longest ``refused`` reason in a WELCOME entry, in characters.
MAX_REFUSAL: Final = 300


@dataclasses.dataclass(frozen=True, slots=True)
class TunnelRequest:
    """One extra tunnel a HELLO asks for.

    ``name``: None lets the token name it (or, in open mode without a token, the relay
    picks one). ``token``: the relay token for this name; None when the relay is in open
    mode. ``caller_auth``: as HELLO's own, for this name's public requests.
    """

    name: str | None
    token: str | None = dataclasses.field(default=None, repr=False)
    caller_auth: tuple[CallerCredential, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class TunnelGrant:
    """The WELCOME's answer for one extra tunnel: granted (``urls``) or ``refused``."""

    name: str | None
    urls: tuple[str, ...] = ()
    refused: str | None = None

    @property
    def granted(self) -> bool:
        return self.refused is None


def encode_requests(
    requests: tuple[TunnelRequest, ...],
    auth: Callable[[tuple[CallerCredential, ...]], list[dict[str, str]]],
) -> list[dict[str, Any]]:
    out = []
    for req in requests:
        obj: dict[str, Any] = {"name": req.name, "caller_auth": auth(req.caller_auth)}
        if req.token is not None:
            obj["token"] = req.token
        out.append(obj)
    return out


def decode_requests(
    raw: Any, credential: Callable[[Any], CallerCredential]
) -> tuple[TunnelRequest, ...]:
    """HELLO's ``tunnels`` (absent: empty). Raises FrameError for a malformed list."""
    if raw is None:
        return ()
    if not (isinstance(raw, list) and 0 < len(raw) <= MAX_SHARED):
        raise FrameError(f"hello tunnels must be a list of 1 to {MAX_SHARED}")
    return tuple(_request(item, credential) for item in raw)


def _request(item: Any, credential: Callable[[Any], CallerCredential]) -> TunnelRequest:
    if not isinstance(item, dict):
        raise FrameError("hello tunnels entry must be an object")
    name, token, auth = item.get("name"), item.get("token"), item.get("caller_auth", [])
    if not (name is None or (isinstance(name, str) and len(name) <= MAX_NAME)):
        raise FrameError(f"hello tunnels name must be null or a string of {MAX_NAME} chars at most")
    if not (token is None or (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN)):
        raise FrameError(f"hello tunnels token must be a string of 1 to {MAX_TOKEN} chars")
    if not (isinstance(auth, list) and len(auth) <= MAX_CALLER_AUTH):
        raise FrameError(f"hello tunnels caller_auth must be a list of at most {MAX_CALLER_AUTH}")
    return TunnelRequest(name, token, tuple(credential(c) for c in auth))


def encode_grants(grants: tuple[TunnelGrant, ...]) -> list[dict[str, Any]]:
    return [
        {"name": g.name, "urls": list(g.urls)}
        if g.granted
        else {"name": g.name, "refused": g.refused}
        for g in grants
    ]


def decode_grants(raw: Any) -> tuple[TunnelGrant, ...] | None:
    """WELCOME's ``tunnels`` (absent: None). Raises FrameError for a malformed list."""
    if raw is None:
        return None
    if not (isinstance(raw, list) and 0 < len(raw) <= MAX_SHARED):
        raise FrameError(f"welcome tunnels must be a list of 1 to {MAX_SHARED}")
    return tuple(_grant(item) for item in raw)


def _grant(item: Any) -> TunnelGrant:
    if not isinstance(item, dict):
        raise FrameError("welcome tunnels entry must be an object")
    name, urls, refused = item.get("name"), item.get("urls"), item.get("refused")
    if not (name is None or (isinstance(name, str) and len(name) <= MAX_NAME)):
        raise FrameError(
            f"welcome tunnels name must be null or a string of {MAX_NAME} chars at most"
        )
    if refused is not None:
        if not (isinstance(refused, str) and len(refused) <= MAX_REFUSAL):
            raise FrameError(f"welcome tunnels refused must be at most {MAX_REFUSAL} chars")
        return TunnelGrant(name, (), refused)
    if not (isinstance(name, str) and isinstance(urls, list)):
        raise FrameError("welcome tunnels entry needs a name and urls, or refused")
    if not all(isinstance(u, str) for u in urls):
        raise FrameError("welcome tunnels urls must be strings")
    return TunnelGrant(name, tuple(urls))
