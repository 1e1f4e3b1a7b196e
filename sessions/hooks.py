"""How the session table's threads fit into the program that runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing() -> None:
    pass


def _ignore(exc: BaseException) -> None:
    pass


@dataclass(frozen=True)
class LoopHooks:
    """The deadline loop's links to its host: a periodic tick (e.g. the systemd watchdog), a crash callback, a setup
    run first in the deadline thread and in every stop thread (e.g. real-time priority), and whether to start the
    deadline thread at once (tests drive expiry by hand with `expire_due()` instead)."""

    tick: Callable[[], None] | None = None
    tick_interval: float | None = None
    on_crash: Callable[[BaseException], None] = _ignore
    thread_setup: Callable[[], None] = _nothing
    autostart: bool = True

    @property
    def ticking(self) -> bool:
        return self.tick is not None and bool(self.tick_interval)
