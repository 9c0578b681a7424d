"""One relay node's life in the cluster: the session directory and the Redis loops.

Each node publishes the names it holds: ``edge:session:<name>`` = its node URL, with a
TTL of :data:`SESSION_TTL` seconds refreshed every :data:`REFRESH_INTERVAL`, deleted when
the session ends, and every change announced on ``edge:sessions`` (``up`` / ``down``).
Every node keeps the other nodes' names in a local dict (:class:`Directory`), filled by a
full read at start and after every Redis outage, updated by the channel, and re-read
every refresh (a missed message costs at most one interval). ``owner(name)`` is a dict
read: it runs on the public hot path.

A node that learns that another node took a name it holds (the agent reconnected there)
retires its own session with GOAWAY REPLACED, as one relay does for a second session.

Pools (:mod:`relay.cluster.pooling`): a name whose sessions here joined a pool is
published as ``edge:pool:<name>|<node URL>`` = the number of members here instead, with
the same TTL and refresh, and ``pool`` / ``unpool`` messages on ``edge:sessions``; one
such key per node that holds members, so a pooled name has members on several nodes at
once and none of them replaces another.

Redis down: nothing a caller waits for touches Redis. The node keeps serving the
sessions it holds and forwarding to the nodes it knows; it logs ``cluster_redis_down``
(error) once, and then every :data:`DOWN_LOG_INTERVAL` seconds, while it lasts; when
Redis answers again it logs ``cluster_redis_back``, re-publishes every name it holds,
re-reads the directory and the token store, and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from relay.cluster import redisconn
from relay.cluster.errors import ClusterConfigError

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

#: Seconds a published name lives in Redis without a refresh (a node that died silently
#: is forgotten after this).
SESSION_TTL: Final = 15

#: Seconds between refreshes of this node's names (and re-reads of the directory).
REFRESH_INTERVAL: Final = 5.0

#: Seconds between two ``cluster_redis_down`` lines while Redis stays down.
DOWN_LOG_INTERVAL: Final = 10.0

#: Seconds between attempts to subscribe again after the channel broke.
RESUBSCRIBE_DELAY: Final = 0.5

#: Most names the directory caches from other nodes (a full read stops there).
MAX_REMOTE_NAMES: Final = 100_000

SESSION_KEY: Final = redisconn.PREFIX + "session:"
POOL_KEY: Final = redisconn.PREFIX + "pool:"
SESSIONS_CHANNEL: Final = redisconn.PREFIX + "sessions"
TOKENS_CHANNEL: Final = redisconn.PREFIX + "tokens"
SECRET_KEY: Final = redisconn.PREFIX + "cluster-secret"

#: Delete a name's key only while it still names this node (a newer node may hold it).
_DELETE_IF_MINE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

#: Refresh a name's key while it is free or names this node; 0 when another node took
#: it (a message this node missed, or a move during a Redis outage).
_KEEP_IF_MINE: Final = """
local held = redis.call('get', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


def pool_key(name: str, node: str) -> str:
    return f"{POOL_KEY}{name}|{node}"


class Directory:
    """name -> node URL for sessions held by OTHER nodes (this node's are local), and
    pooled name -> the other nodes that hold members of its pool."""

    def __init__(self, node_url: str) -> None:
        self.node_url = node_url
        self.remote: dict[str, str] = {}
        self.pools: dict[str, set[str]] = {}

    def owner(self, name: str) -> str | None:
        return self.remote.get(name)

    def owners(self, name: str) -> list[str]:
        """Every other node that serves ``name``: its pool's nodes, and the node that
        holds a session of it that does not pool (sorted: a stable order to take turns)."""
        found = set(self.pools.get(name, ()))
        single = self.remote.get(name)
        if single is not None:
            found.add(single)
        return sorted(found)

    def apply(self, message: str) -> tuple[str, str] | None:
        """Apply one ``up|down|pool|unpool NAME NODE`` message; returns (name, node) of
        an ``up`` from another node, else None."""
        parts = message.split(" ")
        if len(parts) != 3:
            return None
        kind, name, node = parts
        if node == self.node_url:
            return None
        if kind == "up" and (name in self.remote or len(self.remote) < MAX_REMOTE_NAMES):
            self.remote[name] = node
            return name, node
        if kind == "down" and self.remote.get(name) == node:
            del self.remote[name]
        elif kind == "pool" and (name in self.pools or len(self.pools) < MAX_REMOTE_NAMES):
            self.pools.setdefault(name, set()).add(node)
        elif kind == "unpool" and name in self.pools:
            self.pools[name].discard(node)
            if not self.pools[name]:
                del self.pools[name]
        return None

    def replace(self, mapping: dict[str, str], pools: dict[str, set[str]] | None = None) -> None:
        self.remote = {n: u for n, u in mapping.items() if u != self.node_url}
        kept = {n: {u for u in us if u != self.node_url} for n, us in (pools or {}).items()}
        self.pools = {n: us for n, us in kept.items() if us}

    def nodes(self) -> int:
        return len(set(self.remote.values()).union(*self.pools.values()))


class ClusterNode:
    """This node's Redis side: publish, subscribe, refresh, survive outages.

    Args:
        redis_url: ``--cluster``.
        node_url: ``--node-url`` (already checked).
        local_names: the names of the sessions this node holds now (pooled or not).
        local_pools: of those, the pooled names and how many members each has here.
    """

    def __init__(
        self,
        redis_url: str,
        node_url: str,
        local_names: Callable[[], set[str]],
        local_pools: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.redis_url = redis_url
        self.node_url = node_url
        self.local_names = local_names
        self.local_pools = local_pools
        self.directory = Directory(node_url)
        self.client: redis.asyncio.Redis = redisconn.async_client(redis_url)
        #: Secrets accepted on X-Edge-Hop: the current one first (sent), then older ones
        #: (a Redis that restarted empty got a new one; links in flight used the old).
        self.secrets: list[str] = []
        self.up = True
        #: Called with a name another node took over (retire the local session).
        self.on_taken: Callable[[str], None] = lambda name: None
        #: Called when the token store changed in Redis (re-read it, enforce revokes).
        self.on_tokens: Callable[[], None] = lambda: None
        #: Called when Redis came back (re-publish TCP ports and the like).
        self.on_back: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_logged = 0.0
        self._back_lock = asyncio.Lock()

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Reach Redis (ClusterConfigError if not), agree on the secret, read the
        directory, then run the loops."""
        import redis

        try:
            await self.client.ping()
            await self._agree_secret()
            await self._read_directory()
        except redis.RedisError as exc:
            raise ClusterConfigError(f"cannot use Redis at {self.where()}: {exc}") from exc
        log.info("cluster_joined", extra={"node": self.node_url, "nodes": self.directory.nodes()})
        self._spawn(self._refresh_loop())
        self._spawn(self._listen_loop())

    async def stop(self) -> None:
        """Withdraw this node's names (best effort) and close Redis."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.up:
            with contextlib.suppress(Exception):
                pools = self.local_pools()
                for name in self.local_names():
                    await (self._leave(name) if name in pools else self._withdraw(name))
        with contextlib.suppress(Exception):
            await self.client.aclose()

    # -- the registry's hooks (synchronous: they schedule) --------------------------------

    def publish(self, name: str) -> None:
        self._spawn(self._guard(self._announce(name)))

    def withdraw(self, name: str) -> None:
        self._spawn(self._guard(self._withdraw(name)))

    def join_pool(self, name: str, members: int) -> None:
        self._spawn(self._guard(self._join(name, members)))

    def leave_pool(self, name: str) -> None:
        self._spawn(self._guard(self._leave(name)))

    def owner(self, name: str) -> str | None:
        return self.directory.owner(name)

    # -- Redis calls ------------------------------------------------------------------------

    async def _join(self, name: str, members: int) -> None:
        await self.client.set(pool_key(name, self.node_url), members, ex=SESSION_TTL)
        await self.client.publish(SESSIONS_CHANNEL, f"pool {name} {self.node_url}")

    async def _leave(self, name: str) -> None:
        if await self.client.delete(pool_key(name, self.node_url)):
            await self.client.publish(SESSIONS_CHANNEL, f"unpool {name} {self.node_url}")

    async def _announce(self, name: str) -> None:
        await self.client.set(SESSION_KEY + name, self.node_url, ex=SESSION_TTL)
        await self.client.publish(SESSIONS_CHANNEL, f"up {name} {self.node_url}")

    async def _withdraw(self, name: str) -> None:
        key = SESSION_KEY + name
        deleted = await self.client.eval(_DELETE_IF_MINE, 1, key, self.node_url)
        if deleted:
            await self.client.publish(SESSIONS_CHANNEL, f"down {name} {self.node_url}")

    async def _refresh(self) -> list[str]:
        """Renew this node's names; returns those another node holds now (each is
        handed to :attr:`on_taken`)."""
        pools = self.local_pools()
        names = sorted(self.local_names() - pools.keys())
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.eval(_KEEP_IF_MINE, 1, SESSION_KEY + name, self.node_url, SESSION_TTL)
            for name, members in sorted(pools.items()):
                pipe.set(pool_key(name, self.node_url), members, ex=SESSION_TTL)
            kept = (await pipe.execute())[: len(names)]
        lost = [name for name, ok in zip(names, kept, strict=True) if not ok]
        for name in lost:
            log.info("cluster_name_moved", extra={"agent": name, "node": "another"})
            self.on_taken(name)
        return lost

    async def _read_directory(self) -> None:
        mapping: dict[str, str] = {}
        keys: list[str] = []
        async for key in self.client.scan_iter(match=SESSION_KEY + "*", count=1000):
            keys.append(str(key))
            if len(keys) >= MAX_REMOTE_NAMES:
                break
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            values = await self.client.mget(chunk)
            for key, value in zip(chunk, values, strict=True):
                if value is not None:
                    mapping[key[len(SESSION_KEY) :]] = str(value)
        pools: dict[str, set[str]] = {}
        count = 0
        async for key in self.client.scan_iter(match=POOL_KEY + "*", count=1000):
            name, _, node = str(key)[len(POOL_KEY) :].partition("|")
            if node:
                pools.setdefault(name, set()).add(node)
            count += 1
            if count >= MAX_REMOTE_NAMES:
                break
        self.directory.replace(mapping, pools)

    async def _agree_secret(self) -> None:
        mine = self.secrets[0] if self.secrets else secrets.token_urlsafe(32)
        await self.client.set(SECRET_KEY, mine, nx=True)
        current = await self.client.get(SECRET_KEY)
        if current is None:
            raise ClusterConfigError("the cluster secret vanished from Redis")
        current = str(current)
        if current not in self.secrets:
            self.secrets = [current, *self.secrets][:4]

    # -- loops ------------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        import redis

        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                if not self.up:
                    await self.client.ping()
                    await self._came_back()
                await self._refresh()
                await self._read_directory()
            except (redis.RedisError, OSError) as exc:
                self._down(exc)

    async def _came_back(self) -> None:
        """Redis answers again: re-publish, then say so (once, whichever loop saw it)."""
        async with self._back_lock:
            if self.up:
                return
            await self._agree_secret()
            lost = await self._refresh()  # a name another node took meanwhile stays there
            pools = self.local_pools()
            for name in sorted(self.local_names() - set(lost)):
                kind = "pool" if name in pools else "up"
                await self.client.publish(SESSIONS_CHANNEL, f"{kind} {name} {self.node_url}")
            self.up = True
        log.warning("cluster_redis_back", extra={"node": self.node_url})
        self.on_tokens()
        self.on_back()

    async def _listen_loop(self) -> None:
        import redis

        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(SESSIONS_CHANNEL, TOKENS_CHANNEL)
                if not self.up:  # noticed here first: every RESUBSCRIBE_DELAY, not refresh
                    await self._came_back()
                await self._read_directory()  # what changed while not subscribed
                self.on_tokens()
                await self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def _listen(self, pubsub: redis.asyncio.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=REFRESH_INTERVAL)
            if message is None or message.get("type") != "message":
                continue
            data = str(message.get("data", ""))
            if message.get("channel") == TOKENS_CHANNEL:
                self.on_tokens()
                continue
            taken = self.directory.apply(data)
            if taken is not None and taken[0] in self.local_names():
                log.info("cluster_name_moved", extra={"agent": taken[0], "node": taken[1]})
                self.on_taken(taken[0])

    # -- helpers ------------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        now = asyncio.get_running_loop().time()
        if self.up or now - self._down_logged >= DOWN_LOG_INTERVAL:
            log.error(
                "cluster_redis_down",
                extra={
                    "node": self.node_url,
                    "detail": f"{self.where()}: {exc}; serving the sessions held here",
                },
            )
            self._down_logged = now
        self.up = False

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        import redis

        try:
            await work
        except (redis.RedisError, OSError) as exc:
            self._down(exc)  # the refresh after Redis is back re-publishes

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def where(self) -> str:
        """The Redis URL without a password (never logged)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.redis_url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
