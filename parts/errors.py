"""Errors of the sub-parts stage."""

from __future__ import annotations


class PartUnavailable(ConnectionError):
    """Raised for a call to a resource whose part is not connected (lost, shutting down, or not reached yet)."""

    def __init__(self, part: str, why: str) -> None:
        self.part = part
        super().__init__(f"part {part!r} is not connected ({why}); its resources are unavailable until it is back")
