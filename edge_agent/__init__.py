"""edge-agent: one outbound tunnel to the relay, serving requests from a local target.

Embedding API: :class:`edge_agent.tunnel.TunnelClient` (connect, serve, reconnect),
the Target interface in :mod:`edge_agent.target` (with :class:`~edge_agent.target.HttpTarget`)
and :class:`edge_agent.asgi.AsgiTarget`; errors in :mod:`edge_agent.errors`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("molecule-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
