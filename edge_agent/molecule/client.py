"""An async client for the Molecule platform's remote-workspace API.

One :class:`PlatformClient` per workspace, on one ``httpx.AsyncClient``. Every method is
a single HTTP exchange: no retries here (the session owns retry policy), and every
failure is raised as an :mod:`edge_agent.molecule.errors` exception: httpx errors in
:meth:`PlatformClient._send`, HTTP statuses by :func:`.httperrors.error_for`, its only
caller.

What it does differently from the Molecule SDK (``RemoteAgentClient``), on purpose:

* ``register`` sends the workspace bearer whenever a token is known (the SDK never does,
  so every re-registration of a tokened workspace gets 401);
* the registered URL is always a real ``http(s)`` URL (never ``remote://no-inbound``);
* ``delivery_mode: "push"`` is sent so a "next" platform does not put an external
  workspace in poll mode (an unknown field is ignored by the "current" platform);
* a state 404 is reported as deleted only when its body says so: a bare 404 is the
  platform's tenant guard (missing ``X-Molecule-Org-Id``) and raises :class:`NotFound`;
* the "next" generation's ``platform_inbound_secret`` is captured from register and
  heartbeat answers and cached next to the token.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

from edge_agent.molecule.calls import (
    CallResult,
    PeerUrlCache,
    decode_reply,
    is_queued,
    reply_result,
    request_body,
)
from edge_agent.molecule.errors import (
    CallTimedOut,
    PeerUnreachable,
    PlatformUnavailable,
    TokenRejected,
    TokenStoreError,
    UnexpectedResponse,
)
from edge_agent.molecule.httperrors import call_error_for, error_for, error_payload
from edge_agent.molecule.models import (
    DiscoveredPeer,
    HeartbeatResult,
    Peer,
    PluginDownload,
    RegisterResult,
    Secrets,
    WorkspaceState,
    peer_from_row,
    str_or,
)
from edge_agent.molecule.tokens import TokenStore, check_credential

logger = logging.getLogger(__name__)

#: httpx's default is 5 s for every phase. The SDK uses 10 s per request; we keep 10 s
#: to connect/write/wait for a pooled connection and allow 15 s to read, since the
#: platform answers small JSON documents (a slower answer is an outage to retry).
PLATFORM_TIMEOUT: Final = httpx.Timeout(connect=10.0, read=15.0, write=10.0, pool=10.0)

#: httpx's default pool is 100 connections / 20 keep-alive / 5 s expiry. The session
#: makes two or three calls every 30 s plus the odd peers lookup, so a tiny pool is
#: plenty. A cycle's calls share one connection; it expires before the next cycle, so we
#: never send on a connection the platform may have dropped while idle.
PLATFORM_LIMITS: Final = httpx.Limits(
    max_connections=8, max_keepalive_connections=2, keepalive_expiry=15.0
)

#: Largest platform answer we read. The biggest real one is a peers list with agent
#: cards; beyond this the answer is refused as :class:`UnexpectedResponse`.
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024

#: Largest answer of a peer we read: what the "next" platform relays at most (64 MiB;
#: "current" cuts at 10 MiB). Bigger answers raise :class:`UnexpectedResponse`.
MAX_CALL_RESPONSE_BYTES: Final = 64 * 1024 * 1024

#: Largest plugin download we read: the platform's 100 MiB cap on the plugin's files,
#: plus room for the tar headers (gzip rarely makes it larger).
MAX_PLUGIN_DOWNLOAD: Final = 110 * 1024 * 1024
#: The platform gives a plugin fetch five minutes; reading its answer may take as long.
PLUGIN_DOWNLOAD_TIMEOUT: Final = httpx.Timeout(connect=10.0, read=300.0, write=10.0, pool=10.0)

#: Default seconds a peer call may take. The proxy itself allows an agent caller 30
#: minutes and queues a call whose peer stays silent for 5 (the idle timeout).
CALL_TIMEOUT: Final = 300.0

DELIVERY_PUSH: Final = "push"

_USER_AGENT: Final = "molecule-edge"


class PlatformClient:
    """The remote-workspace API of one workspace.

    Args:
        platform_url: the platform's base URL (``https://molecule.example.com``).
        workspace_id: the workspace UUID.
        token_store: where the workspace token (and inbound secret) are cached; a token
            the platform issues is saved there.
        token: a token given explicitly (command line, environment); it wins over the
            cache and is saved to it.
        org_id: sent as ``X-Molecule-Org-Id`` (multi-tenant SaaS), when set.
        origin: ``Origin`` header. ``""`` (the SDK's default) sends the platform URL's
            ``scheme://host[:port]``, which the SaaS edge needs and the platform's CORS
            check accepts as same-origin; ``None`` sends none.
        verify: TLS verification, on by default; an ``ssl.SSLContext`` for a private CA.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        platform_url: str,
        workspace_id: str,
        *,
        token_store: TokenStore | None = None,
        token: str | None = None,
        org_id: str | None = None,
        origin: str | None = "",
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = PLATFORM_TIMEOUT,
        limits: httpx.Limits = PLATFORM_LIMITS,
    ) -> None:
        base_url = _check_base_url(platform_url)
        self.workspace_id = workspace_id
        self._store = token_store
        self._token = _initial_token(token_store, token)
        self._inbound_secret = token_store.load_inbound_secret() if token_store else None
        self._next_seen = False
        self.peer_urls = PeerUrlCache()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_base_headers(base_url, org_id, origin),
            timeout=timeout,
            limits=limits,
            verify=verify,
            transport=transport,
            # A redirect is never part of the contract; following one could carry
            # the bearer somewhere else. (httpx's default, written down.)
            follow_redirects=False,
            # Honour HTTPS_PROXY / SSL_CERT_FILE like other tools on the laptop.
            trust_env=True,
        )

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def inbound_secret(self) -> str | None:
        """The latest platform inbound secret (from the cache or an answer), if any."""
        return self._inbound_secret

    @property
    def next_generation_seen(self) -> bool:
        """True once an answer carried ``delivery_mode`` or ``platform_inbound_secret``."""
        return self._next_seen

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def register(
        self,
        url: str,
        agent_card: Mapping[str, Any],
        *,
        delivery_mode: str | None = DELIVERY_PUSH,
    ) -> RegisterResult:
        """``POST /registry/register``: (re-)register ``url`` and ``agent_card``.

        Sends the bearer when a token is known. A token in the answer (first
        registration) is kept and cached. ``delivery_mode=None`` omits the field.

        Raises:
            TokenRejected: the workspace has a token and we sent none or a wrong one.
            BadRequest: the payload, or the URL (SSRF rules), was refused.
        """
        payload: dict[str, Any] = {"id": self.workspace_id, "url": url, "agent_card": agent_card}
        if delivery_mode is not None:
            payload["delivery_mode"] = delivery_mode
        try:
            data = _object(await self._send("POST", "/registry/register", "register", payload))
        except TokenRejected as exc:
            raise TokenRejected(self._explain_register_401(exc)) from exc
        issued = data.get("auth_token")
        if isinstance(issued, str) and issued:
            self._adopt_issued_token(issued)
        mode = data.get("delivery_mode")
        mode = mode if isinstance(mode, str) else None
        self._next_seen |= mode is not None
        secret = self._capture_inbound_secret(data)
        return RegisterResult(bool(issued), mode, secret)

    async def heartbeat(
        self,
        *,
        active_tasks: int,
        uptime_seconds: int,
        error_rate: float = 0.0,
        current_task: str = "",
        sample_error: str = "",
    ) -> HeartbeatResult:
        """``POST /registry/heartbeat``. The integer fields are sent as JSON integers."""
        payload = {
            "workspace_id": self.workspace_id,
            "active_tasks": _non_negative_int(active_tasks, "active_tasks"),
            "uptime_seconds": _non_negative_int(uptime_seconds, "uptime_seconds"),
            "error_rate": float(error_rate),
            "current_task": current_task,
            "sample_error": sample_error,
        }
        data = _object(await self._send("POST", "/registry/heartbeat", "heartbeat", payload))
        return HeartbeatResult(self._capture_inbound_secret(data))

    async def update_card(self, agent_card: Mapping[str, Any]) -> None:
        """``POST /registry/update-card`` (the card only; the URL changes by re-register)."""
        payload = {"workspace_id": self.workspace_id, "agent_card": agent_card}
        await self._send("POST", "/registry/update-card", "update-card", payload)

    async def get_state(self) -> WorkspaceState:
        """``GET /workspaces/:id/state``.

        Returns ``deleted=True`` for the 404 "deleted" bodies and for status ``removed``.

        Raises:
            TokenRejected: 401, which is also what a deleted workspace's revoked token gets.
            NotFound: a 404 without the deleted marker (tenant guard / edge rewrite).
        """
        path = f"/workspaces/{self._ws}/state"
        data = _object(await self._send("GET", path, "state", deleted_404=True))
        status = str_or(data.get("status"), "unknown")
        deleted = data.get("deleted") is True or status == "removed"
        return WorkspaceState(self.workspace_id, status, data.get("paused") is True, deleted)

    async def get_workspace_status(self) -> str:
        """``GET /workspaces/:id``: the workspace's ``status`` (``removed`` once deleted).

        A deleted workspace's tokens are revoked, so ``/state`` answers 401 exactly as
        for a revoked token; this (unauthenticated) row tells the two apart.

        Raises:
            NotFound: no such workspace (purged). PlatformRejected (410 in the "next"
            generation): deleted.
        """
        data = _object(await self._send("GET", f"/workspaces/{self._ws}", "workspace"))
        return str_or(data.get("status"), "unknown")

    async def pull_secrets(self) -> Secrets:
        """``GET /workspaces/:id/secrets/values``: the flat ``{KEY: value}`` map."""
        data = _object(await self._send("GET", f"/workspaces/{self._ws}/secrets/values", "secrets"))
        values = {k: v for k, v in data.items() if isinstance(v, str)}
        skipped = sorted(set(data) - set(values))
        if skipped:
            logger.warning("secrets_skipped keys=%s (not strings)", skipped)
        return Secrets(values)

    async def get_peers(self, query: str | None = None) -> list[Peer]:
        """``GET /registry/:id/peers[?q=]``: siblings, children and parent."""
        params = {"q": query} if query else None
        rows = await self._send(
            "GET", f"/registry/{self._ws}/peers", "peers", params=params, caller=True
        )
        if not isinstance(rows, list):
            raise UnexpectedResponse("peers: the answer is not a JSON array")
        peers = [peer_from_row(row) for row in rows if isinstance(row, dict) and row.get("id")]
        for peer in peers:
            self.peer_urls.put(peer.id, peer.url)
        return peers

    async def discover(self, target_id: str, *, fresh: bool = False) -> DiscoveredPeer:
        """``GET /registry/discover/:id``: the URL of a workspace we may talk to.

        A URL the peers list or an earlier discovery found within the last five minutes
        is answered from :attr:`peer_urls` (with an empty name) unless ``fresh``.

        Raises:
            NotFound: no such workspace. PlatformRejected (403): hierarchy rules forbid it.
        """
        cached = None if fresh else self.peer_urls.get(target_id)
        if cached is not None:
            return DiscoveredPeer(target_id, cached, "")
        path = f"/registry/discover/{quote(target_id, safe='')}"
        data = _object(await self._send("GET", path, "discover", caller=True))
        found = DiscoveredPeer(
            str_or(data.get("id"), target_id),
            str_or(data.get("url"), ""),
            str_or(data.get("name"), ""),
        )
        self.peer_urls.put(target_id, found.url)
        return found

    async def call_peer(
        self,
        target_id: str,
        message: str | Mapping[str, Any],
        *,
        stream: bool = False,
        reply_timeout: float = CALL_TIMEOUT,
    ) -> CallResult:
        """``POST /workspaces/:target/a2a`` as this workspace: a ``message/send`` (or,
        with ``stream``, a ``message/stream``) and the peer's answer.

        ``message``: a text, or an A2A message object. The call carries this
        workspace's token and ``X-Workspace-ID``; ``reply_timeout`` bounds the wait for the
        answer (the platform goes on with the call if we stop waiting).

        Raises:
            CallQueued, CallDenied, PeerNotFound, PeerUnreachable, CallTimedOut,
            PeerError: see :mod:`edge_agent.molecule.errors`. TokenRejected: our token.
        """
        if reply_timeout <= 0:
            raise ValueError("the call timeout must be > 0 seconds")
        what = f"call {target_id}"
        path = f"/workspaces/{quote(target_id, safe='')}/a2a"
        limits = httpx.Timeout(connect=10.0, read=reply_timeout, write=10.0, pool=10.0)
        try:
            response, body = await self._exchange(
                "POST", path, what, request_body(message, stream=stream),
                caller=True, http_timeout=limits, max_bytes=MAX_CALL_RESPONSE_BYTES,
            )  # fmt: skip
        except PlatformUnavailable as exc:
            if isinstance(exc.__cause__, httpx.TimeoutException):
                raise CallTimedOut(
                    f"{what}: no answer within {reply_timeout:g} s", status=0
                ) from exc
            raise
        return self._call_answer(target_id, response.status_code, body)

    async def download_plugin(self, name: str, source: str | None = None) -> PluginDownload:
        """``GET /workspaces/:id/plugins/:name/download[?source=]``: the gzip tar.

        Raises:
            NotFound: no such plugin (or source). BadRequest: a bad name or source.
            PlatformRejected: 413 too large, 422 integrity or unpinned source.
            PlatformUnavailable: 502/504 the platform could not fetch it, or a network
            error. UnexpectedResponse: the answer is not a gzip body.
        """
        what = f"plugin {name}"
        path = f"/workspaces/{self._ws}/plugins/{quote(name, safe='')}/download"
        response, body = await self._exchange(
            "GET", path, what, params={"source": source} if source else None,
            http_timeout=PLUGIN_DOWNLOAD_TIMEOUT, max_bytes=MAX_PLUGIN_DOWNLOAD,
        )  # fmt: skip
        if not 200 <= response.status_code < 300:
            raise error_for(what, response, error_payload(body))
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("application/gzip") or body[:2] != b"\x1f\x8b":
            raise UnexpectedResponse(f"{what}: the answer is not a gzip tar ({content_type})")
        label = response.headers.get("x-plugin-source") or source or f"local://{name}"
        return PluginDownload(body, label)

    async def report_plugin(self, source: str) -> None:
        """``POST /workspaces/:id/plugins {"source"}``: tell the platform what was
        installed. An external workspace gets 503 (no container): callers treat this
        as best effort."""
        path = f"/workspaces/{self._ws}/plugins"
        await self._send("POST", path, "plugin report", {"source": source})

    async def get_activity(
        self, *, since_id: str | None = None, activity_type: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        """``GET /workspaces/:id/activity``: the rows after ``since_id`` oldest first
        ("next"), or the newest ``limit`` rows newest first without it.

        Raises:
            PlatformRejected: ``status`` 410 when the cursor row is gone (start over
            without ``since_id``).
        """
        params = {"limit": str(limit)}
        if since_id:
            params["since_id"] = since_id
        if activity_type:
            params["type"] = activity_type
        rows = await self._send(
            "GET", f"/workspaces/{self._ws}/activity", "activity", params=params
        )
        if not isinstance(rows, list):
            raise UnexpectedResponse("activity: the answer is not a JSON array")
        return [row for row in rows if isinstance(row, dict)]

    async def ack_activity(self, seq: int) -> int:
        """``POST /workspaces/:id/activity/ack``: rows up to ``seq`` are handled ("next").
        Returns the platform's stored high-water mark (it never goes down)."""
        path = f"/workspaces/{self._ws}/activity/ack"
        data = _object(await self._send("POST", path, "ack", {"acked_seq": seq}))
        stored = data.get("last_acked_seq")
        return stored if isinstance(stored, int) and not isinstance(stored, bool) else seq

    async def notify(self, message: str) -> None:
        """``POST /workspaces/:id/notify``: a message to the canvas user (row 13)."""
        await self._send("POST", f"/workspaces/{self._ws}/notify", "notify", {"message": message})

    def _call_answer(self, target_id: str, status: int, body: bytes) -> CallResult:
        if status == 202 or status >= 300:
            error = call_error_for(target_id, status, error_payload(body))
            if isinstance(error, PeerUnreachable):
                self.peer_urls.invalidate(target_id)
            raise error
        documents = decode_reply(body)
        if len(documents) == 1 and is_queued(documents[0]):
            raise call_error_for(target_id, status, documents[0])
        return reply_result(f"call {target_id}", status, documents)

    @property
    def _ws(self) -> str:
        return quote(self.workspace_id, safe="")

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        payload: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        caller: bool = False,
        deleted_404: bool = False,
    ) -> Any:
        """One API exchange; HTTP outcomes become exceptions (:func:`error_for`).

        Returns the decoded JSON of a 2xx answer. ``caller`` adds ``X-Workspace-ID``.
        ``deleted_404`` also returns the body of a 404 that says ``"deleted": true``.
        """
        response, body = await self._exchange(
            method, path, what, payload, params=params, caller=caller
        )
        if 200 <= response.status_code < 300:
            return _decode(body, what)
        payload = error_payload(body)
        if deleted_404 and response.status_code == 404 and payload.get("deleted") is True:
            payload.setdefault("status", "removed")
            return payload
        raise error_for(what, response, payload)

    async def _exchange(
        self,
        method: str,
        path: str,
        what: str,
        payload: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        caller: bool = False,
        http_timeout: httpx.Timeout | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> tuple[httpx.Response, bytes]:
        """Send one request with our credentials; the answer and its body (at most
        ``max_bytes``). httpx's errors become :class:`PlatformUnavailable` here."""
        headers = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if caller:
            headers["X-Workspace-ID"] = self.workspace_id
        request = self._http.build_request(
            method,
            path,
            json=payload,
            params=params,
            headers=headers,
            timeout=http_timeout if http_timeout is not None else self._http.timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
            try:
                body = await _read_capped(response, what, max_bytes)
            finally:
                await response.aclose()
        except httpx.RequestError as exc:
            raise PlatformUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        return response, body

    def _adopt_issued_token(self, token: str) -> None:
        self._token = check_credential(token)
        logger.info("token_issued workspace_id=%s", self.workspace_id)
        if self._store is None:
            return
        try:
            self._store.save_token(self._token)
        except TokenStoreError:
            # The token is only shown once; keep running on the in-memory copy, loudly.
            logger.exception("token_not_saved: the next start will need the token supplied")

    def _capture_inbound_secret(self, data: Mapping[str, Any]) -> str | None:
        secret = data.get("platform_inbound_secret")
        if not isinstance(secret, str) or not secret:
            return None
        self._next_seen = True
        secret = check_credential(secret, "inbound secret")
        if secret != self._inbound_secret:
            self._inbound_secret = secret
            self._save_inbound_secret(secret)
        return secret

    def _save_inbound_secret(self, secret: str) -> None:
        if self._store is None:
            return
        try:
            self._store.save_inbound_secret(secret)
        except TokenStoreError:
            logger.exception("inbound_secret_not_saved")

    def _explain_register_401(self, exc: TokenRejected) -> str:
        if self._token is None:
            where = self._store.token_path if self._store is not None else "the token cache"
            return (
                f"{exc}: this workspace already has a token (issued when it was created, or "
                f"by its first registration, e.g. through the Molecule SDK) and none was "
                f"found at {where}; supply it with --token, point --token-dir at the folder "
                "that holds its .auth_token, or revoke the workspace's tokens to re-bootstrap"
            )
        return f"{exc}: the workspace token was rejected (revoked, or not this workspace's)"


async def _read_capped(response: httpx.Response, what: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise UnexpectedResponse(f"{what}: answer larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise UnexpectedResponse(f"{what}: the answer is not JSON") from exc


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UnexpectedResponse("the answer is not a JSON object")
    return data


def _non_negative_int(value: int, name: str) -> int:
    # The platform decodes these into Go ints: a float or a bool would be a 400.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _initial_token(store: TokenStore | None, explicit: str | None) -> str | None:
    if store is not None:
        return store.adopt_token(explicit)
    return check_credential(explicit) if explicit and explicit.strip() else None


def _check_base_url(platform_url: str) -> str:
    url = platform_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the platform URL must be http(s)://host[:port]: {platform_url!r}")
    return url


def _base_headers(base_url: str, org_id: str | None, origin: str | None) -> dict[str, str]:
    headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
    if org_id:
        headers["X-Molecule-Org-Id"] = org_id
    if origin is not None:
        headers["Origin"] = origin or _origin_of(base_url)
    return headers


def _origin_of(base_url: str) -> str:
    """``scheme://host[:port]``: an Origin never carries the path of the platform URL."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"
