"""A local stand-in for the Molecule platform's remote-workspace API.

Run it with ``edge-devplatform serve``; see docs/devplatform.md. It never imports
``relay`` or ``edge_agent``, and they never import it.
"""

from importlib import metadata

try:
    __version__ = metadata.version("molecule-edge")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
