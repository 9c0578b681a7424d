"""Caller auth at the relay: who may call a tunnel.

A tunnel whose agent sent caller credentials in HELLO answers only public requests that
present one of them (``Authorization: Bearer`` or ``Basic``). The relay holds only their
SHA-256 digests (:func:`wire.rules.credential_sha256`), so it checks callers without
ever learning the credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac

import wire
from relay.errors import CallerUnauthorized
from wire.rules import credential_sha256


def check_caller(
    headers: list[tuple[bytes, bytes]], credentials: tuple[wire.CallerCredential, ...], realm: str
) -> bool:
    """Enforce a tunnel's caller auth. Returns whether Authorization must be stripped.

    The digest of the presented credential (bearer token, or ``user:password`` for
    basic) is compared with every stored digest of that scheme in constant time.
    Basic credentials are the relay's business and are stripped; a bearer is forwarded,
    because the agent may check the same secret again.

    Raises:
        CallerUnauthorized: credentials required and none matched.
    """
    if not credentials:
        return False
    scheme, digest = _presented([v for n, v in headers if n == b"authorization"])
    matched = False
    for cred in credentials:
        if cred.scheme == scheme and hmac.compare_digest(cred.sha256, digest):
            matched = True
    if not matched:
        schemes = tuple(sorted({c.scheme for c in credentials}))
        raise CallerUnauthorized(schemes, realm)
    return scheme == "basic"


def _presented(values: list[bytes]) -> tuple[str, str]:
    """(scheme, sha256 hex) of the one Authorization header; ("", "") if unusable."""
    if len(values) != 1:
        return "", ""
    scheme, _, credential = values[0].decode("latin-1").strip().partition(" ")
    scheme, credential = scheme.lower(), credential.strip()
    if scheme == "basic":
        try:
            credential = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
    elif scheme != "bearer":
        return "", ""
    return scheme, credential_sha256(credential)
