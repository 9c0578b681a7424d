"""A local stand-in for the Molecule platform's remote-workspace API."""
