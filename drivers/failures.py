"""Try every step, then raise: the one rule that keeps a failing output from keeping the others on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import StopFailed


class Failures:
    """Collects the failures of independent steps (turning outputs off, stopping resources) while every step runs.

    ``with failures.step("left"): ...`` records an exception instead of letting it skip the steps after; once all
    have run, `raise_first()` re-raises the first failure (each later one added to it as a note, so none is lost),
    or `raise_all()` raises StopFailed naming every one.
    """

    def __init__(self) -> None:
        self.errors: dict[str, Exception] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self.errors.setdefault(name, exc)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_first(self) -> None:
        """Raise the first failure, if any, with every later one noted on it."""
        if not self.errors:
            return
        (_, first), *later = self.errors.items()
        for name, exc in later:
            first.add_note(f"{name} failed too: {exc!r}")
        raise first

    def raise_all(self) -> None:
        """Raise StopFailed naming every failure, if any."""
        if self.errors:
            raise StopFailed(dict(self.errors))
