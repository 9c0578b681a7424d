"""The service definition templates shipped in this package (``templates/``)."""

from __future__ import annotations

import string
from importlib import resources


def render(template: str, /, **values: str) -> str:
    """Template file ``template`` with ``$key`` placeholders filled (a missing one is an error)."""
    text = resources.files(__package__).joinpath("templates", template).read_text("utf-8")
    return string.Template(text).substitute(values)
