"""The lgpio path (`pin_factory: lgpio`, the Raspberry Pi 5's only one) in this process, on the fake lgpio
(tests/support/fake_lgpio) with gpiozero's own LGPIOFactory unchanged on it: every wiring at the lines, the stop as
one lgpio call per output on the factory's chip handle, safe-stop's claims of the lines (a dead owner's included),
the chip that is opened, and every way opening it fails.

The lines are read from the fake's chip state (direction, level, PWM duty and frequency, owner) and its log of every
call (time.monotonic_ns(), pid, result). The daemon as a process on lgpio is tests/test_lgpio_daemon.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rover_safety.config import Config, MotorConfig, MotorPins
from rover_safety.drivers import Motor, PinFactoryError, open_factory, safe_stop
from rover_safety.drivers.outputs import outputs_for
from rover_safety.drivers.pins.lgpio import LgpioOutputs, auto_chip, chip_failure

from tests.support.fake_lgpio import DEAD_PID, FakeChip, child_env, installed, on_raspberry_pi, pi_revision
from tests.support.lgpio_daemon import Rig, first_off, make_rig, off_level, released_at

pytestmark = [
    pytest.mark.timeout(60),
    # the fake never shadows a Pi's real lgpio; there, tests/test_lgpio_hardware.py runs the real one
    pytest.mark.skipif(on_raspberry_pi(), reason="a Raspberry Pi: the fake lgpio stands in only where there is none"),
]

WIRINGS = {"a+b+pwm": {"a": 17, "b": 27, "pwm": 22}, "dir+pwm": {"dir": 5, "pwm": 6}, "a+b": {"a": 20, "b": 21}}
ENABLE_PINS = {"a+b+pwm": (23, 24), "dir+pwm": (13, 16), "a+b": (16, 13)}
ENABLES = ["", "en_high", "en_low", "en_high+en_low"]
FREQUENCY = 800.0


def wiring_pins(wiring: str, enables: str) -> MotorPins:
    pins = dict(WIRINGS[wiring])
    high, low = ENABLE_PINS[wiring]
    if "en_high" in enables:
        pins["en_high"] = high
    if "en_low" in enables:
        pins["en_low"] = low
    return MotorPins(**pins)


def pwm_roles(pins: MotorPins) -> set[str]:
    return {"a", "b"} if pins.wiring == "a+b" else {"pwm"}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path, chips=(0, 1))


@pytest.fixture
def lgpio(rig: Rig) -> Iterator[ModuleType]:
    """The fake lgpio as this process's lgpio, on a Pi 5 (gpiozero's board revision)."""
    with installed(rig.state, device=rig.device, workdir=rig.workdir) as module, pi_revision():
        yield module


@pytest.fixture
def factory(lgpio: ModuleType) -> Iterator[Any]:
    made = open_factory("lgpio")
    yield made
    made.close()


@pytest.fixture
def chip(rig: Rig) -> Iterator[FakeChip]:
    with rig.reader() as reader:
        yield reader


# --- every wiring, at the lines ---------------------------------------------------------------------------------


def expected(pins: MotorPins, power: float, flip: bool = False) -> dict[str, tuple[str, int, float | None]]:
    """Each output's (direction, level, PWM duty % or None) at `power` (0: stopped): PWM outputs keep running,
    at duty 0 when off; enables active while moving."""
    forward = (power > 0) != flip
    duty = round(abs(power) * 100)
    out: dict[str, tuple[str, int, float | None]] = {}
    if pins.wiring == "a+b":
        on, idle = ("a", "b") if forward else ("b", "a")
        out[on] = ("output", int(duty > 0), float(duty))
        out[idle] = ("output", 0, 0.0)
    else:
        out["pwm"] = ("output", int(duty > 0), float(duty))
        if pins.wiring == "dir+pwm":
            out["dir"] = ("output", int(duty > 0 and forward), None)
        else:
            out["a"] = ("output", int(duty > 0 and forward), None)
            out["b"] = ("output", int(duty > 0 and not forward), None)
    if pins.en_high is not None:
        out["en_high"] = ("output", int(duty > 0), None)
    if pins.en_low is not None:
        out["en_low"] = ("output", int(duty == 0), None)
    return out


def read(chip: FakeChip, pins: MotorPins) -> dict[str, tuple[str, int, float | None]]:
    lines = {role: chip.line(pin) for role, pin in pins.used().items()}
    return {role: (line.direction, line.level, line.duty) for role, line in lines.items()}


@pytest.mark.parametrize("flip", [False, True], ids=["", "dir_flip"])
@pytest.mark.parametrize("enables", ENABLES)
@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_wiring_at_the_lines(factory: Any, chip: FakeChip, wiring: str, enables: str, flip: bool) -> None:
    """Exact direction, level and duty of every line forward, reverse, stopped and after close, on gpiozero's
    LGPIOFactory; every PWM line at the configured frequency; close drives each output off before it lets go."""
    pins = wiring_pins(wiring, enables)
    motor = Motor(MotorConfig("m", pins, dir_flip=flip), factory)
    assert motor.wiring == wiring and motor.frequency == FREQUENCY
    assert read(chip, pins) == expected(pins, 0.0), "not everything starts off"
    assert all(chip.line(pins.used()[r]).frequency == FREQUENCY for r in pwm_roles(pins))
    assert all(chip.line(p).owner_pid == os.getpid() and chip.line(p).owner_alive for p in pins.used().values())
    for power in (0.5, -0.25):
        motor.set_power(power)
        assert read(chip, pins) == expected(pins, power, flip), power
    assert motor.stop() is True
    assert read(chip, pins) == expected(pins, 0.0)
    motor.set_power(1.0)
    assert read(chip, pins) == expected(pins, 1.0, flip)
    since = time.monotonic_ns()
    motor.close()  # every output off, then gpiozero makes each line an input (the board's pulls hold it)
    events = chip.events_since(since)
    for role, pin in pins.used().items():
        off, released = first_off(events, pin, off_level(role)), released_at(events, pin, os.getpid())
        assert off is not None and released is not None, (role, events)
        assert off.seq < released.seq, f"{role} (GPIO{pin}) let go before it was driven off"
        line = chip.line(pin)
        assert (line.mode, line.direction, line.pwm_running) == ("input", "input", False), (role, line)


# --- the stop: one lgpio call per output -------------------------------------------------------------------------


class Calls:
    """Every lgpio function call made while counting, by name and arguments (gpiozero's and ours alike)."""

    def __init__(self, module: ModuleType, names: tuple[str, ...]) -> None:
        self.made: list[tuple[str, tuple[Any, ...]]] = []
        self.counting = False
        self._module, self._saved = module, {name: getattr(module, name) for name in names}
        for name, function in self._saved.items():
            setattr(module, name, self._wrap(name, function))

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if self.counting:
                self.made.append((name, args[1:]))  # without the handle
            return function(*args)

        return call

    def restore(self) -> None:
        for name, function in self._saved.items():
            setattr(self._module, name, function)


LGPIO_CALLS = ("tx_pwm", "gpio_write", "gpio_read", "gpio_get_mode", "gpio_claim_output", "gpio_claim_input",
               "gpio_free")


@pytest.mark.parametrize("enables", ENABLES)
@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_stop_is_one_lgpio_call_per_output(lgpio: ModuleType, factory: Any, chip: FakeChip, wiring: str,
                                           enables: str) -> None:
    """Motor.stop() on lgpio: exactly one call per output, on the factory's own chip handle, PWM first:
    tx_pwm(h, pin, frequency, 0) for each PWM output (the running frequency kept), then gpio_write of the off
    level; nothing else (gpiozero's pin path would add a gpio_get_mode per digital write)."""
    pins = wiring_pins(wiring, enables)
    motor = Motor(MotorConfig("m", pins), factory)
    assert isinstance(outputs_for(factory), LgpioOutputs)
    calls = Calls(lgpio, LGPIO_CALLS)
    try:
        for power in (0.7, -0.7):
            motor.set_power(power)
            calls.made.clear()
            calls.counting = True
            since = time.monotonic_ns()
            motor.stop()
            calls.counting = False
            pwm = pwm_roles(pins)
            used = pins.used()
            want_pwm = sorted(("tx_pwm", (used[r], FREQUENCY, 0)) for r in pwm)
            want_rest = sorted(("gpio_write", (p, off_level(r))) for r, p in used.items() if r not in pwm)
            assert len(calls.made) == len(used), calls.made
            assert sorted(calls.made[: len(pwm)]) == want_pwm, "PWM must go to 0 first"
            assert sorted(calls.made[len(pwm):]) == want_rest
            events = chip.events_since(since)
            assert [e.gpio for e in events] == [c[1][0] for c in calls.made] and all(e.result >= 0 for e in events)
            assert read(chip, pins) == expected(pins, 0.0)
    finally:
        calls.restore()
        motor.close()


def test_the_cut_needs_no_lock_and_gpiozero_sees_it(factory: Any, chip: FakeChip) -> None:
    """cut_power() (the deadline thread's duty 0) goes through while another thread holds the motor's lock; gpiozero
    then reads the PWM device at 0, as the line is (it keeps its own copy of an lgpio PWM duty)."""
    motor = Motor(MotorConfig("m", MotorPins(a=17, b=27, pwm=22)), factory)
    motor.set_power(0.6)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with motor._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        motor.cut_power()
        assert chip.line(22).duty == 0.0 and chip.line(22).frequency == FREQUENCY
        assert motor._speed is not None and motor._speed.value == 0 and motor._speed.frequency == FREQUENCY
    finally:
        release.set()
        holder.join(5)
    motor.set_power(0.3)  # gpiozero drives on from there
    assert chip.line(22).duty == 30.0
    motor.close()


def test_duty_changes_land_at_the_end_of_the_running_period(factory: Any, chip: FakeChip) -> None:
    """The stop's duty 0 reaches the pin at the end of the PWM period that runs when it is called (lg's software
    PWM): at 800 Hz, up to 1.25 ms after the call. The cut is one local call; the line is off a period later. (Just
    after a PWM starts, lg's PWM thread may still be in its last sleep, up to 20 ms: a motor that has run a moment.)"""
    motor = Motor(MotorConfig("m", MotorPins(dir=5, pwm=6)), factory)
    try:
        motor.set_power(0.6)
        time.sleep(0.05)
        called = time.monotonic_ns()
        motor.cut_power()
        line = chip.line(6)
        assert line.duty == 0.0 and line.level == 0
        assert called <= line.changed_at <= line.settled_at <= line.changed_at + round(1e9 / FREQUENCY)
    finally:
        motor.close()


# --- the chip that is opened ---------------------------------------------------------------------------------------


def test_gpio_lgpio_chip_is_the_chip_opened(lgpio: ModuleType, chip: FakeChip) -> None:
    """gpio.lgpio.chip: N opens /dev/gpiochipN; unset, gpiozero picks (auto_chip() says which, as safe-stop does)."""
    since = time.monotonic_ns()
    picked = open_factory("lgpio")
    try:
        assert picked.chip == auto_chip() == 0
    finally:
        picked.close()
    chosen = open_factory("lgpio", lgpio_chip=1)
    try:
        assert chosen.chip == 1
    finally:
        chosen.close()
    opened = [e.flags for e in chip.events_since(since) if e.kind == "open"]
    assert opened == [0, 1]


def test_auto_chip_follows_gpiozero(monkeypatch: pytest.MonkeyPatch, lgpio: ModuleType) -> None:
    """gpiozero 2.0.1: chip 4 on a Pi 5 whose kernel still names the RP1 chip gpiochip4, else 0; a Pi 4 is 0."""
    import rover_safety.drivers.pins.lgpio as module

    real = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: str(self) == "/dev/gpiochip4" or real(self))
    assert module.auto_chip() == 4
    with pi_revision(0xC03114):  # a Pi 4 Model B
        assert module.auto_chip() == 0


# --- safe-stop: claim every line, off ----------------------------------------------------------------------------


def aux_config(rig: Rig, chip: int | None = None) -> Config:
    from rover_safety.config import parse

    from tests.support.hil import with_aux
    from tests.support.lgpio_daemon import lgpio_config

    return parse(with_aux(lgpio_config(chip=chip)), str(rig.directory / "rover.yaml"))


SAFE_STOP_ORDER = [
    "left.pwm (GPIO22) -> low", "right.pwm (GPIO19) -> low", "aux.a (GPIO20) -> low", "aux.b (GPIO21) -> low",
    "left.a (GPIO17) -> low", "left.b (GPIO27) -> low", "right.dir (GPIO26) -> low", "aux.en_high (GPIO13) -> low",
    "aux.en_low (GPIO16) -> high",
]


def test_safe_stop_drives_every_line_off_even_a_dead_owners_high_one(rig: Rig, lgpio: ModuleType,
                                                                       chip: FakeChip) -> None:
    """Lines a dead process left high mid-PWM (and an en_low left low, i.e. enabled): safe-stop claims every one as
    an output at its off level, PWM lines first, in one pass, and lets go; they stay off. Twice: idempotent."""
    for gpio in (22, 19, 20, 17, 13):  # PWM left high, and direction / enable lines high (a 100 % "PWM")
        chip.simulate_dead_owner(gpio, duty=100.0 if gpio in (17, 13) else 60.0)
    chip.simulate_dead_owner(16, duty=0.0)  # en_low left low: the driver enabled
    assert all(chip.effective_level(g) == 1 for g in (22, 19, 20, 17, 13))
    config = aux_config(rig)
    for _ in range(2):
        since = time.monotonic_ns()
        started = time.monotonic()
        assert safe_stop(config) == SAFE_STOP_ORDER
        took = time.monotonic() - started
        events = chip.events_since(since)
        claims = [(e.gpio, e.level) for e in events if e.kind == "claim_output"]
        assert claims == [(22, 0), (19, 0), (20, 0), (21, 0), (17, 0), (27, 0), (26, 0), (13, 0), (16, 1)]
        assert all(e.result >= 0 for e in events)
        for label in SAFE_STOP_ORDER:
            gpio, level = int(label.split("GPIO")[1].split(")")[0]), int(label.endswith("high"))
            line = chip.line(gpio)
            assert (line.mode, line.direction, line.level, line.frozen, line.pwm_running) == (
                "free", "output", level, False, False), (label, line)
        assert took < 1.0, f"{took:.3f} s (gpiochip_close alone sleeps 0.1 s, as lg does)"
    reaped = {e.gpio for e in chip.events() if e.kind == "reaped" and e.pid == DEAD_PID}
    assert reaped == {22, 19, 20, 17, 13, 16}


def test_safe_stop_reports_lines_a_live_process_holds(rig: Rig, factory: Any, chip: FakeChip) -> None:
    """A live owner's lines cannot be claimed (the kernel's rule): safe-stop retries briefly, turns every other line
    off, and then says which it could not and why (the daemon holds them while it lives; stopping it stops them)."""
    motor = Motor(MotorConfig("left", MotorPins(a=17, b=27, pwm=22)), factory)
    motor.set_power(0.6)
    started = time.monotonic()
    with pytest.raises(PinFactoryError) as caught:
        safe_stop(aux_config(rig))
    message = str(caught.value)
    assert time.monotonic() - started < 2.0
    assert "6 of 9 outputs off" in message and "left.pwm: held by another process" in message, message
    assert "left.a: held by another process" in message and "is the daemon still running?" in message
    assert chip.line(22).duty == 60.0 and chip.line(20).level == 0  # the holder's untouched; the rest off
    motor.close()


def test_safe_stop_on_the_configured_chip(rig: Rig, lgpio: ModuleType, chip: FakeChip) -> None:
    since = time.monotonic_ns()
    safe_stop(aux_config(rig, chip=1))
    assert [e.flags for e in chip.events_since(since) if e.kind == "open"] == [1]


# --- every way opening it fails, and what it says ------------------------------------------------------------------


def test_lgpio_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lgpio", None)  # as if it were not installed
    with pytest.raises(PinFactoryError) as caught:
        open_factory("lgpio")
    assert str(caught.value).startswith("gpio.pin_factory lgpio: the Python module lgpio is not installed (")
    assert f"{sys.executable} -m pip install lgpio" in str(caught.value)


def test_off_a_pi_gpiozero_cannot_tell_the_board(rig: Rig) -> None:
    with installed(rig.state, device=rig.device, workdir=rig.workdir):
        for chip in (None, 0):
            with pytest.raises(PinFactoryError, match=r"^gpio\.pin_factory lgpio: gpiozero cannot tell which "
                                                      r"Raspberry Pi this is .*needs a Raspberry Pi$"):
                open_factory("lgpio", lgpio_chip=chip)


def test_a_missing_chip_device_is_named(rig: Rig) -> None:
    """No /dev/gpiochipN (this machine has none): the message names the node; lgpio itself only says "can not open
    gpiochip"."""
    assert not Path("/dev/gpiochip7").exists()
    with installed(rig.state, workdir=rig.workdir), pi_revision(), pytest.raises(PinFactoryError) as caught:
        open_factory("lgpio", lgpio_chip=7)
    assert str(caught.value) == ("gpio.pin_factory lgpio: lgpio cannot open the GPIO chip: there is no "
                                 "/dev/gpiochip7, nor any /dev/gpiochip*: is this a Raspberry Pi?")


ROOT = os.geteuid() == 0
NOBODY = 65534


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lgpio-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody() -> dict[str, Any]:
    """subprocess.run() arguments that drop root (file permissions do not stop root)."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if ROOT else {}


def test_why_a_chip_node_does_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reasons found by opening the node as lgpio does: file permissions (as a user outside its group), a node
    that opens but is no gpiochip. (The device cgroup's EPERM is proven under the real systemd, in
    tests/test_systemd_lgpio.py, as is the gpio group letting the service in.)"""
    import rover_safety.drivers.pins.lgpio as module

    with shared_dir() as shared:
        node = shared / "gpiochip0"
        node.touch()
        node.chmod(0o640 if ROOT else 0o000)
        code = ("import sys, pathlib; import rover_safety.drivers.pins.lgpio as m; "
                "m.device_node = lambda n: pathlib.Path(sys.argv[1]); "
                "print(m.chip_failure(0, \"'can not open gpiochip'\"))")
        result = subprocess.run([sys.executable, "-c", code, str(node)], capture_output=True, text=True,
                                timeout=30, check=False, **as_nobody())
        assert result.returncode == 0, result.stderr
        owner = "root:root, mode 0640" if ROOT else f"{_user()}, mode 0000"
        assert result.stdout.startswith(f"lgpio cannot open the GPIO chip: permission denied on {node} ({owner}): "
                                        "run as a member of group "), result.stdout
        assert "(the unit has SupplementaryGroups=gpio" in result.stdout
        node.chmod(0o660)
        monkeypatch.setattr(module, "device_node", lambda n: node)
        assert "it opens, but lgpio refused it" in chip_failure(0, "'not a gpiochip'")


def _user() -> str:
    import grp
    import pwd

    return f"{pwd.getpwuid(os.getuid())[0]}:{grp.getgrgid(os.getgid())[0]}"


@pytest.mark.parametrize("case", ["missing", "not writable"])
def test_an_unwritable_lgpio_working_directory_says_what_to_do(rig: Rig, case: str) -> None:
    """lgpio's import makes its notification pipe in $LG_WD (else the working directory) and fails there with
    "FileNotFoundError: '.lgd-nfy-3'": the message names the directory, why, and the fix. (A read-only file system,
    the unit's / under ProtectSystem=strict, is tests/test_systemd_lgpio.py's.)"""
    with shared_dir() as shared:
        wd = shared / "wd"
        if case == "not writable":
            wd.mkdir(mode=0o555)
            wd.chmod(0o555)
        env = child_env(rig.state, device=rig.device, workdir=wd)
        code = ("from rover_safety.drivers.pins.lgpio import import_lgpio\n"
                "from rover_safety.drivers import PinFactoryError\n"
                "try:\n    import_lgpio()\nexcept PinFactoryError as e:\n    print(e)\n")
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
                                check=False, cwd=shared, **(as_nobody() if case == "not writable" else {}))
    assert result.returncode == 0, result.stderr
    why = f"{wd} does not exist" if case == "missing" else f"{wd} is not writable by this user"
    assert result.stdout.startswith(f"gpio.pin_factory lgpio: lgpio cannot make its notification pipe "
                                    f"{wd}/.lgd-nfy0 ({why}): "), result.stdout
    assert result.stdout.rstrip().endswith("run the daemon with a writable working directory, or set LG_WD to a "
                                           "writable directory (the shipped unit runs in its private /tmp: "
                                           "WorkingDirectory=/tmp, Environment=LG_WD=/tmp)"), result.stdout


def test_importing_lgpio_keeps_the_working_directory(tmp_path: Path, rig: Rig) -> None:
    """lgpio's import changes the process's working directory to $LG_WD; the product changes it back (a relative
    --config must keep meaning the same file), and lgpio still works (it opened its pipe at import)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import os; from rover_safety.drivers.pins.lgpio import import_lgpio; lg = import_lgpio(); "
            "print(os.getcwd()); h = lg.gpiochip_open(0); print(lg.gpio_claim_output(h, 5, 1))")
    result = subprocess.run([sys.executable, "-c", code], env=child_env(rig.state, device=rig.device,
                            workdir=rig.workdir), cwd=elsewhere, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(elsewhere), "0"]
    assert (rig.workdir / ".lgd-nfy0").is_fifo()
