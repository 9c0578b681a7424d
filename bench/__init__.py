"""The benchmark harness (``scripts/bench``); not part of the shipped packages."""
