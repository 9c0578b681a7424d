"""Unit tests without a server: SSRF rules, Go-style JSON, body binding."""

from __future__ import annotations

import ipaddress

import pytest

from devplatform import gojson, ssrf
from devplatform.binding import Field, Kind, bind
from devplatform.errors import BindError, UnsafeURLError
from devplatform.tokens import bearer_token, mint_plaintext
from tests.devplatform.conftest import fake_resolver


@pytest.mark.parametrize(
    ("address", "strict", "saas"),
    [
        ("127.0.0.1", True, True),
        ("0.0.0.0", True, True),
        ("169.254.169.254", True, True),
        ("100.64.1.1", True, True),
        ("192.0.2.5", True, True),
        ("224.0.0.251", True, True),
        ("10.0.0.1", True, False),
        ("172.31.255.255", True, False),
        ("192.168.0.1", True, False),
        ("::1", True, True),
        ("::", True, True),
        ("fe80::1", True, True),
        ("ff02::1", True, True),
        ("fc00::1", True, True),
        ("fd00::1", True, False),
        ("8.8.8.8", False, False),
        ("2606:4700::1111", False, False),
        ("239.255.255.250", False, False),  # multicast is not on the dispatch list
    ],
)
def test_dispatch_rules(address: str, strict: bool, saas: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert ssrf.dispatch_blocks(ip, saas=False) is strict
    assert ssrf.dispatch_blocks(ip, saas=True) is saas


async def test_dispatch_url_rules() -> None:
    resolver = fake_resolver({"evil.example": ["169.254.169.254"], "ok.example": ["1.1.1.1"]})
    allowed = dict(saas=False, allow_localhost=True, resolver=resolver)
    await ssrf.validate_dispatch_url("http://localhost:1/", **allowed)  # type: ignore[arg-type]
    await ssrf.validate_dispatch_url("https://ok.example/a", **allowed)  # type: ignore[arg-type]
    for url in ("http://127.0.0.1:1/", "http://evil.example/", "gopher://ok.example/", "http:///x"):
        with pytest.raises(UnsafeURLError):
            await ssrf.validate_dispatch_url(url, **allowed)  # type: ignore[arg-type]
    with pytest.raises(UnsafeURLError):  # without the relaxation: resolved, loopback refused
        await ssrf.validate_dispatch_url(
            "http://localhost:1/", saas=False, allow_localhost=False, resolver=resolver
        )


async def test_guarded_resolver_refuses_rebinding_to_private_addresses() -> None:
    from devplatform.upstream import GuardedResolver

    guard = GuardedResolver(saas=False, allow_localhost=True)
    assert await guard.resolve("localhost", 80)
    strict = GuardedResolver(saas=False, allow_localhost=False)
    with pytest.raises(OSError):
        await strict.resolve("localhost", 80)
    await guard.close()
    await strict.close()


def test_gojson_marshal_matches_go() -> None:
    value = {"b": [1, 2.5, None, True], "a": "<tag> & \u2028 é"}
    assert gojson.marshal(value) == (
        '{"a":"\\u003ctag\\u003e \\u0026 \\u2028 é","b":[1,2.5,null,true]}'.encode()
    )
    # Numbers go through float64, like map[string]interface{} in Go.
    parsed = gojson.loads_generic(b'{"id": 12345678901234567890, "n": 1, "f": 1e-7}')
    assert gojson.marshal(parsed) == b'{"f":1e-7,"id":12345678901234567000,"n":1}'
    assert gojson.format_float(1e21) == "1e+21" and gojson.format_float(0.000001) == "0.000001"


FIELDS = (Field("id", Kind.STRING, required=True), Field("n", Kind.INT), Field("r", Kind.FLOAT))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"1",
        b'{"id": ""}',
        b'{"n": 1}',
        b'{"id": "x", "n": 1.0}',
        b'{"id": "x", "r": "1"}',
    ],
)
def test_binding_refuses(body: bytes) -> None:
    with pytest.raises(BindError):
        bind(body, FIELDS)


def test_binding_fills_zero_values_and_ignores_unknown_fields() -> None:
    assert bind(b'{"id": "x", "n": null, "extra": [1]}', FIELDS) == {"id": "x", "n": 0, "r": 0.0}
    assert bind(b'{"id": "x", "r": 1}', FIELDS)["r"] == 1.0


def test_tokens_and_bearer_parsing() -> None:
    token = mint_plaintext()
    assert len(token) == 43 and "=" not in token
    assert bearer_token(f"Bearer  {token} ") == token
    assert bearer_token(f"bearer {token}") == ""
    assert bearer_token(None) == ""


def test_devplatform_never_imports_the_relay_or_the_agent() -> None:
    import ast
    from pathlib import Path

    import devplatform

    package = Path(devplatform.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("relay", "edge_agent"), (source.name, name)
