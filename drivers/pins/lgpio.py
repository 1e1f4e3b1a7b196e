"""lgpio specifics (`pin_factory: lgpio`, the one backend a Raspberry Pi 5 has): opening it with a clear reason for
each way it fails, the one-call off path on the factory's own chip handle, and safe-stop's claim of every line.

lgpio runs in the daemon's process: the chip is ``/dev/gpiochipN``, each output a line request on it, and software
PWM a thread of this process. Unlike pigpiod, nothing of it outlives the process: when the daemon dies its PWM thread
stops wherever it was (high, if it was mid-pulse) and the kernel releases the line, which goes on driving that last
level. So safe-stop claims each line again as an output *at its off level* (a new process can claim what a dead one
held) and releases it, off.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import importlib
import os
import pwd
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from gpiozero.pins import Factory

from ..errors import PinFactoryError

PREFIX = "gpio.pin_factory lgpio: "
NOTIFY_PIPE = ".lgd-nfy0"  # what `import lgpio` makes in its working directory ($LG_WD, else the current one)
PI5_BOARD_TYPE = 0x17  # gpiozero 2.0.1's test for "a Pi 5" when it picks the chip itself
BUSY_WAIT = 0.5  # seconds safe-stop retries a line still held (by a process that is only just exiting)


def is_lgpio(factory: Factory) -> bool:
    return type(factory).__name__ == "LGPIOFactory"


def device_node(chip: int) -> Path:
    return Path(f"/dev/gpiochip{chip}")


# --- import ------------------------------------------------------------------------------------------------------


def import_lgpio() -> ModuleType:
    """`import lgpio`, with a PinFactoryError that says what to do for each way it fails.

    Importing lgpio makes its notification pipe (``.lgd-nfy0``) in ``$LG_WD``, else the current directory, and
    changes the process's working directory to that one; it is changed back here, so a relative path the daemon was
    given (``--config rover.yaml``) still means what it meant. lgpio opens nothing relative to it afterwards.
    """
    cwd = _cwd()
    workdir = os.environ.get("LG_WD") or cwd or "the current directory"
    try:
        return importlib.import_module("lgpio")
    except ModuleNotFoundError as exc:
        if exc.name not in ("lgpio", "_lgpio"):
            raise PinFactoryError(f"{PREFIX}cannot load it ({exc})") from None
        raise PinFactoryError(
            f"{PREFIX}the Python module lgpio is not installed ({sys.executable} -m pip install lgpio; Raspberry Pi "
            "OS's python3-lgpio serves only the system's own Python, not a venv)"
        ) from None
    except ImportError as exc:
        raise PinFactoryError(f"{PREFIX}cannot load it ({exc})") from None
    except OSError as exc:
        if ".lgd-nfy" not in f"{exc.filename} {exc}":
            raise PinFactoryError(f"{PREFIX}importing lgpio failed ({exc})") from None
        raise PinFactoryError(
            f"{PREFIX}lgpio cannot make its notification pipe {os.path.join(workdir, NOTIFY_PIPE)} "
            f"({_why_not_writable(workdir)}): run the daemon with a writable working directory, or set LG_WD to a "
            "writable directory (the shipped unit runs in its private /tmp: WorkingDirectory=/tmp, "
            "Environment=LG_WD=/tmp)"
        ) from None
    finally:
        if cwd is not None and _cwd() != cwd:
            with contextlib.suppress(OSError):
                os.chdir(cwd)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed
        return None


def _why_not_writable(directory: str) -> str:
    if not os.path.isdir(directory):
        return f"{directory} is not a directory" if os.path.exists(directory) else f"{directory} does not exist"
    if not os.access(directory, os.W_OK):
        try:
            read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        return f"{directory} is {'on a read-only file system' if read_only else 'not writable by this user'}"
    return f"lgpio could not create a FIFO in {directory}"


# --- the factory -------------------------------------------------------------------------------------------------


def open_factory(chip: int | None = None) -> Factory:
    """gpiozero's LGPIOFactory on /dev/gpiochip<chip> (None: gpiozero picks, see `auto_chip`), or a PinFactoryError
    saying why not: lgpio missing, its notification pipe, the chip node missing or not permitted, not a Pi."""
    lgpio = import_lgpio()
    from gpiozero.exc import PinError
    from gpiozero.pins.lgpio import LGPIOFactory

    try:
        factory = LGPIOFactory(chip=chip)
    except lgpio.error as exc:
        number = chip if chip is not None else auto_chip()
        raise PinFactoryError(PREFIX + chip_failure(number, str(exc))) from None
    except PinError as exc:  # gpiozero could not tell the board (it does so to pick the chip)
        raise PinFactoryError(PREFIX + not_a_pi(exc)) from None
    try:
        factory.board_info  # noqa: B018  (gpiozero numbers the pins by board: a factory that cannot is no use)
    except Exception as exc:
        with contextlib.suppress(Exception):
            factory.close()
        raise PinFactoryError(PREFIX + not_a_pi(exc)) from None
    return factory


def not_a_pi(exc: BaseException) -> str:
    return f"gpiozero cannot tell which Raspberry Pi this is ({exc}); lgpio's pin factory needs a Raspberry Pi"


def auto_chip() -> int:
    """The chip gpiozero 2.0.1's LGPIOFactory opens when none is configured: 4 on a Pi 5 that has /dev/gpiochip4
    (kernels before 6.6.45 numbered its RP1 chip 4), else 0."""
    from gpiozero.pins.local import get_pi_revision

    try:
        revision = get_pi_revision()
    except Exception:  # not a Pi: gpiozero would refuse; 0 is the only chip there can be
        return 0
    return 4 if (revision & 0xFF0) >> 4 == PI5_BOARD_TYPE and device_node(4).exists() else 0


def chip_failure(chip: int, lgpio_says: str) -> str:
    """Why lgpio could not open /dev/gpiochip<chip>, found by opening it the same way (lgpio only says it could
    not); harmless on a real chip: an open file of a gpiochip claims nothing."""
    node = device_node(chip)
    said = lgpio_says.strip("'\"")
    if not node.exists():
        chips = sorted(p.name for p in Path("/dev").glob("gpiochip*"))
        if chips:
            return (f"lgpio cannot open the GPIO chip: there is no {node} (there is {', '.join(chips)}: set "
                    "gpio.lgpio.chip to one of them, or leave it unset for gpiozero to pick)")
        return f"lgpio cannot open the GPIO chip: there is no {node}, nor any /dev/gpiochip*: is this a Raspberry Pi?"
    try:
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EACCES:
            return f"lgpio cannot open the GPIO chip: permission denied on {node} ({_owner(node)}){_groups_hint(node)}"
        if exc.errno == errno.EPERM:
            return (f"lgpio cannot open the GPIO chip: the device cgroup denies {node} ({_major(node)}): the unit "
                    "needs DeviceAllow=char-gpiochip rw (as shipped), which allows only a major that /proc/devices "
                    "names gpiochip")
        return f"lgpio cannot open the GPIO chip {node}: {exc.strerror or exc}"
    os.close(fd)
    return f"lgpio cannot use the GPIO chip {node} ({said}; it opens, but lgpio refused it: is it a gpiochip?)"


def _owner(node: Path) -> str:
    try:
        st = node.stat()
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"{_name(pwd.getpwuid, st.st_uid)}:{_name(grp.getgrgid, st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}"


def _groups_hint(node: Path) -> str:
    try:
        group = _name(grp.getgrgid, node.stat().st_gid)
    except OSError:
        return ""
    return (f": run as a member of group {group} (the unit has SupplementaryGroups=gpio, and install.sh puts the "
            "rover-safety user in gpio, which owns /dev/gpiochip* on Raspberry Pi OS)")


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _major(node: Path) -> str:
    try:
        major = os.major(node.stat().st_rdev)
    except OSError:
        return "?"
    names = [line.split(None, 1)[1] for line in _char_devices() if line.split(None, 1)[0] == str(major)]
    return f"character device major {major}, which /proc/devices calls {' or '.join(names) or 'nothing'}"


def _char_devices() -> list[str]:
    try:
        text = Path("/proc/devices").read_text()
    except OSError:
        return []
    section = text.split("Block devices:")[0].split("Character devices:")[-1]
    return [line.strip() for line in section.splitlines() if len(line.split()) == 2]


def _module(factory: Factory) -> ModuleType:
    """The lgpio module gpiozero's pins call (the one its factory was made with)."""
    module = sys.modules.get(type(factory).__module__)
    found = getattr(module, "lgpio", None)
    return found if isinstance(found, ModuleType) else import_lgpio()


def chip_handle(factory: Factory) -> int:
    """The factory's open chip handle (gpiozero's LGPIOFactory keeps it in ``_handle``; its pins use it so)."""
    handle = getattr(factory, "_handle", None)
    if not isinstance(handle, int):
        raise PinFactoryError("lost the GPIO backend (lgpio): the chip is closed")
    return handle


class LgpioOutputs:
    """One lgpio call per output on the factory's own chip handle: ``tx_pwm(h, pin, freq, 0)`` for a PWM output,
    ``gpio_write`` for the others. gpiozero's pin path costs a ``gpio_get_mode`` more per digital write, and its
    device and property layers besides; the call goes straight to lgpio (which locks the handle for it)."""

    def __init__(self, factory: Factory) -> None:
        self._factory = factory
        self._lgpio = _module(factory)

    def off(self, output: Any) -> None:
        handle = chip_handle(self._factory)
        pin: Any = getattr(output.device, "pin", None)
        running = getattr(pin, "_pwm", None) if output.pwm else None  # gpiozero's (frequency, duty %) while PWM runs
        if running is not None:
            frequency = running[0]
            self._lgpio.tx_pwm(handle, output.bcm, frequency, 0)
            pin._pwm = (frequency, 0)  # gpiozero reads a PWM pin's state from it: keep its view true
        else:
            self._lgpio.gpio_write(handle, output.bcm, 1 if output.off_high else 0)


# --- safe-stop -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffLine:
    """One output for safe-stop to drive off: its name for the log, BCM line and off level."""

    label: str
    bcm: int
    level: int


def claim_off(lines: Sequence[OffLine], chip: int | None, *, busy_wait: float = BUSY_WAIT) -> list[str]:
    """Claim every line as an output at its off level on a fresh chip handle, in order, then release them all.

    A dead process's lines are free for the taking and the claim itself sets the level, so this drives low even a
    line whose owner died mid-PWM with it high. A line still held (by a live process: the daemon itself, if it is
    running) cannot be claimed: it is retried for `busy_wait` seconds (a process that is exiting lets go), then
    reported, after every other line is off. Released lines keep their last level (the kernel's rule; on a Pi 5 the
    board's pull-downs hold a line off should it become an input). Returns what it did, line by line.
    """
    try:
        lgpio = import_lgpio()
    except PinFactoryError as exc:  # safe-stop names no config key: it goes by the record as much as the config
        raise PinFactoryError(str(exc).removeprefix(PREFIX)) from None
    number = chip if chip is not None else auto_chip()
    try:
        handle = lgpio.gpiochip_open(number)
    except lgpio.error as exc:
        raise PinFactoryError(chip_failure(number, str(exc))) from None
    done: list[str] = []
    pending = list(lines)
    failed: dict[str, str] = {}
    try:
        deadline = time.monotonic() + busy_wait
        while pending:
            busy = []
            for line in pending:
                try:
                    lgpio.gpio_claim_output(handle, line.bcm, line.level)
                except lgpio.error as exc:
                    if "busy" in str(exc).lower():
                        busy.append(line)
                    else:
                        failed[line.label] = str(exc).strip("'\"")
                    continue
                done.append(f"{line.label} (GPIO{line.bcm}) -> {'high' if line.level else 'low'}")
            pending = busy
            if pending and time.monotonic() >= deadline:
                for line in pending:
                    failed[line.label] = "held by another process"
                break
            if pending:
                time.sleep(0.01)
    finally:
        with contextlib.suppress(Exception):
            lgpio.gpiochip_close(handle)
    if failed:
        what = "; ".join(f"{label}: {why}" for label, why in failed.items())
        hint = (" (is the daemon still running? it holds its lines while it lives; `systemctl stop rover-safety` "
                "drives every output off itself)" if "held by another process" in failed.values() else "")
        raise PinFactoryError(f"lgpio on /dev/gpiochip{number}: {len(done)} of {len(lines)} outputs off; "
                              f"could not claim {what}{hint}")
    return done
