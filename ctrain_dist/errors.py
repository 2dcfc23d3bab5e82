"""The one user-facing error: a bad field, named, so the CLI can exit 2 with one line.

A leaf: it imports nothing of ctrain_dist, so every module (the torch-free CLI commands among
them) may raise it without importing what raises it elsewhere.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A spec problem, with the dotted path of the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
