"""The cluster's command-line options (``edge-relay serve`` and ``edge-relay token``)."""

from __future__ import annotations

from typing import Any

import click

from relay.cluster.redisconn import check_node_url, check_redis_url


class RedisUrl(click.ParamType):  # type: ignore[type-arg]
    name = "redis-url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_redis_url(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class NodeUrl(click.ParamType):  # type: ignore[type-arg]
    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_node_url(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def cluster_url_option(func: Any) -> Any:
    """``--cluster redis://HOST:6379/0``."""
    return click.option(
        "--cluster",
        envvar="EDGE_RELAY_CLUSTER",
        type=RedisUrl(),
        metavar="REDIS_URL",
        help="Redis of a relay cluster (sessions, tokens, ports shared).  [default: none]",
    )(func)


def serve_options(func: Any) -> Any:
    """``--cluster`` and ``--node-url`` of ``edge-relay serve``."""
    func = click.option(
        "--node-url",
        envvar="EDGE_RELAY_NODE_URL",
        type=NodeUrl(),
        metavar="URL",
        help="With --cluster: how the other nodes reach this one (http://10.0.0.2:8080).",
    )(func)
    return cluster_url_option(func)
