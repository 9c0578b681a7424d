"""The token store in Redis: ``edge:tokens`` (hash name -> the record's JSON, as in
tokens.json: the SHA-256, never the token) and its change channel ``edge:tokens``.

Two sides, as for the file store:

* :class:`CliTokens`: ``edge-relay token issue|list|revoke --cluster URL`` (synchronous
  redis-py). Each change is one atomic Redis step followed by a message on the channel.
* :class:`RedisTokenStore`: a running node's view. It is a :class:`relay.tokens.TokenStore`
  whose records come from Redis instead of a file: the node re-reads the hash when a
  change message arrives (and after a Redis outage), and :meth:`refresh` (synchronous, on
  the relay's paths) installs what was read. A revoke thus reaches every node within one
  Redis round trip, and the node closes the session at once
  (:meth:`relay.cluster.setup.Cluster.tokens_changed`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from relay.cluster import redisconn
from relay.config import RESERVED_NAMES
from relay.errors import RelayConfigError
from relay.tokens import (
    DEFAULT_KINDS,
    TOKEN_BYTES,
    TOKEN_PREFIX,
    TokenRecord,
    TokenStore,
    _parse,
    token_hash,
)
from wire import StreamKind
from wire.rules import valid_name

if TYPE_CHECKING:
    import redis
    import redis.asyncio

log = logging.getLogger(__name__)

TOKENS_KEY: Final = redisconn.PREFIX + "tokens"
TOKENS_CHANNEL: Final = redisconn.PREFIX + "tokens"
PORTS_KEY: Final = redisconn.PREFIX + "tcp-ports"

#: Give port ARGV[2] to name ARGV[1] unless another name holds it; write it into the
#: name's record and announce the change. 1: kept (or already the name's), 0: taken.
_KEEP_PORT: Final = """
local record = redis.call('hget', KEYS[1], ARGV[1])
if not record then return 0 end
if redis.call('hsetnx', KEYS[2], ARGV[2], ARGV[1]) == 0
   and redis.call('hget', KEYS[2], ARGV[2]) ~= ARGV[1] then
  return 0
end
local decoded = cjson.decode(record)
local old = decoded['tcp_port']
if old and tostring(old) ~= ARGV[2] and redis.call('hget', KEYS[2], tostring(old)) == ARGV[1] then
  redis.call('hdel', KEYS[2], tostring(old))
end
decoded['tcp_port'] = tonumber(ARGV[2])
redis.call('hset', KEYS[1], ARGV[1], cjson.encode(decoded))
redis.call('publish', KEYS[1], 'port ' .. ARGV[1])
return 1
"""

#: Most tokens a cluster keeps (each node holds them all in memory).
MAX_TOKENS: Final = 100_000


#: Delete the record of ARGV[1], free its TCP port, announce the change.
_REVOKE: Final = """
local record = redis.call('hget', KEYS[1], ARGV[1])
if not record then return 0 end
local port = cjson.decode(record)['tcp_port']
if port and redis.call('hget', KEYS[2], tostring(port)) == ARGV[1] then
  redis.call('hdel', KEYS[2], tostring(port))
end
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('publish', KEYS[1], 'revoke ' .. ARGV[1])
return 1
"""


def _records(raw: dict[str, str], where: str) -> dict[str, TokenRecord]:
    try:
        entries = {name: json.loads(value) for name, value in raw.items()}
    except ValueError as exc:
        raise RelayConfigError(f"token store {where}: {exc}") from exc
    return _parse({"tokens": entries}, Path(where))


class RedisTokenStore(TokenStore):
    """A node's token store, read from Redis (see the module docstring)."""

    def __init__(self, client: redis.asyncio.Redis, where: str) -> None:
        super().__init__(Path(where))
        self.client = client
        self.where = where
        #: Port writes in flight (cancelled when the node stops).
        self.tasks: set[asyncio.Task[None]] = set()
        self._loaded: dict[str, TokenRecord] | None = None
        self._first = True

    async def load(self) -> None:
        """Read every record; :meth:`refresh` installs them. Raises redis.RedisError."""
        raw = await self.client.hgetall(TOKENS_KEY)
        self._loaded = _records({str(k): str(v) for k, v in raw.items()}, self.where)

    def refresh(self) -> bool:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return False
        changed = loaded != self._records
        self._install(loaded, first=self._first)
        self._first = False
        return changed

    def records(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def assign_port(
        self, name: str, pick: Callable[[int | None, set[int]], int | None]
    ) -> int | None:
        """Keep the TCP port ``pick`` returns in ``name``'s record, cluster-wide.

        ``taken``: the ports every record in the cluster holds (this node's copy). A new
        port is written to the record here at once, and to Redis right after, where
        ``edge:tcp-ports`` (port -> name, HSETNX) settles a race between two nodes: the
        loser logs ``tcp_port_conflict`` and the name gets a free port at its next session.
        """
        record = self._records.get(name)
        if record is None:
            return None
        taken = {r.tcp_port for r in self._records.values() if r.name != name and r.tcp_port}
        port = pick(record.tcp_port, taken)
        if port is not None and port != record.tcp_port:
            self._records[name] = dataclasses.replace(record, tcp_port=port)
            task = asyncio.get_running_loop().create_task(self._keep_port(name, port))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return port

    async def _keep_port(self, name: str, port: int) -> None:
        import redis

        try:
            kept = await self.client.eval(_KEEP_PORT, 2, TOKENS_KEY, PORTS_KEY, name, str(port))
        except redis.RedisError as exc:
            log.error("tcp_port_unsaved", extra={"agent": name, "port": port, "detail": str(exc)})
            return
        if not kept:
            log.error("tcp_port_conflict", extra={"agent": name, "port": port})
            record = self._records.get(name)
            if record is not None and record.tcp_port == port:
                self._records[name] = dataclasses.replace(record, tcp_port=None)

    def issue(
        self,
        name: str,
        replace: bool = False,
        kinds: frozenset[StreamKind] = DEFAULT_KINDS,
        pool: bool = False,
    ) -> str:
        raise RelayConfigError("issue tokens with: edge-relay token issue NAME --cluster URL")

    def revoke(self, name: str) -> bool:
        raise RelayConfigError("revoke tokens with: edge-relay token revoke NAME --cluster URL")


class CliTokens:
    """``edge-relay token ... --cluster URL``: the same calls as :class:`TokenStore`'s
    CLI side. Raises RelayConfigError (Redis unreachable included)."""

    def __init__(self, url: str) -> None:
        self.client: redis.Redis = redisconn.sync_client(url)
        parts = url.split("@")[-1]  # never print a password
        self.where = parts if "://" in parts else "redis://" + parts

    def records(self) -> list[TokenRecord]:
        raw = self._call(lambda: self.client.hgetall(TOKENS_KEY))
        return sorted(_records(raw, self.where).values(), key=lambda r: r.name)

    def issue(
        self,
        name: str,
        replace: bool = False,
        kinds: frozenset[StreamKind] = DEFAULT_KINDS,
        pool: bool = False,
    ) -> str:
        if not valid_name(name) or name in RESERVED_NAMES:
            raise RelayConfigError(f"{name!r} is not a valid tunnel name (a lowercase DNS label)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        self._call(lambda: self._store(name, token, replace, kinds, pool))
        return token

    def revoke(self, name: str) -> bool:
        """Delete ``name``'s token (and free its TCP port); False if it had none."""
        removed = self._call(lambda: self.client.eval(_REVOKE, 2, TOKENS_KEY, PORTS_KEY, name))
        return bool(removed)

    def _store(
        self, name: str, token: str, replace: bool, kinds: frozenset[StreamKind], pool: bool
    ) -> None:
        import redis

        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(TOKENS_KEY)  # type: ignore[no-untyped-call]
                    old = pipe.hget(TOKENS_KEY, name)
                    if old is not None and not replace:
                        raise RelayConfigError(
                            f"{name} already has a token (use --replace to rotate it)"
                        )
                    if old is None and pipe.hlen(TOKENS_KEY) >= MAX_TOKENS:
                        raise RelayConfigError(f"the cluster holds {MAX_TOKENS} tokens already")
                    pipe.multi()
                    pipe.hset(
                        TOKENS_KEY, name, json.dumps(self._record(name, token, kinds, pool, old))
                    )
                    pipe.publish(TOKENS_CHANNEL, f"issue {name}")
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue  # another change came first: read again

    def _record(
        self, name: str, token: str, kinds: frozenset[StreamKind], pool: bool, old: Any
    ) -> dict[str, Any]:
        port = _records({name: old}, self.where)[name].tcp_port if old is not None else None
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        record = TokenRecord(name, token_hash(token), created, kinds | DEFAULT_KINDS, port, pool)
        return record.to_json()

    def _call(self, work: Any) -> Any:
        import redis

        try:
            return work()
        except redis.RedisError as exc:
            raise RelayConfigError(f"cannot use Redis at {self.where}: {exc}") from exc
