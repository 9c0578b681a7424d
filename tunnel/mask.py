"""RFC 6455 masking at C speed, without importing the websockets package.

Every frame the agent sends is masked, so the mask runs on the hot path: it is
websockets' C ``apply_mask``. Importing it as ``websockets.speedups`` runs the
package's ``__init__`` first, and with it ``websockets.version``, which imports
``importlib.metadata`` (``email``, ``importlib.resources``, ``tempfile``...): about
2.5 MiB of the agent's idle RSS for one function. The extension is a standalone C module
(it imports nothing), so it is loaded from the package's folder by its file. Python
registers it as ``websockets.speedups``, as an import would: a later import of
websockets (the relay, an in-process app) finds and uses this same module.

What this relies on: ``speedups`` is a C extension module in the websockets package
folder with ``apply_mask(data, mask) -> bytes``, as in the versions pyproject.toml
allows (``websockets>=15,<18``). If that fails (no C extension for this platform,
another layout), the ordinary import is used: it costs memory, not speed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from typing import cast

Masker = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _load_speedups() -> Masker | None:
    """websockets' C ``apply_mask`` loaded from its file, or None if it is not there."""
    package = importlib.machinery.PathFinder.find_spec("websockets")
    if package is None or not package.submodule_search_locations:
        return None
    spec = importlib.machinery.PathFinder.find_spec(
        "speedups", list(package.submodule_search_locations)
    )
    if spec is None or spec.origin is None:
        return None
    if not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        return None  # a pure-Python stand-in would be no faster than the fallback
    name = "websockets.speedups"  # its init function is PyInit_speedups
    spec = importlib.util.spec_from_file_location(
        name, spec.origin, loader=importlib.machinery.ExtensionFileLoader(name, spec.origin)
    )
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, "apply_mask", None)
    return cast(Masker, function) if callable(function) else None


def _load() -> Masker:
    try:
        found = _load_speedups()
    except (ImportError, OSError):
        found = None
    if found is not None:
        return found
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # pragma: no cover - websockets without its C extension
        from websockets.utils import apply_mask
    return cast(Masker, apply_mask)


#: ``apply_mask(data, mask)``: ``data`` XOR the 4-byte ``mask`` repeated (RFC 6455 5.3).
apply_mask: Masker = _load()
