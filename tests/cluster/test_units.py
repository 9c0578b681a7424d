"""The cluster's pure parts, without Redis: flags, the directory, hop headers, the
agent's relay ring."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from edge_agent.config import relay_list
from edge_agent.relays import RelayRing
from relay import cli, h1
from relay.cluster.hop import hop_head, hop_value, secret_matches
from relay.cluster.node import Directory
from relay.cluster.redisconn import check_node_url, check_redis_url


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cluster", "http://r:6379"], "is not a Redis URL"),
        (["--cluster", "redis://r:99999/0"], "bad port"),
        (["--cluster", "redis://r:6379/x"], "the database must be a number"),
        (["--cluster", "redis://r:6379/0"], "--cluster needs --node-url"),
        (["--node-url", "http://10.0.0.2:8080"], "--node-url needs --cluster"),
        (["--cluster", "redis://r/0", "--node-url", "ftp://n:1"], "is not a node URL"),
        (["--cluster", "redis://r/0", "--node-url", "http://n:1/x"], "scheme, host and port"),
        (["--cluster", "redis://r/0", "--node-url", "http://n:1", "--open"], "needs tokens"),
    ],
)
def test_bad_cluster_flags_are_one_line(args: list[str], said: str) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--port", "0", *args])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and said in lines[0], result.output


def test_urls_are_normalised() -> None:
    assert check_node_url("http://10.0.0.2") == "http://10.0.0.2:80"
    assert check_node_url("https://n.example/") == "https://n.example:443"
    assert check_redis_url("rediss://:pw@r:6380/2") == "rediss://:pw@r:6380/2"


def test_the_directory_keeps_other_nodes_names_only() -> None:
    directory = Directory("http://a:1")
    assert directory.apply("up x http://b:1") == ("x", "http://b:1")
    assert directory.apply("up y http://a:1") is None  # its own: never remote
    assert directory.owner("x") == "http://b:1" and directory.owner("y") is None
    directory.apply("down x http://c:1")  # not the holder's: ignored
    assert directory.owner("x") == "http://b:1"
    directory.apply("down x http://b:1")
    assert directory.owner("x") is None
    assert directory.apply("garbage") is None
    directory.replace({"p": "http://a:1", "q": "http://c:1"})
    assert directory.remote == {"q": "http://c:1"} and directory.nodes() == 1


def _head(*headers: tuple[bytes, bytes]) -> h1.Head:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    events = h1.RequestReader().feed(raw + b"\r\n")
    head = events[0]
    assert isinstance(head, h1.Head)
    return head


def test_hop_headers() -> None:
    assert hop_value(_head()) is None
    assert hop_value(_head((b"X-Edge-Hop", b"s"))) == b"s"
    assert hop_value(_head((b"X-Edge-Hop", b"s"), (b"x-edge-hop", b"s"))) == b""  # forged
    assert secret_matches(b"s2", ["s1", "s2"]) and not secret_matches(b"s3", ["s1", "s2"])
    assert not secret_matches(b"", ["s1"])
    assert hop_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "k").endswith(
        b"Host: h\r\nX-Edge-Hop: k\r\n\r\n"
    )


def test_relay_lists_from_every_source() -> None:
    assert relay_list(("http://a", "http://b")) == "http://a,http://b"
    assert relay_list(["http://a"]) == "http://a"
    ring = RelayRing("http://a:1, http://b:1,")
    assert ring.urls == ["http://a:1", "http://b:1"] and ring.several
    assert asyncio.run(ring.address()) is None  # an address, not a name: nothing to pin
    assert ring.advance() and ring.url == "http://b:1"
    assert ring.advance() and ring.url == "http://a:1"
    single = RelayRing("http://127.0.0.1:1")
    assert not single.advance() and not single.several


def test_no_redis_at_startup_is_one_line() -> None:
    args = ["serve", "--port", "0", "--cluster", "redis://:pw@127.0.0.1:1/0"]
    result = CliRunner().invoke(cli.main, [*args, "--node-url", "http://127.0.0.1:9"])
    assert result.exit_code != 0
    assert "cannot read the token store in Redis" in result.output
    assert "pw" not in result.output  # the password is never printed
