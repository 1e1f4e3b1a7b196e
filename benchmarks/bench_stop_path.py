"""The stop path on pigpio and on lgpio, per wiring: calls, and time from stop() to the last off call.

    python benchmarks/bench_stop_path.py [--stops 300] [--backend pigpio|lgpio|both]

Runs the pigpiod emulator (tests/support/pigpiod_emulator.py) as a separate process on loopback, so that the client's
timing is not shared with the emulator's GIL, and reads its command log (time.monotonic() of each request, the
same clock as ours). For each wiring, a motor is driven (alternately forward and reverse) and stopped `--stops`
times, on two paths:

- rover-safety: `Motor.stop()` (PWM 0 on the PWM outputs first, then direction low and enables inactive, one
  pigpiod command per output on the factory's connection);
- gpiozero: its own classes on the same pins: `Motor(a, b, pwm=True)` for a+b, `PhaseEnableMotor(dir, pwm)` for
  dir+pwm, and for a+b+pwm (no gpiozero class) `.off()` on a PWMOutputDevice and two DigitalOutputDevices.

For each stop: the commands sent between the stop() call and its return, the time from the call to the last command
that drove an output off (as the emulator saw it arrive), and the time to return. Prints a Markdown table with
p50/p99 (nearest rank) in microseconds, and the floor: one raw `pi.set_PWM_dutycycle(pin, 0)` round trip. A stop in
which no off command was seen (or an expiry with no duty 0) has no such time: it is left out of that figure and
counted beside it ("k of n with no off command: not counted").

`Motor.stop()` is what a stop thread runs. A session's expiry does more: the deadline thread first cuts the PWM
outputs itself (`Motor.cut_power()`, duty 0, no driver lock), then hands `Motor.stop()` to a stop thread. A second
table runs that path through a `SessionManager` as the daemon builds it (real-time deadline and stop threads): each
of `--expiries` sessions drives the motor and lapses after `--window`; from each deadline, the commands sent until
the stop thread's stop() returned, the time to the first duty-0 command (the cut), to the last off command, and to
the stop's end (the manager's own `StopReport.latency`). Nothing else runs in this process: no gRPC, no GIL
contention; this is what the pigpiod round trips add.

On lgpio (a Raspberry Pi 5's only backend) the same rows run on gpiozero's own LGPIOFactory over the fake lgpio
(tests/support/fake_lgpio), installed in this process: lgpio is a local library, so the stop is local calls, no
round trip. Every lgpio call is counted (gpiozero's and ours), and the fake logs each call that changed a line with
time.monotonic_ns(): call -> last off call is read from that log. Besides, from the fake's `settled_at`: when the
line really follows, since lg's software PWM takes a new duty at the end of the period that is running (the fake
takes the worst case, one whole period: 1250 us at 800 Hz). The fake's calls cost what the fake costs (a lock and a
write to a shared file, in Python); the real lgpio is C, so these are an upper bound for the calls themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pigpio
from gpiozero import DigitalOutputDevice, PhaseEnableMotor, PWMOutputDevice
from gpiozero import Motor as GpiozeroMotor
from rover_safety.config import MotorConfig, MotorPins
from rover_safety.daemon.realtime import realtime_thread
from rover_safety.drivers import Motor, open_factory
from rover_safety.sessions import LoopHooks, SessionEvent, SessionExpired, SessionManager

from benchmarks.stats import pct
from tests.support.fake_lgpio import FakeChip, create, installed, pi_revision
from tests.support.pigpiod_emulator import EmulatorClient

PWM, WRITE = 5, 4  # pigpiod command numbers


@dataclass
class Case:
    name: str
    pins: MotorPins
    gpiozero: str  # what gpiozero offers for this wiring


CASES = [
    Case("a+b+pwm", MotorPins(a=17, b=27, pwm=22), "PWMOutputDevice + 2 DigitalOutputDevice, .off() each"),
    Case("a+b+pwm, en_high+en_low", MotorPins(a=17, b=27, pwm=22, en_high=23, en_low=24), "(no enables)"),
    Case("dir+pwm", MotorPins(dir=5, pwm=6), "PhaseEnableMotor(phase=dir, enable=pwm).stop()"),
    Case("dir+pwm, en_high", MotorPins(dir=5, pwm=6, en_high=13), "(no enables)"),
    Case("a+b", MotorPins(a=20, b=21), "Motor(forward=a, backward=b, pwm=True).stop()"),
    Case("a+b, en_low", MotorPins(a=20, b=21, en_low=16), "(enable stays on in gpiozero)"),
]


@dataclass
class Stats:
    commands: list[int]
    to_last_off: list[float]  # seconds from the stop() call to the last off command's arrival (where one was seen)
    to_return: list[float]
    to_settled: list[float] = field(default_factory=list)  # lgpio: to the last PWM line's settled_at
    missing_off: int = 0  # stops in which no off command was seen: left out of to_last_off, reported beside it
    missing_cut: int = 0  # expiries in which no duty 0 was seen: left out of the cut's figures, reported beside them


def is_off(cmd: Any) -> bool:
    """Inside a stop, every WRITE drives an output to its off level (en_low: high) and PWM 0 cuts power."""
    return bool((cmd.cmd == PWM and cmd.p2 == 0) or cmd.cmd == WRITE)


def measure(emulator: Any, stops: int, drive: Callable[[float], object], stop: Callable[[], object]) -> Stats:
    windows: list[tuple[float, float]] = []
    for i in range(stops):
        drive(0.6 if i % 2 == 0 else -0.6)
        called = time.monotonic()
        stop()
        windows.append((called, time.monotonic()))
    log = emulator.log(since=windows[0][0])
    stats = Stats([], [], [])
    j = 0
    for called, returned in windows:
        while j < len(log) and log[j].t < called:
            j += 1
        inside = []
        while j < len(log) and log[j].t <= returned:
            inside.append(log[j])
            j += 1
        offs = [c.t for c in inside if is_off(c)]
        stats.commands.append(len(inside))
        if offs:
            stats.to_last_off.append(max(offs) - called)
        else:
            stats.missing_off += 1
        stats.to_return.append(returned - called)
    return stats


Path3 = tuple[Callable[[float], None], Callable[[], object], Callable[[], None]]  # drive(power), stop(), close()


def rover_safety_path(factory: Any, case: Case) -> Path3:
    motor = Motor(MotorConfig("m", case.pins), factory)
    return motor.set_power, motor.stop, motor.close


def gpiozero_path(factory: Any, case: Case) -> Path3:
    p = case.pins
    if p.wiring == "a+b":
        motor = GpiozeroMotor(forward=p.a, backward=p.b, pwm=True, pin_factory=factory)

        def drive_ab(power: float) -> None:
            motor.value = power

        return drive_ab, motor.stop, motor.close
    if p.wiring == "dir+pwm":
        pe = PhaseEnableMotor(phase=p.dir, enable=p.pwm, pwm=True, pin_factory=factory)

        def drive_pe(power: float) -> None:
            pe.value = power

        return drive_pe, pe.stop, pe.close
    speed = PWMOutputDevice(p.pwm, pin_factory=factory)
    a, b = DigitalOutputDevice(p.a, pin_factory=factory), DigitalOutputDevice(p.b, pin_factory=factory)

    def drive(power: float) -> None:
        (a if power > 0 else b).on()
        (b if power > 0 else a).off()
        speed.value = abs(power)

    def stop() -> None:
        speed.off()
        a.off()
        b.off()

    def close() -> None:
        for device in (speed, a, b):
            device.close()

    return drive, stop, close


def floor(emulator: Any, host: str, stops: int) -> Stats:
    pi = pigpio.pi(host, emulator.port)
    try:
        pi.set_PWM_dutycycle(18, 0)
        return measure(emulator, stops, lambda power: pi.set_PWM_dutycycle(18, 100),
                       lambda: pi.set_PWM_dutycycle(18, 0))
    finally:
        pi.stop()


def expiries(emulator: Any, factory: Any, case: Case, count: int, window: float) -> tuple[Stats, list[float]]:
    """`count` sessions that each drive the motor and lapse; per expiry, from its deadline: the commands sent until
    the stop was over, the time to the last off command and to the stop's end; and the times to the first duty 0."""
    motor = Motor(MotorConfig("m", case.pins), factory)
    ended: queue.Queue[SessionEvent] = queue.Queue()
    manager = SessionManager({"m": motor}, window, hooks=LoopHooks(thread_setup=realtime_thread),
                             on_event=lambda e: ended.put(e) if e.kind == "expired" else None)
    spans: list[tuple[float, float, float]] = []  # deadline, the stop's end (StopReport.latency), next command
    try:
        for i in range(count):
            session = manager.start()
            manager.associate_resource(session.id, "m")
            motor.set_power(0.6 if i % 2 == 0 else -0.6)
            event = ended.get(timeout=5)
            assert event.session_id == session.id and event.latency is not None, event
            spans.append((session.deadline, session.deadline + event.latency, time.monotonic()))
    finally:
        manager.close()
        motor.close()
    log = emulator.log(since=spans[0][0])
    stats, cut = Stats([], [], []), []
    for deadline, finished, until in spans:
        inside = [c for c in log if deadline <= c.t <= until]
        offs = [c.t for c in inside if is_off(c)]
        cuts = [c.t for c in inside if c.cmd == PWM and c.p2 == 0]
        stats.commands.append(len(inside))
        if offs:
            stats.to_last_off.append(max(offs) - deadline)
        else:
            stats.missing_off += 1
        stats.to_return.append(finished - deadline)
        if cuts:
            cut.append(min(cuts) - deadline)
        else:
            stats.missing_cut += 1
    return stats, cut


def us(values: list[float]) -> str:
    """p50 / p99 in microseconds ("–" for none)."""
    if not values:
        return "–"
    return f"{1e6 * pct(values, 0.5):.0f} / {1e6 * pct(values, 0.99):.0f}"


def missing(n: int, of: int, what: str) -> str:
    """The measurements a figure leaves out, beside it: ' (2 of 300 with no off command: not counted)'."""
    return f" ({n} of {of} with no {what}: not counted)" if n else ""


def last_off(s: Stats, what: str = "off command") -> str:
    return us(s.to_last_off) + missing(s.missing_off, len(s.commands), what)


def the_cut(s: Stats, cut: list[float]) -> str:
    return us(cut) + missing(s.missing_cut, len(s.commands), "duty 0")


def count(s: Stats) -> str:
    commands = sorted(set(s.commands))
    return str(commands[0]) if len(commands) == 1 else f"{commands[0]}..{commands[-1]}"


def row(name: str, what: str, s: Stats) -> str:
    return f"| {name} | {what} | {count(s)} | {last_off(s)} | {us(s.to_return)} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--stops", type=int, default=300, help="stops per wiring and path (default 300)")
    ap.add_argument("--expiries", type=int, default=100, help="session expiries per wiring (default 100)")
    ap.add_argument("--window", type=float, default=0.02, help="their heartbeat window, seconds (default 0.02)")
    ap.add_argument("--backend", choices=("pigpio", "lgpio", "both"), default="both", help="default both")
    args = ap.parse_args(argv)
    if args.backend in ("pigpio", "both"):
        pigpio_tables(args)
    if args.backend in ("lgpio", "both"):
        if args.backend == "both":
            print()
        lgpio_tables(args)
    return 0


def pigpio_tables(args: argparse.Namespace) -> None:
    host = "127.0.0.1"
    with EmulatorClient.spawn(host=host) as emulator:
        print(f"# stop path on pigpio: {args.stops} stops per row, pigpiod emulator in its own process on loopback")
        print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
              f"{time.strftime('%Y-%m-%d')}")
        print()
        print("| wiring | path | pigpiod commands per stop | call -> last off command, us p50 / p99 "
              "| call -> return, us p50 / p99 |")
        print("|---|---|---|---|---|")
        print(row("(floor)", "one raw `pi.set_PWM_dutycycle(pin, 0)`", floor(emulator, host, args.stops)))
        for case in CASES:
            for path, build in (("rover-safety `Motor.stop()`", rover_safety_path), ("gpiozero", gpiozero_path)):
                if path == "gpiozero" and case.gpiozero.startswith("("):
                    continue  # gpiozero has no enables to turn off: the row without enables compares
                factory = open_factory("pigpio", host, emulator.port)
                try:
                    drive, stop, close = build(factory, case)
                    stats = measure(emulator, args.stops, drive, stop)
                    close()
                finally:
                    factory.close()
                outputs = len(case.pins.used())
                what = f"{path} ({outputs} outputs)" if path != "gpiozero" else f"gpiozero: {case.gpiozero}"
                print(row(case.name, what, stats))
                emulator.clear_log()
        print()
        print(f"# expiry path: {args.expiries} session expiries per row (window {args.window * 1000:g} ms), "
              "SessionManager with real-time deadline and stop threads: cut_power() then stop()")
        print()
        print("| wiring | pigpiod commands per expiry | deadline -> duty 0 (the cut), us p50 / p99 "
              "| deadline -> last off command, us p50 / p99 | deadline -> stop() done, us p50 / p99 |")
        print("|---|---|---|---|---|")
        for case in CASES:
            factory = open_factory("pigpio", host, emulator.port)
            try:
                stats, cut = expiries(emulator, factory, case, args.expiries, args.window)
            finally:
                factory.close()
            print(f"| {case.name} | {count(stats)} | {the_cut(stats, cut)} | {last_off(stats)} | "
                  f"{us(stats.to_return)} |")
            emulator.clear_log()


# --- lgpio ------------------------------------------------------------------------------------------------------

# lg's PWM thread sleeps up to 20 ms between edges: a PWM just started may take that long to show its first edge
# (the fake models it), so each motor runs a moment before it is measured, as a motor that was driving.
PWM_START = 0.025
LGPIO_CALLS = ("tx_pwm", "gpio_write", "gpio_read", "gpio_get_mode", "gpio_claim_output", "gpio_claim_input",
               "gpio_free")


class CallCounter:
    """Counts every lgpio call made through the module (gpiozero's pins and rover-safety's off path look each
    function up on it at call time)."""

    def __init__(self, module: ModuleType) -> None:
        self.calls = 0
        self._module = module
        self._saved = {name: getattr(module, name) for name in LGPIO_CALLS}
        for name, function in self._saved.items():
            setattr(module, name, self._counted(function))

    def _counted(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls += 1
            return function(*args)

        return call

    def restore(self) -> None:
        for name, function in self._saved.items():
            setattr(self._module, name, function)


@contextlib.contextmanager
def fake_lgpio() -> Iterator[tuple[ModuleType, FakeChip]]:
    """The fake lgpio as this process's lgpio, on a Pi 5, with a fresh chip (a regular file for its node)."""
    with tempfile.TemporaryDirectory(prefix="bench-lgpio-") as directory:
        chip_path = Path(directory) / "chip.state"
        create(chip_path, events=1 << 20)
        (Path(directory) / "gpiochip0").touch()
        with installed(chip_path, device=str(Path(directory) / "gpiochip{chip}")) as module, pi_revision(), \
                FakeChip(chip_path) as chip:
            yield module, chip


def lgpio_off(event: Any) -> bool:
    """Inside a stop every write drives an output to its off level, and a PWM duty 0 (at a running frequency)
    takes the power away."""
    return bool(event.kind == "write" or (event.kind == "pwm" and event.frequency > 0 and event.duty == 0.0))


def measure_lgpio(chip: FakeChip, counter: CallCounter, stops: int, drive: Callable[[float], object],
                  stop: Callable[[], object], pwm_pins: list[int]) -> Stats:
    stats = Stats([], [], [], [])
    time.sleep(PWM_START)
    for i in range(stops):
        drive(0.6 if i % 2 == 0 else -0.6)
        time.sleep(0.002)  # past the PWM period the drive's duty change started, as a motor that ran a moment
        before = counter.calls
        called_ns = time.monotonic_ns()
        stop()
        returned_ns = time.monotonic_ns()
        stats.commands.append(counter.calls - before)
        offs = [e.t_ns for e in chip.events_since(called_ns) if e.t_ns <= returned_ns and lgpio_off(e)]
        if offs:
            stats.to_last_off.append((max(offs) - called_ns) / 1e9)
        else:
            stats.missing_off += 1
        stats.to_return.append((returned_ns - called_ns) / 1e9)
        stats.to_settled.append((max(chip.line(p).settled_at for p in pwm_pins) - called_ns) / 1e9)
    return stats


def lgpio_floor(module: ModuleType, factory: Any, chip: FakeChip, counter: CallCounter, stops: int) -> Stats:
    handle = factory._handle
    module.gpio_claim_output(handle, 18, 0)
    module.tx_pwm(handle, 18, 800, 0)
    try:
        return measure_lgpio(chip, counter, stops, lambda power: module.tx_pwm(handle, 18, 800, 60),
                             lambda: module.tx_pwm(handle, 18, 800, 0), [18])
    finally:
        module.tx_pwm(handle, 18, 0, 0)
        module.gpio_free(handle, 18)


def pwm_pins_of(pins: MotorPins) -> list[int]:
    used = pins.used()
    return [used["a"], used["b"]] if pins.wiring == "a+b" else [used["pwm"]]


def lgpio_expiries(chip: FakeChip, counter: CallCounter, factory: Any, case: Case, count_: int,
                   window: float) -> tuple[Stats, list[float]]:
    """As `expiries`, read from the fake's log: from each deadline, the lgpio calls until the stop was over, the
    time to the first duty 0 (the cut), to the last off call, to the stop's end, and to the PWM lines' settled_at."""
    motor = Motor(MotorConfig("m", case.pins), factory)
    ended: queue.Queue[SessionEvent] = queue.Queue()
    manager = SessionManager({"m": motor}, window, hooks=LoopHooks(thread_setup=realtime_thread),
                             on_event=lambda e: ended.put(e) if e.kind == "expired" else None)
    pwm = pwm_pins_of(case.pins)
    stats, cut = Stats([], [], [], []), list[float]()
    time.sleep(PWM_START)
    try:
        i = 0
        while len(stats.commands) < count_:
            i += 1
            session = manager.start()
            try:
                manager.associate_resource(session.id, "m")
                motor.set_power(0.6 if i % 2 == 0 else -0.6)
            except SessionExpired:  # the machine stalled past the window before it could drive: not an expiry
                continue
            before = counter.calls
            event = ended.get(timeout=5)
            assert event.session_id == session.id and event.latency is not None, event
            until_ns = time.monotonic_ns()
            calls = counter.calls - before
            deadline_ns = round(session.deadline * 1e9)
            inside = [e for e in chip.events_since(deadline_ns) if e.t_ns <= until_ns]
            offs = [e.t_ns for e in inside if lgpio_off(e)]
            cuts = [e.t_ns for e in inside if e.kind == "pwm" and e.duty == 0.0]
            stats.commands.append(calls)
            if offs:
                stats.to_last_off.append((max(offs) - deadline_ns) / 1e9)
            else:
                stats.missing_off += 1
            stats.to_return.append(event.latency)
            if cuts:
                cut.append((min(cuts) - deadline_ns) / 1e9)
            else:
                stats.missing_cut += 1
            stats.to_settled.append((max(chip.line(p).settled_at for p in pwm) - deadline_ns) / 1e9)
    finally:
        manager.close()
        motor.close()
    return stats, cut


def lgpio_tables(args: argparse.Namespace) -> None:
    with fake_lgpio() as (module, chip):
        print(f"# stop path on lgpio: {args.stops} stops per row, gpiozero's LGPIOFactory on the fake lgpio in this "
              "process (local calls, as on a Pi 5)")
        print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
              f"{time.strftime('%Y-%m-%d')}")
        print()
        print("# settled: the fake's worst case, one whole period of the running PWM (800 Hz: 1250 us; gpiozero's own "
              "classes: 100 Hz, 10 ms)")
        print()
        print("| wiring | path | lgpio calls per stop | call -> last off call, us p50 / p99 "
              "| call -> return, us p50 / p99 | call -> PWM line settled, us p50 / p99 |")
        print("|---|---|---|---|---|---|")
        factory = open_factory("lgpio")
        counter = CallCounter(module)
        try:
            floor_stats = lgpio_floor(module, factory, chip, counter, args.stops)
            print(lgpio_row("(floor)", "one raw `lgpio.tx_pwm(h, pin, 800, 0)`", floor_stats))
            for case in CASES:
                for path, build in (("rover-safety `Motor.stop()`", rover_safety_path), ("gpiozero", gpiozero_path)):
                    if path == "gpiozero" and case.gpiozero.startswith("("):
                        continue
                    drive, stop, close = build(factory, case)
                    stats = measure_lgpio(chip, counter, args.stops, drive, stop, pwm_pins_of(case.pins))
                    close()
                    outputs = len(case.pins.used())
                    what = f"{path} ({outputs} outputs)" if path != "gpiozero" else f"gpiozero: {case.gpiozero}"
                    print(lgpio_row(case.name, what, stats))
            print()
            print(f"# expiry path on lgpio: {args.expiries} session expiries per row (window {args.window * 1000:g} "
                  "ms), SessionManager with real-time deadline and stop threads: cut_power() then stop()")
            print()
            print("| wiring | lgpio calls per expiry | deadline -> duty 0 (the cut), us p50 / p99 "
                  "| deadline -> last off call, us p50 / p99 | deadline -> stop() done, us p50 / p99 "
                  "| deadline -> PWM line settled, us p50 / p99 |")
            print("|---|---|---|---|---|---|")
            for case in CASES:
                stats, cut = lgpio_expiries(chip, counter, factory, case, args.expiries, args.window)
                print(f"| {case.name} | {count(stats)} | {the_cut(stats, cut)} | {last_off(stats, 'off call')} | "
                      f"{us(stats.to_return)} | {us(stats.to_settled)} |")
        finally:
            counter.restore()
            factory.close()


def lgpio_row(name: str, what: str, s: Stats) -> str:
    return (f"| {name} | {what} | {count(s)} | {last_off(s, 'off call')} | {us(s.to_return)} | "
            f"{us(s.to_settled)} |")


if __name__ == "__main__":
    sys.exit(main())
