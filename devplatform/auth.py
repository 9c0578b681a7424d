"""The platform's credential checks, each with the real error texts.

- ``AdminAuth`` (``POST/GET /workspaces``, ``DELETE /workspaces/:id``,
  ``/admin/secrets``): ``ADMIN_TOKEN`` is always set here (``--admin-token``), so
  there is no fail-open: a missing bearer is 401 ``admin auth required``, any
  other bearer 401 ``invalid admin auth token``. Workspace tokens never pass.
- ``WorkspaceAuth`` (every ``/workspaces/:id/*`` route except ``/a2a``): the admin
  token, or a live token of ``:id``; 401 ``missing workspace auth token`` /
  ``invalid workspace auth token``. No grace for token-less workspaces.
- the registry and discovery gate (``requireWorkspaceToken``): open while the
  workspace has no live token ("bootstrap"), a live token of its own once it has
  one. A failing lookup lets the request through, like the real one.
- the handler re-check of ``/state`` and ``/secrets/values``: the same gate, but a
  failing lookup is 500 ``auth check failed``. Because it validates against the
  workspace only, the admin token does NOT pass it once the workspace has a token.
- A2A callers: see :meth:`Auth.a2a_caller_current` and :meth:`Auth.a2a_caller_next`.

Every comparison of a presented secret is constant-time (``hmac.compare_digest``
on the admin token, on the sha256 of workspace tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from devplatform.errors import ServerError, StoreError, Unauthorized
from devplatform.tokens import TokenRepo, bearer_token, same_secret

MISSING_WORKSPACE_TOKEN = "missing workspace auth token"
INVALID_WORKSPACE_TOKEN = "invalid workspace auth token"


@dataclass(frozen=True, slots=True)
class A2ACaller:
    """Who calls the proxy: ``workspace_id`` (``""`` for canvas) and whether the
    caller is a human/admin credential that skips the hierarchy check."""

    workspace_id: str
    canvas: bool


class Auth:
    def __init__(self, admin_token: str, tokens: TokenRepo) -> None:
        self._admin_token = admin_token
        self._tokens = tokens

    def _bearer(self, request: web.Request) -> str:
        return bearer_token(request.headers.get("Authorization"))

    def is_admin(self, token: str) -> bool:
        return bool(token) and same_secret(token, self._admin_token)

    def require_admin(self, request: web.Request) -> None:
        token = self._bearer(request)
        if not token:
            raise Unauthorized("admin auth required")
        if not self.is_admin(token):
            raise Unauthorized("invalid admin auth token")

    def require_workspace(self, request: web.Request, workspace_id: str) -> None:
        token = self._bearer(request)
        if not token:
            raise Unauthorized(MISSING_WORKSPACE_TOKEN)
        if self.is_admin(token):
            return
        if not self._tokens.validate(workspace_id, token):
            raise Unauthorized(INVALID_WORKSPACE_TOKEN)

    def require_own_token_if_live(self, request: web.Request, workspace_id: str) -> None:
        """Registry/discovery gate; fail-open when the token lookup itself fails."""
        try:
            live = self._tokens.has_live(workspace_id)
        except StoreError:
            return
        if live:
            self._check_own(request, workspace_id, MISSING_WORKSPACE_TOKEN, INVALID_WORKSPACE_TOKEN)

    def recheck_own_token(self, request: web.Request, workspace_id: str) -> None:
        """Handler re-check of ``/state`` and ``/secrets/values``; fail-closed."""
        try:
            live = self._tokens.has_live(workspace_id)
        except StoreError as exc:
            raise ServerError("auth check failed") from exc
        if live:
            self._check_own(request, workspace_id, MISSING_WORKSPACE_TOKEN, INVALID_WORKSPACE_TOKEN)

    def _check_own(
        self, request: web.Request, workspace_id: str, missing: str, invalid: str
    ) -> None:
        token = self._bearer(request)
        if not token:
            raise Unauthorized(missing)
        if not self._tokens.validate(workspace_id, token):
            raise Unauthorized(invalid)

    def a2a_caller_current(self, request: web.Request, target_id: str) -> A2ACaller:
        """ "current": ``X-Workspace-ID`` absent → canvas, no check at all.

        A caller id other than the target must present its own live token, if it
        has one (token-less callers are grandfathered).
        """
        caller = request.headers.get("X-Workspace-ID", "")
        if caller and caller != target_id:
            try:
                live = self._tokens.has_live(caller)
            except StoreError:
                live = False
            if live:
                self._check_own(
                    request, caller, "missing caller auth token", "invalid caller auth token"
                )
        return A2ACaller(caller, canvas=False)

    def a2a_caller_next(self, request: web.Request) -> A2ACaller:
        """ "next": every caller presents a credential; the token names the caller.

        The admin token is a human (canvas) caller. A workspace token makes its
        owner the caller; an ``X-Workspace-ID`` that disagrees is refused.
        """
        claimed = request.headers.get("X-Workspace-ID", "")
        token = self._bearer(request)
        if not token:
            raise Unauthorized("missing caller auth token")
        if self.is_admin(token):
            return A2ACaller(claimed, canvas=True)
        owner = self._tokens.owner_of(token)
        if owner is None:
            raise Unauthorized("invalid caller auth token")
        if claimed and claimed.lower() != owner:
            raise Unauthorized("caller ID does not match workspace auth token")
        return A2ACaller(owner, canvas=False)
