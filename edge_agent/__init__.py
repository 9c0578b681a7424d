"""edge-agent: one outbound tunnel to the relay, serving requests from a local target.

Embedding API: :class:`edge_agent.tunnel.TunnelClient` (connect, serve, reconnect),
the Target interface in :mod:`edge_agent.target` (with :class:`~edge_agent.target.HttpTarget`)
and :class:`edge_agent.asgi.AsgiTarget`; errors in :mod:`edge_agent.errors`.

``__version__`` is the project's version, written here once (pyproject.toml reads it):
asking ``importlib.metadata`` for it cost the agent about 2.6 MiB of RSS (it imports
``email``, ``importlib.resources``, ``tempfile``...) for one string.
"""

__version__ = "0.1.0"
