"""The lgpio path without a Pi: the fake lgpio (tests/support/fake_lgpio) as the chip, `rover-safety` as a real
process on it, and reads of the lines (their state and the fake's log of every call, with CLOCK_MONOTONIC times).

A child process gets the fake through ``child_env()`` (on ``PYTHONPATH``, the chip state file, the device node,
``LG_WD``) and a Raspberry Pi 5's ``/proc/cpuinfo`` through ``pi_command()`` (a private mount namespace), which
gpiozero's ``LGPIOFactory`` needs to know the board. Nothing of the product is patched; faults are injected by
tests/support/lgpio_inject.py the way tests/support/hil_inject.py does for pigpio.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .daemons import example_config
from .fake_lgpio import Event, FakeChip, LineState, child_env, create, pi_command
from .hil import AUX, EXAMPLE_PINS, RUN_CLI, Served, cli_env

TESTS = Path(__file__).resolve().parent
INJECT = [sys.executable, str(TESTS / "lgpio_inject.py")]
ALL_PINS = {**EXAMPLE_PINS, **{f"aux.{r}": p for r, p in AUX.items()}}  # example + aux: every kind of output


@dataclass(frozen=True)
class Rig:
    """A fake chip for one test: its state file, the device node(s) lgpio opens, lg's working directory, and where
    the daemon records what it drives (``RUNTIME_DIRECTORY``, as systemd gives it) for safe-stop. With `real`, the
    real lgpio and chip of a Raspberry Pi instead (the hardware tests): no fake, no borrowed cpuinfo."""

    directory: Path
    state: Path
    device: str  # "{chip}" stands for the chip number
    workdir: Path
    runtime: Path
    real: bool = False

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The daemon's (or safe-stop's) environment: plain log lines, the fake, the record's directory."""
        if self.real:
            env = cli_env()
            env["LG_WD"] = str(self.workdir)
        else:
            env = child_env(self.state, device=self.device, workdir=self.workdir, base=cli_env())
        env["RUNTIME_DIRECTORY"] = str(self.runtime)
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def command(self, argv: Iterable[str]) -> list[str]:
        """`argv` in a private mount namespace that has a Pi 5's /proc/cpuinfo (on a real Pi: as it is)."""
        return list(argv) if self.real else pi_command(list(argv), self.directory)

    def reader(self) -> FakeChip:
        return FakeChip(self.state)


def make_rig(directory: Path, chips: Iterable[int] = (0,), real: bool = False) -> Rig:
    """A fake chip in `directory` (the chip numbers' nodes as regular files); `real`: only the directories."""
    workdir, runtime = directory / "lg", directory / "run"
    if real:
        workdir.mkdir()
        runtime.mkdir()
        return Rig(directory, directory / "no-chip-state", "/dev/gpiochip{chip}", workdir, runtime, real=True)
    create(directory / "chip.state")
    for n in chips:  # a regular file stands in for the node: the fake keeps the chip in the state file
        (directory / f"gpiochip{n}").touch()
    workdir.mkdir()
    runtime.mkdir()
    return Rig(directory, directory / "chip.state", str(directory / "gpiochip{chip}"), workdir, runtime)


def lgpio_config(heartbeat_window: str = "2s", extra: str = "", chip: int | None = None) -> str:
    """The example config on lgpio (a free loopback port), with `lgpio: {chip: N}` when a chip is given."""
    text = example_config(heartbeat_window, "lgpio", extra)
    if chip is not None:
        text = text.replace("  # lgpio: {chip: 0}", f"  lgpio: {{chip: {chip}}}")
        assert f"lgpio: {{chip: {chip}}}" in text, "config/example.yaml's lgpio line moved?"
    return text


@contextlib.contextmanager
def served(rig: Rig, config: Path, inject: str | None = None, timeout: float = 30,
           env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Iterator[Served]:
    """A started `rover-safety serve` on the fake chip, killed (if still running) at the end whatever happens."""
    daemon = Served(config, inject, wrap=rig.command, env=dict(env or rig.env()), cwd=cwd, injector=INJECT)
    try:
        yield daemon.started(timeout)
    finally:
        daemon.close()


def run(rig: Rig, *args: str, timeout: float = 30, env: Mapping[str, str] | None = None, on_a_pi: bool = True,
        ) -> subprocess.CompletedProcess[str]:
    """`rover-safety ARGS` to completion on the fake chip (bounded); `on_a_pi` False: without the Pi's cpuinfo."""
    argv = [*RUN_CLI, *args]
    return subprocess.run(rig.command(argv) if on_a_pi else argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(env or rig.env()), stdin=subprocess.DEVNULL, check=False)


# --- reading the lines ------------------------------------------------------------------------------------------


def off_level(role: str) -> int:
    """The off level of an output by role (`en_low` is the only one off when high)."""
    return 1 if role.endswith("en_low") else 0


def is_off(line: LineState, level: int) -> bool:
    """Driven (an output) at its off level with no power: no PWM, or PWM at duty 0 (a stopped motor's PWM line keeps
    running at 0, as on pigpio); a live owner's line or a released one."""
    return line.direction == "output" and line.level == level and not line.duty


def off_or_released(line: LineState, level: int) -> bool:
    """No power, and either driven at its off level or an input (gpiozero's close; the board's pulls hold it off)."""
    return not line.duty and (line.direction == "input" or line.level == level)


def drives_off(event: Event, level: int) -> bool:
    """An event that drove its line to `level` with nothing running: a PWM duty 0, a write or a claim at that level
    (not a PWM stop with frequency 0, which leaves the line wherever the PWM thread had it)."""
    if event.result < 0:
        return False
    if event.kind == "pwm":
        return event.frequency > 0 and event.duty == 0.0
    return event.kind in ("write", "claim_output") and event.level == level


def first_off(events: Iterable[Event], gpio: int, level: int) -> Event | None:
    return next((e for e in events if e.gpio == gpio and drives_off(e, level)), None)


def released_at(events: Iterable[Event], gpio: int, pid: int) -> Event | None:
    """When `pid` let go of the line: made it an input (gpiozero's close), freed it, or its chip was closed."""
    return next((e for e in events if e.gpio == gpio and e.pid == pid
                 and e.kind in ("claim_input", "free", "released", "reaped")), None)


def chip_closed_at(events: Iterable[Event], pid: int) -> Event | None:
    return next((e for e in events if e.kind == "close" and e.pid == pid), None)


def bad_lines(chip: FakeChip, pins: Mapping[str, int]) -> dict[str, LineState]:
    """The outputs that are not driven at their off level (PWM 0, direction low, en_high low, en_low high)."""
    return {role: chip.line(p) for role, p in pins.items() if not is_off(chip.line(p), off_level(role))}


def ns(seconds: float) -> int:
    return round(seconds * 1e9)
