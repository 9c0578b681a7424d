"""wire.rules: what the relay and the agent must apply alike."""

from __future__ import annotations

import hashlib

import pytest

from wire import SUBPROTOCOL, SUBPROTOCOL_V1
from wire.rules import CONNECT_PATH, HOP_BY_HOP, RESERVED_PREFIX, credential_sha256, valid_name


def test_subprotocols() -> None:
    assert (SUBPROTOCOL, SUBPROTOCOL_V1) == ("molecule-edge.v2", "molecule-edge.v1")


def test_connect_path_is_under_the_reserved_prefix() -> None:
    assert RESERVED_PREFIX == "/_edge/"
    assert CONNECT_PATH == "/_edge/connect" and CONNECT_PATH.startswith(RESERVED_PREFIX)


@pytest.mark.parametrize("name", ["a", "demo", "my-agent-2", "0", "a" * 63, "x1-y2"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-a", "a-", "Demo", "a.b", "a/b", "a_b", "a" * 64, "é", "a b", "a\n", "%2e", ".."],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_credential_sha256() -> None:
    assert credential_sha256("secret") == hashlib.sha256(b"secret").hexdigest()
    assert (
        credential_sha256("user:pässword") == hashlib.sha256("user:pässword".encode()).hexdigest()
    )
    digest = credential_sha256("")
    assert len(digest) == 64 and digest == digest.lower()


def test_hop_by_hop_headers() -> None:
    assert HOP_BY_HOP == {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
    assert all(name == name.lower() for name in HOP_BY_HOP)
