"""Errors of the cluster layer (all :class:`relay.errors.RelayConfigError` at startup).

Redis failures while running are never raised to a caller: the node keeps serving the
sessions it holds and logs ``cluster_redis_down`` (see :mod:`relay.cluster.directory`).
"""

from __future__ import annotations

from relay.errors import RelayConfigError


class ClusterConfigError(RelayConfigError):
    """A bad ``--cluster`` or ``--node-url``, or no Redis at startup."""
