"""What the running daemon drives, recorded for a later safe-stop (in systemd's RuntimeDirectory=)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rover_safety.config import Config
from rover_safety.drivers import driven_state

log = logging.getLogger("rover-safety")

STATE_FILE = "driven.json"


def state_path() -> Path | None:
    """Where the daemon records what it drives, for safe-stop: in systemd's RuntimeDirectory=, if there is one."""
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(directory) / STATE_FILE if directory else None


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
