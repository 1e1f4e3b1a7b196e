"""Helpers for the hardware-in-the-loop tests: a pigpiod to test against, pigpio reads of its pins, a gRPC client,
and `rover-safety` run as a real process.

The pigpiod is the emulator (tests/support/pigpiod_emulator.py) by default; with ``ROVER_SAFETY_HIL=1`` the tests
that take the ``gpio`` fixture also run against a real pigpiod at ``ROVER_SAFETY_PIGPIO_HOST``:
``ROVER_SAFETY_PIGPIO_PORT`` (default localhost:8888), reading outputs back with pigpio's own reads (get_mode, read,
get_PWM_dutycycle). What only the emulator can tell (its command log with timestamps, killing pigpiod) is used by
emulator-only tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pigpio
from rover_safety.drivers.pins.pigpio import stop_connection

from .daemons import example_config
from .net import free_port
from .pigpiod_emulator import Cmd, Command, PigpiodEmulator
from .waiting import poll

TESTS = Path(__file__).parent
F_SETPIPE_SZ = 1031  # fcntl: a pipe's capacity (Linux)
HIL = os.environ.get("ROVER_SAFETY_HIL") == "1"
HIL_HOST = os.environ.get("ROVER_SAFETY_PIGPIO_HOST", "localhost")
HIL_PORT = int(os.environ.get("ROVER_SAFETY_PIGPIO_PORT", "8888"))

# The example config's motors (config/example.yaml): left is a+b+pwm, right is dir+pwm.
LEFT = {"a": 17, "b": 27, "pwm": 22}
RIGHT = {"dir": 26, "pwm": 19}
EXAMPLE_PINS = {**{f"left.{r}": p for r, p in LEFT.items()}, **{f"right.{r}": p for r, p in RIGHT.items()}}
# A third motor on the a+b wiring with both enables, appended to the example config by `with_aux()`.
AUX = {"a": 20, "b": 21, "en_high": 13, "en_low": 16}
AUX_COMPONENT = """  - name: aux
    type: motor
    model: gpio
    attributes: {pins: {a: 20, b: 21, en_high: 13, en_low: 16}, max_rpm: 120}
"""
ALL_MOTOR_PINS = {**EXAMPLE_PINS, **{f"aux.{r}": p for r, p in AUX.items()}}
# Pins any HIL test drives (docs/HARDWARE.md lists them): reset to inputs after each hardware test.
ALL_TEST_PINS = (5, 6, 13, 16, 17, 19, 20, 21, 22, 23, 24, 26, 27)
INPUT, OUTPUT = pigpio.INPUT, pigpio.OUTPUT


def on_raspberry_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


@dataclass(frozen=True)
class Out:
    """One output as pigpio reads it back: mode (0 input, 1 output), level, and PWM duty 0..1 (None: not PWM)."""

    mode: int
    level: int
    duty: float | None

    def is_off(self, level: int = 0) -> bool:
        """Driven (an output) at its off level, with no PWM running."""
        return self.mode == OUTPUT and self.level == level and not self.duty


def _quiet_pi(host: str, port: int) -> pigpio.pi:
    with contextlib.redirect_stdout(io.StringIO()):
        return pigpio.pi(host, port, show_errors=False)


class Gpio:
    """A pigpiod under test, the emulator or a real one, and a pigpio connection that reads its pins back."""

    def __init__(self, host: str, port: int, emu: PigpiodEmulator | None = None) -> None:
        self.host, self.port, self.emu = host, port, emu
        self.kind = "emulator" if emu is not None else "hardware"
        self.reader = _quiet_pi(host, port)
        assert self.reader.connected, f"cannot reach pigpiod at {host}:{port}"

    @property
    def emulated(self) -> bool:
        return self.emu is not None

    def read(self, gpio: int) -> Out:
        """pigpio's own reads of one pin (three or four round trips on the reader's connection)."""
        pi = self.reader
        try:
            duty: float | None = pi.get_PWM_dutycycle(gpio) / pi.get_PWM_range(gpio)
        except pigpio.error:
            duty = None  # not a PWM pin (pigpiod: PI_NOT_PWM_GPIO)
        # A pin running PWM reads 1 (as the emulator reports it): on a Pi its instantaneous level means nothing.
        level = 1 if duty else pi.read(gpio)
        return Out(pi.get_mode(gpio), level, duty)

    def read_all(self, pins: dict[str, int]) -> dict[str, Out]:
        return {role: self.read(pin) for role, pin in pins.items()}

    def frequency(self, gpio: int) -> int:
        return int(self.reader.get_PWM_frequency(gpio))

    # --- when an output went off ------------------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds; on the emulator re-checked after each command, else polled every ms."""
        if self.emu is not None:
            return self.emu.wait_for(predicate, timeout)
        return poll(predicate, timeout, 0.001)

    def state_now(self, gpio: int) -> Out:
        """Like read(), but on the emulator without sending a command (safe inside wait())."""
        if self.emu is not None:
            pin = self.emu.pin(gpio)
            duty = pin.duty_cycle if pin.function in ("pwm", "hw_pwm") else None
            return Out(pin.mode, 1 if duty else pin.level, duty)
        return self.read(gpio)

    def duty_now(self, gpio: int) -> float:
        """The pin's duty 0..1 (0 when not PWM); on the emulator without sending a command."""
        if self.emu is not None:
            return self.emu.pin(gpio).duty_cycle
        return self.read(gpio).duty or 0.0

    def off_windows(self, pins: Sequence[int], since: float, timeout: float) -> dict[int, tuple[float, float]]:
        """For each pin, (earliest, latest) time.monotonic() at which its PWM went to 0 after `since`.

        On the emulator both are the timestamp of the command that did it. On hardware this polls pigpio reads from
        now on: earliest is when the last read that still saw PWM started, latest when the first that saw 0 ended.
        """
        emu = self.emu
        if emu is not None:
            assert emu.wait_for(lambda: all(emu.pin(p).duty == 0 for p in pins), timeout), (
                f"PWM still running after {timeout} s: {[emu.pin(p).duty_cycle for p in pins]}")
            log = emu.commands_since(since)
            times = {p: first_off(log, p) for p in pins}
            assert None not in times.values(), f"no command drove these off after {since}: {times}"
            return {p: (t, t) for p, t in times.items() if t is not None}
        deadline = time.monotonic() + timeout
        last_on = dict.fromkeys(pins, since)
        found: dict[int, tuple[float, float]] = {}
        while len(found) < len(pins):
            for pin in pins:
                if pin in found:
                    continue
                started = time.monotonic()
                duty = self.read(pin).duty or 0.0
                ended = time.monotonic()
                if duty == 0:
                    found[pin] = (last_on[pin], ended)
                else:
                    last_on[pin] = started
                assert ended < deadline, f"GPIO{pin} still has PWM {duty:.0%} after {timeout} s"
        return found

    def kill_pigpiod(self) -> float:
        """The emulated pigpiod dies (every connection dropped, pin state kept); returns when.

        The reader's own connection is closed first, so that its pigpio notification thread does not spin here.
        """
        assert self.emu is not None, "only the emulator can be killed by a test"
        stop_connection(self.reader)
        died = time.monotonic()
        self.emu.stop()
        return died

    def commands_since(self, since: float) -> list[Command]:
        assert self.emu is not None, "only the emulator logs commands"
        return self.emu.commands_since(since)

    # --- clean-up -------------------------------------------------------------------------------------

    def reset(self, pins: Sequence[int] = ALL_TEST_PINS) -> None:
        """Leave the pins as inputs, PWM off (a real Pi's pins outlive the test; the board's pulls hold them off)."""
        with contextlib.suppress(Exception):
            for pin in pins:
                self.reader.set_mode(pin, INPUT)

    def close(self) -> None:
        stop_connection(self.reader)


def first_off(commands: Sequence[Command], gpio: int, level: int = 0) -> float | None:
    """Time of the first logged command that drove `gpio` to its off level: PWM duty 0 or a WRITE of `level`."""
    for c in commands:
        if c.p1 == gpio and c.result >= 0 and (
            (c.cmd == Cmd.PWM and c.p2 == 0) or (c.cmd == Cmd.WRITE and c.p2 == level)
        ):
            return c.t
    return None


@contextlib.contextmanager
def gpio_backend(kind: str) -> Iterator[Gpio]:
    """`emulator`: an in-process pigpiod emulator on loopback; `hardware`: the real pigpiod named by the env."""
    if kind == "hardware":
        gpio = Gpio(HIL_HOST, HIL_PORT)
        gpio.reset()
        try:
            yield gpio
        finally:
            gpio.reset()
            gpio.close()
        return
    with PigpiodEmulator() as emu:
        gpio = Gpio("127.0.0.1", emu.port, emu)
        try:
            yield gpio
        finally:
            gpio.close()


def pigpio_config(gpio: Gpio, heartbeat_window: str = "2s", extra: str = "") -> str:
    """The example config on pigpio pointed at `gpio`, on a free loopback port."""
    return example_config(heartbeat_window, "pigpio", extra, host=gpio.host, port=gpio.port)


def nowhere_config() -> tuple[str, int]:
    """The example config on pigpio pointed at a loopback port where no pigpiod listens; and that port."""
    port = free_port()
    return example_config("2s", "pigpio", host="127.0.0.1", port=port), port


def with_aux(config: str) -> str:
    """Add motor `aux` (a+b, en_high and en_low) to an example config, so that every kind of output is configured."""
    return config.rstrip("\n") + "\n" + AUX_COMPONENT


def off_levels_of(pins: dict[str, int]) -> dict[str, int]:
    """The off level of each output by role (`motor.en_low` is the only one off when high)."""
    return {role: 1 if role.endswith("en_low") else 0 for role in pins}


def assert_all_off(gpio: Gpio, pins: dict[str, int], wait: float = 0.0) -> None:
    """Every output is driven (an output pin) at its off level with no PWM: PWM 0, direction low, enables inactive.

    With `wait`, first wait up to that long for it (a stop cuts PWM first and the rest a moment later).
    """
    levels = off_levels_of(pins)
    if wait:
        gpio.wait(lambda: all(gpio.state_now(p).is_off(levels[r]) for r, p in pins.items()), wait)
    states = gpio.read_all(pins)
    bad = {role: s for role, s in states.items() if not s.is_off(levels[role])}
    assert not bad, f"outputs not off: {bad}"


def assert_off_or_released(gpio: Gpio, pins: dict[str, int]) -> None:
    """After the daemon ended: no PWM anywhere, and each pin either driven at its off level or released as an input
    (gpiozero's close; the driver board's pulls then hold it off; the emulator keeps the level it was driven to)."""
    levels = off_levels_of(pins)
    bad = {}
    for role, state in gpio.read_all(pins).items():
        if state.duty or ((state.mode == OUTPUT or gpio.emulated) and state.level != levels[role]):
            bad[role] = state
    assert not bad, f"outputs not off: {bad}"


def assert_off_before(gpio: Gpio, pins: dict[str, int], since: float, before: float) -> dict[str, float]:
    """From the emulator's log: each pin was driven to its off level after `since` and before `before`, and before
    it was released as an input. Returns when each went off."""
    log = gpio.commands_since(since)
    levels = off_levels_of(pins)
    times = {}
    for role, pin in pins.items():
        mine = [c for c in log if c.p1 == pin]
        released = next((i for i, c in enumerate(mine) if c.cmd == Cmd.MODES and c.p2 == INPUT), len(mine))
        t = first_off(mine[:released], pin, levels[role])
        assert t is not None, f"{role} (GPIO{pin}) was not driven off (before release) after {since}"
        assert t < before, f"{role} (GPIO{pin}) went off {1000 * (t - before):.1f} ms too late"
        times[role] = t
    return times


def connection_closed_at(gpio: Gpio, since: float) -> float | None:
    """When a pigpio client said goodbye (NC, sent by pigpio.pi.stop() just before it closes its sockets)."""
    return next((c.t for c in gpio.commands_since(since) if c.cmd == Cmd.NC), None)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rover.yaml"
    path.write_text(text)
    return path


# --- `rover-safety` as a process ---------------------------------------------------------------------

# The installed console script, as systemd runs it; from the interpreter itself if there is none beside it.
_SCRIPT = Path(sys.executable).parent / "rover-safety"
RUN_CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from rover_safety.daemon.cli import main; sys.exit(main())"]
INJECT = [sys.executable, str(TESTS / "hil_inject.py")]
LISTENING = re.compile(r"listening on [^ ]*:(\d+) ")


def cli_env() -> dict[str, str]:
    """The test's environment without systemd's variables, so the daemon logs plain lines to stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                                              "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rover_safety(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run `rover-safety ARGS` to completion (bounded); returns its exit code and output."""
    return subprocess.run([*RUN_CLI, *args], capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          stdin=subprocess.DEVNULL, check=False)


class Served:
    """`rover-safety serve --config PATH` (optionally with a fault injected) as a child process.

    stderr is read by a thread into `lines` (each with its arrival time); another thread reaps the process with
    wait4, recording when it ended, its exit code and the CPU it used. The command may run behind a `prefix` that
    execs it (ip netns exec, setpriv: the pid stays the daemon's) or be rewritten by `wrap` (e.g. into a private
    mount namespace); with `read_stderr=False` stderr is read only up to the "listening" line and then never again
    (a log nobody reads: with `pipe_size`, a small pipe that fills).
    """

    def __init__(self, config: Path, inject: str | None = None, *, prefix: Sequence[str] = (),
                 wrap: Callable[[list[str]], list[str]] | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, read_stderr: bool = True, pipe_size: int | None = None,
                 injector: Sequence[str] = INJECT) -> None:
        argv = [*prefix, *([*injector, inject] if inject else RUN_CLI), "serve", "--config", str(config)]
        environment = cli_env() if env is None else dict(env)
        self.proc = subprocess.Popen(wrap(argv) if wrap else argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                                     cwd=cwd)
        assert self.proc.stderr is not None
        if pipe_size is not None:
            fcntl.fcntl(self.proc.stderr.fileno(), F_SETPIPE_SZ, pipe_size)
        self.pid = self.proc.pid
        self.read_stderr = read_stderr
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self.ended_at: float | None = None
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # user + system CPU of the whole run, once it ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
            if not self.read_stderr and LISTENING.search(line):
                return  # from here on nobody reads the daemon's log

    def _reap(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        ended = time.monotonic()
        with self._changed:
            self.ended_at = ended
            self.returncode = os.waitstatus_to_exitcode(status)
            self.proc.returncode = self.returncode  # reaped here: Popen must not wait for it again
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def wait_line(self, pattern: str, timeout: float = 20) -> tuple[float, re.Match[str]]:
        """The first stderr line matching `pattern` (regex) and when it arrived; fails on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for t, line in self.lines:
                    if m := regex.search(line):
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0 or (self.ended_at is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r} (exit {self.returncode}):\n{self.text}")
                self._changed.wait(min(left, 0.1))

    def started(self, timeout: float = 30) -> Served:
        _, m = self.wait_line(LISTENING.pattern, timeout)
        self.port = int(m.group(1))
        return self

    def wait(self, timeout: float = 20) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: self.returncode is not None, timeout):
                raise AssertionError(f"rover-safety did not exit within {timeout} s:\n{self.text}")
        self._reader.join(5)
        assert self.returncode is not None
        return self.returncode

    def signal(self, sig: int) -> float:
        """Send a signal; returns when it was sent."""
        sent = time.monotonic()
        os.kill(self.proc.pid, sig)
        return sent

    def alive(self) -> bool:
        return self.returncode is None

    def expiries(self) -> list[str]:
        """The expiry lines the daemon logged so far."""
        with self._changed:
            return [line for _, line in self.lines if " expired: " in line]

    def cpu_now(self) -> float:
        """User + system CPU seconds used so far (from /proc; 10 ms resolution)."""
        return cpu_ticks(f"/proc/{self.proc.pid}/stat") / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self._reaper.join(10)
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def served(config: Path, inject: str | None = None, timeout: float = 30, **options: Any) -> Iterator[Served]:
    """A started `rover-safety serve` (options: see Served), killed (if still running) at the end whatever happens."""
    daemon = Served(config, inject, **options)
    try:
        yield daemon.started(timeout)
    finally:
        daemon.close()


def proc_stat(path: str | Path) -> list[str]:
    """The fields of a /proc/PID/stat (or /proc/PID/task/TID/stat) file after the command name: [0] is the state
    (field 3 in proc(5)), [11] utime, [12] stime, [16] nice, [38] the scheduling policy."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_ticks(path: str | Path) -> int:
    """User + system CPU time, in clock ticks, of the process or thread whose stat file `path` is."""
    fields = proc_stat(path)
    return int(fields[11]) + int(fields[12])


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "PinFactoryFallback" not in text, text

