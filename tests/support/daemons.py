"""In-process daemons for tests: the shipped example config on a free port, and a factory that shuts them down."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpiozero.pins import Factory
    from rover_safety.daemon.app import Daemon
    from rover_safety.drivers.rig import Rig

CHECKOUT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = CHECKOUT / "config" / "example.yaml"


def example_config(heartbeat_window: str = "2s", pin_factory: str = "mock", extra: str = "", **gpio: object) -> str:
    """The shipped example config on a free loopback port, with the window and pin factory given."""
    text = EXAMPLE.read_text()
    text = text.replace('bind_address: "127.0.0.1:8080"', 'bind_address: "127.0.0.1:0"')
    text = text.replace("heartbeat_window: 2s", f"heartbeat_window: {heartbeat_window}")
    text = text.replace("pin_factory: mock", f"pin_factory: {pin_factory}")
    if gpio:
        text = text.replace("pigpio: {host: localhost, port: 8888}",
                            "pigpio: {" + ", ".join(f"{k}: {v}" for k, v in gpio.items()) + "}")
    return text + extra


class DaemonFactory:
    """Starts in-process daemons on mock (or emulated) pins and a free loopback port; shuts them all down after."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Daemon] = []
        self.fatal_calls = 0

    def __call__(self, text: str | None = None, **kwargs: str) -> Daemon:
        from rover_safety.config import load
        from rover_safety.daemon.app import Daemon
        from rover_safety.daemon.errors import StartupError

        path = self.directory / f"config{len(self.started)}.yaml"
        path.write_text(text if text is not None else example_config(**kwargs))

        def on_fatal() -> None:
            self.fatal_calls += 1

        daemon = Daemon(load(path), config_path=str(path), on_fatal=on_fatal)
        try:
            daemon.start()
        except StartupError:
            raise  # start() undoes what it did before raising this (pins released, nothing served)
        except BaseException:  # anything else may leave it half started: shut it down, keep the original error
            with contextlib.suppress(Exception):
                daemon.shutdown()
            raise
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        """Shut every started daemon down, each even if one before it fails; then raise the first failure."""
        first: Exception | None = None
        for daemon in self.started:
            try:
                daemon.shutdown()
            except Exception as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first


# --- a daemon's pins, as the tests read them (gpiozero is untyped: its pins are Any) ----------------------------


def rig(daemon: Daemon) -> Rig:
    """The motors, bases and pin factory of a started daemon."""
    assert daemon.rig is not None, "the daemon has not started, or has shut down"
    return daemon.rig


def pin_state(factory: Factory, bcm: int) -> float:
    """A pin's state: the PWM duty 0..1 of a PWM pin, else its level 0 or 1."""
    return float(factory.pin(bcm).state)


def pin_changed_at(factory: Factory, bcm: int) -> float:
    """When (time.monotonic()) a mock pin last changed: gpiozero's MockPin stamps each change in `_last_change`."""
    return float(factory.pin(bcm)._last_change)


def pin(daemon: Daemon, bcm: int) -> Any:
    """The gpiozero pin object of a daemon's factory (a mock pin on the mock factory)."""
    return rig(daemon).factory.pin(bcm)


def duty(daemon: Daemon, bcm: int) -> float:
    """A daemon's pin state (see pin_state)."""
    return pin_state(rig(daemon).factory, bcm)


def changed_at(daemon: Daemon, bcm: int) -> float:
    """When a daemon's mock pin last changed (see pin_changed_at)."""
    return pin_changed_at(rig(daemon).factory, bcm)
