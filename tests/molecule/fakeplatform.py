"""An in-memory stand-in for the Molecule platform's registry endpoints.

The platform is outside our control; this fake follows the contract document's rules
that the session depends on (bootstrap token on first registration, bearer required
once a token exists, registration flips the status online, heartbeats refresh but do
not recreate liveness, state needs the token, delete revokes every token, "next"
answers carry ``delivery_mode`` and ``platform_inbound_secret``). It is served through
``httpx.MockTransport``; the dev platform integration test covers the real thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

TOKEN = "T" * 43


class FakePlatform:
    def __init__(self, workspace_id: str, *, generation: str = "current") -> None:
        self.ws = workspace_id
        self.generation = generation
        self.tokens: set[str] = set()
        self.status = "awaiting_agent"
        self.paused = False
        self.deleted_shape: int | None = None  # 404 body style instead of 401 after delete
        self.url = ""
        self.inbound_secret = "S" * 43
        self.refuse_delivery_mode = False  # a strict "current" stand-in
        self.refuse_url = False  # the SSRF rules refuse the URL
        self.outage = 0  # number of next requests that fail at the network level
        self.fail_with: list[httpx.Response] = []  # next responses to return instead
        self.calls: list[str] = []
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.bearers: list[str | None] = []
        self.transport = httpx.MockTransport(self.handle)

    # Admin actions, as the platform's pause/resume/delete/revoke endpoints have them.
    def pause(self) -> None:
        self.status, self.paused, self.url = "paused", True, ""

    def resume(self) -> None:
        self.status, self.paused = "provisioning", False

    def delete(self) -> None:
        self.status, self.tokens = "removed", set()

    def forget(self) -> None:
        self.status = "offline"  # the liveness key expired

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = {
            "/registry/register": "register",
            "/registry/heartbeat": "heartbeat",
            f"/workspaces/{self.ws}/state": "state",
            f"/workspaces/{self.ws}/secrets/values": "secrets",
        }.get(path, "unknown")
        self.calls.append(kind)
        auth = request.headers.get("authorization")
        self.bearers.append(auth)
        if self.outage > 0:
            self.outage -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.fail_with:
            return self.fail_with.pop(0)
        bearer = auth.removeprefix("Bearer ") if auth else None
        endpoint: Callable[[httpx.Request, str | None], httpx.Response]
        endpoint = getattr(self, f"_{kind}")
        return endpoint(request, bearer)

    def _authorized(self, bearer: str | None) -> bool:
        return not self.tokens or bearer in self.tokens

    def _register(self, request: httpx.Request, bearer: str | None) -> httpx.Response:
        payload = json.loads(request.content)
        self.registrations.append(payload)
        if not self._authorized(bearer):
            return _error(401, "invalid workspace auth token")
        if self.refuse_url or ("delivery_mode" in payload and self.refuse_delivery_mode):
            return _error(400, "invalid request body")
        answer: dict[str, Any] = {"status": "registered"}
        if self.status != "removed":
            self.status, self.paused, self.url = "online", False, payload["url"]
        if not self.tokens:
            self.tokens.add(TOKEN)
            answer["auth_token"] = TOKEN
        if self.generation == "next":
            answer["delivery_mode"] = payload.get("delivery_mode", "poll")
            answer["platform_inbound_secret"] = self.inbound_secret
        return httpx.Response(200, json=answer)

    def _heartbeat(self, request: httpx.Request, bearer: str | None) -> httpx.Response:
        if not self._authorized(bearer):
            return _error(401, "invalid workspace auth token")
        payload = json.loads(request.content)
        self.heartbeats.append(payload)
        if self.status in ("provisioning", "degraded"):
            self.status = "online"
        answer: dict[str, Any] = {"status": "ok"}
        if self.generation == "next":
            answer["platform_inbound_secret"] = self.inbound_secret
        return httpx.Response(200, json=answer)

    def _state(self, request: httpx.Request, bearer: str | None) -> httpx.Response:
        if self.status == "removed" and self.deleted_shape == 404:
            return httpx.Response(404, json={"workspace_id": self.ws, "deleted": True})
        if bearer is None or bearer not in self.tokens:
            return _error(401, "invalid workspace auth token")
        state = {"workspace_id": self.ws, "status": self.status, "paused": self.paused}
        return httpx.Response(200, json={**state, "deleted": False})

    def _secrets(self, request: httpx.Request, bearer: str | None) -> httpx.Response:
        if bearer is None or bearer not in self.tokens:
            return _error(401, "invalid workspace auth token")
        return httpx.Response(200, json={"API_KEY": "k-value"})

    def _unknown(self, request: httpx.Request, bearer: str | None) -> httpx.Response:
        return _error(404, "not found")


def _error(status: int, text: str) -> httpx.Response:
    return httpx.Response(status, json={"error": text})
