"""The ``ask`` endpoint of a TLS proxy's on-demand certificates: ``/_edge/tls-ask``.

Caddy (deploy/Caddyfile) obtains a certificate for a tunnel's host name, ``NAME.DOMAIN``,
the first time a client asks for it in a TLS handshake. Before it does, it calls
``GET /_edge/tls-ask?domain=NAME.DOMAIN`` on the relay and goes on only on a 2xx answer.
Without that check anyone could make the VM request certificates for arbitrary names
(and exhaust the certificate authority's rate limits for the whole domain).

The answer is 200 only when the relay has a wildcard domain, the asked name is exactly
one label below it, that label is a valid, unreserved tunnel name, and a token owns it.
Everything else is 404 (400 for a missing or repeated ``domain``). Open-mode names are
refused: they have no owner, so a certificate for them would be one for anybody.

The module knows nothing of the server stack: :func:`tls_ask` takes the token store, the
domain and the raw query string and returns the complete answer, so whichever public
side serves ``/_edge/`` can answer it in one call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import urllib.parse
from typing import Final

from relay.config import RESERVED_NAMES
from relay.errors import RelayConfigError
from relay.tokens import TokenStore
from wire.rules import valid_name

#: The reserved path Caddy's ``on_demand_tls { ask ... }`` points at.
TLS_ASK_PATH: Final = "/_edge/tls-ask"

#: The longest DNS name (RFC 1035); longer queries are refused before any parsing.
MAX_DOMAIN_LENGTH: Final = 253


@dataclasses.dataclass(frozen=True, slots=True)
class AskAnswer:
    """A complete HTTP answer: status, raw headers, JSON body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def tls_ask(store: TokenStore, domain: str | None, query: bytes) -> AskAnswer:
    """Whether a certificate may be requested for the ``domain=`` name in ``query``.

    Re-reads the token store first when its file changed (a stat otherwise), so a
    token issued a moment ago is honoured at once and a revoked one refused.
    """
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True)
    asked = values.get("domain", [])
    if len(asked) != 1:
        return _answer(400, "refused", "give exactly one domain=NAME")
    name = tunnel_label(asked[0], domain)
    if name is None:
        return _answer(404, "refused", "not a tunnel name under this relay's domain")
    with contextlib.suppress(RelayConfigError):
        store.refresh()  # unreadable: the last good copy decides
    if not store.owns(name):
        return _answer(404, "refused", "no token owns this name")
    return _answer(200, "ok", name)


def tunnel_label(host: str, domain: str | None) -> str | None:
    """The tunnel name in ``host`` when it is ``NAME.DOMAIN`` for a valid NAME, else None.

    Case and one trailing dot are ignored, as in DNS.
    """
    if not domain or len(host) > MAX_DOMAIN_LENGTH:
        return None
    host = host.lower().removesuffix(".")
    suffix = "." + domain.lower().removesuffix(".")
    label = host.removesuffix(suffix)
    if label == host or not valid_name(label) or label in RESERVED_NAMES:
        return None
    return label


def _answer(status: int, word: str, detail: str) -> AskAnswer:
    body = json.dumps({"status": word, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return AskAnswer(status, headers, body)
