"""What the running daemon drives, recorded for a later safe-stop (in systemd's RuntimeDirectory=).

safe-stop reads this record before anything else, so an edited (or broken) config that was never applied cannot
make it miss the pins that are really driven.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from rover_safety.config import Config, MotorConfig, MotorPins

log = logging.getLogger("rover-safety")

STATE_FILE = "driven.json"
MAX_RECORD_BYTES = 256 * 1024  # far more than 28 pins need; a larger record is not ours


def state_path() -> Path | None:
    """Where the daemon records what it drives, for safe-stop: in systemd's RuntimeDirectory=, if there is one."""
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(directory) / STATE_FILE if directory else None


def driven_state(config: Config) -> str:
    """What a running daemon drives, as JSON for safe-stop: the GPIO backend and every motor's pins."""
    return json.dumps({
        "pin_factory": config.pin_factory,
        "pigpio_host": config.pigpio_host,
        "pigpio_port": config.pigpio_port,
        "lgpio_chip": config.lgpio_chip,
        "motors": [{"name": m.name, "pins": m.pins.used()} for m in config.motors],
    })


def config_from_state(text: str, source: str) -> Config:
    """The part of a Config that safe-stop needs, back from driven_state()'s JSON."""
    data = json.loads(text)
    return Config(
        source=source,
        pin_factory=data["pin_factory"],
        pigpio_host=data["pigpio_host"],
        pigpio_port=int(data["pigpio_port"]),
        lgpio_chip=data.get("lgpio_chip"),
        motors=tuple(MotorConfig(m["name"], MotorPins(**m["pins"])) for m in data["motors"]),
    )


def record_driven(config: Config) -> None:
    """Tell a later safe-stop what is really driven (it also reads the config file, which may have changed since)."""
    path = state_path()
    if path is None:
        return
    try:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(driven_state(config))
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("cannot record the driven pins for safe-stop in %s: %s; safe-stop will use the config file only",
                    path, exc.strerror or exc)
