"""sd_notify: READY, STATUS, WATCHDOG, RELOADING, STOPPING. A no-op outside systemd."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_send: Callable[[str], object] | None = None
if os.environ.get("NOTIFY_SOCKET"):
    try:
        from systemd import daemon as _sd

        _send = _sd.notify
    except ImportError:  # systemd-python missing: a Type=notify unit will then time out, which says enough
        _send = None


def enabled() -> bool:
    """True when running under systemd with a notify socket (worth computing a STATUS= line for)."""
    return _send is not None


def _notify(message: str) -> None:
    if _send is not None:
        _send(message)


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec for this process, in seconds; None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or _send is None or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def ready(status: str) -> None:
    _notify(f"READY=1\nSTATUS={status}")


def status(text: str) -> None:
    _notify(f"STATUS={text}")


def watchdog_ping() -> None:
    _notify("WATCHDOG=1")


def reloading() -> None:
    _notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping() -> None:
    """Sent once every output is off; `systemctl status` shows it until the process is gone."""
    _notify("STOPPING=1\nSTATUS=stopping: every output off")
