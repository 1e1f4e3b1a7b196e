"""Run `rover-safety` with one fault injected, for the exit-path tests.

    python tests/support/hil_inject.py FAULT serve --config X


Each fault patches one function of the installed package (unittest.mock.patch.object, never undone: the process
ends with the CLI), then runs the real CLI (no test hooks in product code):

- ``handler``: ``Motor.set_rpm`` raises, so a SetRPM call is an unexpected exception in a gRPC handler.
- ``deadline-loop``: the session deadline loop raises the first time a session's deadline comes.
- ``reload``: building the components a reload adds raises, after the changed ones were already closed.
"""

from __future__ import annotations

import sys
from unittest import mock

from gpiozero.pins import Factory
from rover_safety.config import Config
from rover_safety.daemon import app, cli
from rover_safety.drivers import Motor, Rig, build
from rover_safety.sessions import SessionManager, StopReport


def _handler() -> None:
    def set_rpm(self: Motor, rpm: float) -> None:
        raise RuntimeError("injected: a bug in a driver command")

    mock.patch.object(Motor, "set_rpm", set_rpm).start()


def _deadline_loop() -> None:
    collect = SessionManager._collect_due

    def collect_due(self: SessionManager, now: float) -> list[StopReport]:
        if self._heap and self._heap[0][0] <= now:
            raise RuntimeError("injected: a bug in the deadline loop")
        return collect(self, now)

    mock.patch.object(SessionManager, "_collect_due", collect_due).start()


def _reload() -> None:
    def build_some(config: Config, factory: Factory, only: set[str] | None = None) -> Rig:
        if only is not None:
            raise RuntimeError("injected: cannot build the new components")
        return build(config, factory, only)

    mock.patch.object(app, "build", build_some).start()  # the name the daemon module looks up


FAULTS = {"handler": _handler, "deadline-loop": _deadline_loop, "reload": _reload}

if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
