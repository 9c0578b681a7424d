"""Errors raised by the Molecule platform session.

The tree::

    MoleculeError                  base of everything ``edge_agent.molecule`` raises,
    │                              under edge_agent.errors.AgentError
    ├── PlatformUnavailable        network error, timeout, 5xx: transient, retry later
    │   ├── RateLimited            429; ``retry_after`` says when to try again
    │   └── UnexpectedResponse     an answer that is not the contract's JSON (a proxy,
    │                              a captive portal or a WAF in the path): retried
    ├── PlatformRejected           a 4xx that retrying will not fix; ``status`` is set
    │   ├── BadRequest             400: malformed payload, or a URL the platform refuses
    │   ├── TokenRejected          401: no token, a wrong one, or a revoked one (fatal)
    │   ├── NotFound               404 without the "deleted" shape (unknown peer, or the
    │   │                          platform's tenant guard when the org header is missing)
    │   └── WorkspaceDeleted       the workspace is gone (404 deleted shape, status removed)
    ├── PeerCallError              a call to a peer (A2A through the platform's proxy) got
    │   │                          no answer; ``status`` is the platform's HTTP status
    │   ├── CallQueued             202 (or 200 "queued"): delivered later, if ever; the
    │   │                          answer will not come back to this caller
    │   ├── CallDenied             403: the hierarchy rules forbid it (or a bad caller id)
    │   ├── PeerNotFound           404: no such workspace
    │   ├── PeerUnreachable        502/503: no URL, unreachable, paused, busy, waking
    │   ├── CallTimedOut           504, or no answer within the caller's own timeout
    │   └── PeerError              the peer answered with an error (a JSON-RPC error, or
    │                              its own non-2xx status relayed by the platform)
    ├── PluginError                a plugin was not installed (any older version stays)
    │   ├── UnsafeArchive          the tarball breaks a rule (path, type, size, count)
    │   └── IntegrityError         its files do not match plugin.yaml's sha256
    ├── TokenStoreError            the local token cache cannot be read or written safely
    ├── ChildStartError            the agent command (``-- CMD ARGS``) cannot be started
    └── ChildCrashLoop             the command failed more often than its restart limit
                                   allows; ``exit_status`` is its last exit status

HTTP answers are turned into these exceptions in exactly one module,
:mod:`edge_agent.molecule.httperrors`: :func:`~.httperrors.error_for` for the API
calls and :func:`~.httperrors.call_error_for` for calls to peers, whose statuses mean
something else (a 404 names the peer, a 202 is an answer). Only
:class:`edge_agent.molecule.client.PlatformClient` calls them; it also maps httpx's own
exceptions, so nothing from httpx escapes the client.

:class:`PlatformUnavailable` (and only it) is what the session retries with backoff.
Every :class:`PlatformRejected` ends the session's run.

Messages carry the platform's own ``error`` text (bounded in length) and never a token,
an inbound secret or a secret value.
"""

from __future__ import annotations

from edge_agent.errors import AgentError


class MoleculeError(AgentError):
    """Base class of every error raised by ``edge_agent.molecule`` (an AgentError)."""


class PlatformUnavailable(MoleculeError):
    """The platform could not be reached or failed on its side; try again later.

    ``retry_after`` is the delay in seconds the platform asked for (``Retry-After``),
    or ``None`` when it gave none.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(PlatformUnavailable):
    """429: the platform's per-IP rate limit (600/min, shared behind one NAT)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class UnexpectedResponse(PlatformUnavailable):
    """A 2xx/3xx answer that is not what the contract describes (HTML, a redirect...)."""


class PlatformRejected(MoleculeError):
    """The platform refused the request; the same request will be refused again."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class BadRequest(PlatformRejected):
    """400. On registration this usually means the public URL was refused (SSRF rules)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


class TokenRejected(PlatformRejected):
    """401: the workspace token is missing, wrong or revoked. Fatal for a session."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401)


class NotFound(PlatformRejected):
    """404 that does not say the workspace was deleted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


class WorkspaceDeleted(PlatformRejected):
    """The workspace was deleted (or soft-deleted: status ``removed``). Fatal."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


class PeerCallError(MoleculeError):
    """A call to a peer workspace got no usable answer. ``status``: the HTTP status (0
    when none came back)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class CallQueued(PeerCallError):
    """The platform queued the call (busy or slow peer, or a poll-mode peer).

    ``queue_id`` is set when the platform named the queue entry.
    """

    def __init__(self, message: str, *, status: int, queue_id: str | None = None) -> None:
        super().__init__(message, status=status)
        self.queue_id = queue_id


class CallDenied(PeerCallError):
    """403: the platform's hierarchy rules do not let this workspace call that one."""


class PeerNotFound(PeerCallError):
    """404: the platform knows no such workspace."""


class PeerUnreachable(PeerCallError):
    """502/503: the peer has no URL, cannot be reached, is busy, paused or waking."""


class CallTimedOut(PeerCallError):
    """504, or no answer within the caller's timeout (the platform may still deliver)."""


class PeerError(PeerCallError):
    """The peer answered, with an error."""


class PluginError(MoleculeError):
    """A plugin could not be installed; the version installed before (if any) stays."""


class UnsafeArchive(PluginError):
    """The plugin tarball holds something that must not be unpacked (an absolute or
    ``..`` path, a special file), too many entries, too many bytes, or is not a gzip tar."""


class IntegrityError(PluginError):
    """The unpacked files do not match the ``sha256`` declared in ``plugin.yaml``, or
    that declaration cannot be read with certainty."""


class TokenStoreError(MoleculeError):
    """The token cache on disk is unusable (not a directory, unreadable, bad content)."""


class ChildStartError(MoleculeError):
    """The supervised command could not be started (not found, not executable)."""


class ChildCrashLoop(MoleculeError):
    """The command needed more restarts within the window than the policy allows.

    ``code`` is its last exit code as asyncio reports it (``-N`` for signal N);
    ``exit_status`` is the same as a shell reports it (``128 + N``).
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def exit_status(self) -> int:
        return 128 - self.code if self.code < 0 else self.code
