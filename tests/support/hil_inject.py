"""Run `rover-safety` with one fault injected, for the exit-path tests.

    python tests/support/hil_inject.py FAULT serve --config X


Each fault monkeypatches one function of the installed package, then runs the real CLI (no test hooks in product
code):

- ``handler``: ``Motor.set_rpm`` raises, so a SetRPM call is an unexpected exception in a gRPC handler.
- ``deadline-loop``: the session deadline loop raises the first time a session's deadline comes.
- ``reload``: building the components a reload adds raises, after the changed ones were already closed.
"""

from __future__ import annotations

import sys
from typing import Any

from rover_safety.daemon import app, cli
from rover_safety.drivers import Motor
from rover_safety.sessions import SessionManager


def _handler() -> None:
    def set_rpm(self: Motor, rpm: float) -> None:
        raise RuntimeError("injected: a bug in a driver command")

    Motor.set_rpm = set_rpm  # type: ignore[method-assign]


def _deadline_loop() -> None:
    collect = SessionManager._collect_due

    def collect_due(self: SessionManager, now: float) -> Any:
        if self._heap and self._heap[0][0] <= now:
            raise RuntimeError("injected: a bug in the deadline loop")
        return collect(self, now)

    SessionManager._collect_due = collect_due  # type: ignore[method-assign]


def _reload() -> None:
    build = app.build  # type: ignore[attr-defined]  # the name the daemon module looks up

    def build_some(config: Any, factory: Any, only: set[str] | None = None) -> Any:
        if only is not None:
            raise RuntimeError("injected: cannot build the new components")
        return build(config, factory, only)

    app.build = build_some  # type: ignore[attr-defined]


FAULTS = {"handler": _handler, "deadline-loop": _deadline_loop, "reload": _reload}

if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
