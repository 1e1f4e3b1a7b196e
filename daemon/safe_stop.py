"""`rover-safety safe-stop`: every output the daemon drives, off, without the daemon (systemd's ExecStopPost).

The daemon's own record of what it drives (`/run/rover-safety/driven.json`) is turned off first, before the config
file is even opened: a config that is broken, huge, hostile, or hangs whoever reads it cannot keep a single pin on.
The config is read next, in a child process with a time and memory limit, only to catch pins the record does not
name (the daemon died before it wrote one); whatever goes wrong with it, what was already done stands.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable

from rover_safety.config import Config, ConfigError, load_isolated, read_limited
from rover_safety.drivers import PinFactoryError, safe_stop

from .state import MAX_RECORD_BYTES, config_from_state, state_path

log = logging.getLogger("rover-safety")

SAFE_STOP_DEADLINE = 3.0  # seconds for everything; the unit allows ExecStopPost 5 s
CONFIG_TIME = 1.5  # seconds the config file may take to read, at most


def safe_stop_command(args: argparse.Namespace) -> int:
    """Turn off what the record names, then what the config names; exit 0 once every known output is off."""
    started = time.monotonic()
    kind = "mock" if args.simulate else None
    done: list[str] = []
    failed = False
    record = _recorded()
    if record is not None:
        ok, lines = _bounded(lambda: safe_stop(record, kind), SAFE_STOP_DEADLINE, "the recorded outputs")
        done += lines
        failed |= not ok
    remaining = SAFE_STOP_DEADLINE - (time.monotonic() - started)
    config = _config(args.config, min(CONFIG_TIME, max(0.2, remaining - 0.5)))
    if config is not None and (record is None or not _same_pins(config, record)):
        remaining = max(0.2, SAFE_STOP_DEADLINE - (time.monotonic() - started))
        ok, lines = _bounded(lambda: safe_stop(config, kind), remaining, "the configured outputs")
        done += lines
        failed |= not ok
    if record is None and config is None:
        log.critical("safe-stop: nothing to stop by: no record of the driven pins and no readable config")
        return 1
    if failed:
        return 1
    log.info("safe-stop: %d outputs off in %.1f ms (%s)", len(done), (time.monotonic() - started) * 1000,
             "; ".join(done) or "no motors configured")
    return 0


def _bounded(step: Callable[[], list[str]], timeout: float, what: str) -> tuple[bool, list[str]]:
    """Run one safe-stop on a thread, bounded by `timeout`: a pigpiod that never answers must not hang us."""
    outcome: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            outcome.append(step())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="safe-stop", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        log.critical("safe-stop could not reach the hardware for %s: no answer within %.1f s", what, timeout)
        return False, []
    result = outcome[0]
    if isinstance(result, PinFactoryError):
        log.critical("safe-stop could not reach the hardware for %s: %s", what, result)
        return False, []
    if isinstance(result, BaseException):
        log.critical("safe-stop failed for %s: %r", what, result)
        return False, []
    return True, result


def _config(path: str, timeout: float) -> Config | None:
    """The config file's pins, if it can be read within `timeout` s; any failure is logged and means None."""
    try:
        return load_isolated(path, timeout=timeout)
    except ConfigError as exc:
        log.error("safe-stop: %s; going by the daemon's record only", exc)
    except Exception as exc:  # whatever it is, the record's outputs are off already
        log.error("safe-stop: cannot read the config %s (%r); going by the daemon's record only", path, exc)
    return None


def _recorded() -> Config | None:
    """What the daemon recorded it drives (see state.record_driven), if anything."""
    path = state_path()
    if path is None:
        return None
    try:
        text = read_limited(path, MAX_RECORD_BYTES)  # a regular file only: a FIFO put there cannot hang safe-stop
        return config_from_state(text.decode(), str(path))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a torn or tampered record: say so, and go by the config
        log.error("cannot read the daemon's record of its pins, %s: %r; using the config file only", path, exc)
        return None


def _same_pins(a: Config, b: Config) -> bool:
    def key(c: Config) -> tuple[object, ...]:
        return (c.pin_factory, c.pigpio_host, c.pigpio_port, c.lgpio_chip, tuple((m.name, m.pins) for m in c.motors))

    return key(a) == key(b)
