"""Opening Redis, and checking the two cluster flags.

redis-py's defaults are written down here on purpose: 5 s socket timeouts would stall a
node's refresh loop for 5 s per call while Redis is down, and its default retry policy
(three retries with backoff) would hide the outage from the loop that must log it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import redis
    import redis.asyncio

#: Seconds to connect to Redis and to wait for one answer.
REDIS_TIMEOUT: Final = 1.0

#: Connections one node keeps to Redis (the refresh loop, pub/sub, CLI-like calls).
REDIS_MAX_CONNECTIONS: Final = 8

#: Key prefix of everything the cluster stores.
PREFIX: Final = "edge:"


def check_redis_url(url: str) -> str:
    """``--cluster``: ``redis://HOST[:PORT][/DB]`` or ``rediss://``; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a Redis URL (e.g. redis://10.0.0.5:6379/0)")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"{url!r}: the database must be a number (e.g. /0)")
    return url


def check_node_url(url: str) -> str:
    """``--node-url``: how other nodes reach this one, ``http(s)://HOST:PORT`` without a
    path; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not a node URL (e.g. http://10.0.0.2:8080)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r}: give scheme, host and port only")
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{parts.hostname}:{port or default}"


def async_client(url: str) -> redis.asyncio.Redis:
    """A client for a running node (no retries: the caller notices an outage at once)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=None,
        retry_on_timeout=False,
        max_connections=REDIS_MAX_CONNECTIONS,
        decode_responses=True,
    )


def sync_client(url: str) -> redis.Redis:
    """A client for the ``edge-relay token ... --cluster`` commands."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT * 5,
        socket_connect_timeout=REDIS_TIMEOUT * 5,
        retry=None,
        decode_responses=True,
    )


def import_error() -> str | None:
    """Why redis-py cannot be imported, or None."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "--cluster needs redis-py: pip install 'molecule-edge[cluster]'"
    return None
