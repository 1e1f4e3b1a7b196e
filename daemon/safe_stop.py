"""`rover-safety safe-stop`: every output the daemon drives, off, without the daemon (systemd's ExecStopPost)."""

from __future__ import annotations

import argparse
import logging
import threading
import time

from rover_safety.config import Config, ConfigError, load
from rover_safety.drivers import PinFactoryError, safe_stop

from .state import config_from_state, state_path

log = logging.getLogger("rover-safety")


def _load(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as exc:
        log.error("%s", exc)
        return None


SAFE_STOP_DEADLINE = 3.0  # seconds; a pigpiod that never answers must not hang us (the unit allows 5 s)


def safe_stop_command(args: argparse.Namespace) -> int:
    """Drive every configured output off without the daemon (systemd runs this after the daemon stops).

    Under systemd it also reads what the daemon recorded it drives, so a config file edited (or broken) since the
    daemon last loaded it cannot make it miss the pins that are really driven.
    """
    targets = [t for t in (_recorded(), _load(args.config)) if t is not None]
    if not targets:
        return 1
    targets = [t for i, t in enumerate(targets) if not any(_same_pins(t, u) for u in targets[:i])]
    started = time.monotonic()
    outcome: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            done: list[str] = []
            for target in targets:
                done += safe_stop(target, "mock" if args.simulate else None)
            outcome.append(done)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="safe-stop", daemon=True)
    worker.start()
    worker.join(SAFE_STOP_DEADLINE)
    if not outcome:
        log.critical("safe-stop could not reach the hardware: no answer within %g s", SAFE_STOP_DEADLINE)
        return 1
    done = outcome[0]
    if isinstance(done, PinFactoryError):
        log.critical("safe-stop could not reach the hardware: %s", done)
        return 1
    if isinstance(done, BaseException):
        log.critical("safe-stop failed: %r", done)
        return 1
    log.info("safe-stop: %d outputs off in %.1f ms (%s)", len(done), (time.monotonic() - started) * 1000,
             "; ".join(done) or "no motors configured")
    return 0


def _recorded() -> Config | None:
    """What the daemon recorded it drives (see state.record_driven), if anything."""
    path = state_path()
    if path is None or not path.exists():
        return None
    try:
        return config_from_state(path.read_text(), str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot read the daemon's record of its pins, %s: %r; using the config file only", path, exc)
        return None


def _same_pins(a: Config, b: Config) -> bool:
    def key(c: Config) -> tuple[object, ...]:
        return (c.pin_factory, c.pigpio_host, c.pigpio_port, tuple((m.name, m.pins) for m in c.motors))

    return key(a) == key(b)
