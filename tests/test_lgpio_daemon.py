"""`rover-safety serve` and `rover-safety safe-stop` as real processes on lgpio (a Raspberry Pi 5's path), with the
fake lgpio standing in for the chip: the same proofs the pigpio path has (tests/test_hil.py, test_exit_paths.py,
test_safe_stop.py), read at the lines.

Each process gets the fake on PYTHONPATH and a Pi 5's /proc/cpuinfo in a private mount namespace
(tests/support/lgpio_daemon.py); nothing of the product is patched. The chip's state and its log of every lgpio
call live in a file, so they outlive the daemon: after a SIGKILL the fake shows what a Pi 5 is left with (the
software PWM stopped wherever it was, high in the worst case, and the line still driving that) and what safe-stop
then does. When an output went off is the CLOCK_MONOTONIC time of the call that did it, as the fake logged it; when
the pin really followed is the line's `settled_at` (a new duty lands at the end of the running PWM period).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rover_safety.api import motor_pb2

from tests.support.fake_lgpio import FakeChip, on_raspberry_pi, pi_namespace_unavailable
from tests.support.grpc_client import Client, code_of
from tests.support.hil import AUX, EXAMPLE_PINS, LEFT, RIGHT, Served, no_traceback, with_aux
from tests.support.lgpio_daemon import (
    ALL_PINS,
    Rig,
    bad_lines,
    chip_closed_at,
    first_off,
    lgpio_config,
    make_rig,
    ns,
    off_level,
    off_or_released,
    released_at,
    run,
    served,
)

pytestmark = [
    pytest.mark.timeout(120),
    # the fake never shadows a Pi's real lgpio; there, tests/test_lgpio_hardware.py runs the real one
    pytest.mark.skipif(on_raspberry_pi(), reason="a Raspberry Pi: the fake lgpio stands in only where there is none"),
]

LATE = 0.2  # seconds after the deadline, as tests/test_hil.py allows on a loaded 2-core machine


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    reason = pi_namespace_unavailable()
    if reason is not None:  # conftest fails skips under CI=true: CI runs as root, where this always works
        pytest.skip(f"cannot give a child a Pi 5's /proc/cpuinfo: {reason}")
    return make_rig(tmp_path)


@pytest.fixture
def chip(rig: Rig) -> Iterator[FakeChip]:
    with rig.reader() as reader:
        yield reader


def write_config(rig: Rig, text: str, name: str = "rover.yaml") -> Path:
    path = rig.directory / name
    path.write_text(text)
    return path


def drive(daemon: Served, chip: FakeChip, aux: bool = False) -> Client:
    client = Client(daemon.port)
    client.start()
    client.set_power("left", 0.6)
    client.set_power("right", -0.4)
    if aux:
        client.set_power("aux", 0.7)
    assert (chip.line(22).duty, chip.line(19).duty) == (60.0, 40.0)
    assert (chip.line(LEFT["a"]).level, chip.line(LEFT["b"]).level, chip.line(RIGHT["dir"]).level) == (1, 0, 0)
    return client


# --- expiry ----------------------------------------------------------------------------------------------------


def test_expiry_cuts_pwm_at_the_deadline(rig: Rig, chip: FakeChip, capsys: pytest.CaptureFixture[str]) -> None:
    """Heartbeats keep both motors running; when they stop, each PWM line gets duty 0 at the deadline, not before and
    soon after, then every direction line goes low; the pin follows by the end of the running period."""
    window = 1.0  # (a child daemon on a loaded 2-core machine: a shorter window can lapse between heartbeats)
    with served(rig, write_config(rig, lgpio_config("1s"))) as daemon:
        client = drive(daemon, chip)
        try:
            for _ in range(7):  # 7 x window/5, well past one window
                time.sleep(window / 5)
                sent = time.monotonic()
                client.heartbeat()
                answered = time.monotonic()
            assert (chip.line(22).duty, chip.line(19).duty) == (60.0, 40.0), "stopped although heartbeats were on time"
            assert chip.wait_for(lambda: chip.line(22).duty == 0 and chip.line(19).duty == 0, 3), "PWM still on"
            assert chip.wait_for(lambda: not bad_lines(chip, EXAMPLE_PINS), 1), bad_lines(chip, EXAMPLE_PINS)
            events = chip.events_since(ns(answered))
            report = []
            for pin in (22, 19):
                off = first_off(events, pin, 0)
                assert off is not None and off.pid == daemon.proc.pid
                assert off.t >= sent + window, f"GPIO{pin} went off {1000 * (sent + window - off.t):.1f} ms early"
                late = off.t - (answered + window)
                assert late <= LATE, f"GPIO{pin} went off {1000 * late:.1f} ms after the deadline"
                settled = chip.line(pin).settled_at / 1e9
                assert settled - off.t <= 1 / 800 + 0.001, "the pin followed later than one PWM period"
                # the deadline lies between sent + window and answered + window
                latest = off.t - sent - window
                report.append(f"GPIO{pin} duty 0 at deadline + [{1000 * late:.2f}, {1000 * latest:.2f}] ms, "
                              f"pin settled {1000 * (settled - off.t):.2f} ms later")
            code, _ = code_of(client.heartbeat)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            daemon.wait_line(" expired: ", timeout=5)
        finally:
            client.close()
    with capsys.disabled():
        print(f"\nlgpio expiry (fake chip, child daemon): {'; '.join(report)}")


# --- every way out with motion in progress ---------------------------------------------------------------------------


def assert_off_before_letting_go(chip: FakeChip, daemon: Served, since: float, pins: dict[str, int]) -> None:
    """From the fake's log: each output was driven to its off level after `since`, by the daemon, before it let go
    of the line (gpiozero makes it an input), before it closed the chip and before the process ended."""
    assert daemon.ended_at is not None
    events = chip.events_since(ns(since))
    pid = daemon.proc.pid
    closed = chip_closed_at(events, pid)
    assert closed is not None, "the daemon never closed its chip"
    for role, pin in pins.items():
        off = first_off((e for e in events if e.pid == pid), pin, off_level(role))
        let_go = released_at(events, pin, pid)
        assert off is not None, f"{role} (GPIO{pin}) was not driven off after {since}"
        assert let_go is None or off.seq < let_go.seq, f"{role} (GPIO{pin}) let go before it was driven off"
        assert off.seq < closed.seq and off.t < daemon.ended_at
        assert off_or_released(chip.line(pin), off_level(role)), (role, chip.line(pin))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_output_before_exit(rig: Rig, chip: FakeChip, sig: signal.Signals) -> None:
    with served(rig, write_config(rig, lgpio_config("5s"))) as daemon:
        client = drive(daemon, chip)
        try:
            sent = daemon.signal(sig)
            assert daemon.wait() == 0, daemon.text
        finally:
            client.close()
    assert_off_before_letting_go(chip, daemon, sent, EXAMPLE_PINS)
    assert f"{sig.name}: stopping every output and exiting" in daemon.text
    no_traceback(daemon.text)


def test_a_failed_stop_forces_off_exits_1_and_safe_stop_finishes(rig: Rig, chip: FakeChip) -> None:
    """At the expiry the stop thread's write of left.a fails (lgpio.error, injected): the stop is reported failed,
    left is forced off at the lines, the daemon exits 1 (systemd then runs safe-stop, here the test does), and
    safe-stop, from the daemon's record, finds and leaves every output off."""
    config = write_config(rig, lgpio_config("300ms"))
    with served(rig, config, inject="write") as daemon:
        client = Client(daemon.port)
        try:
            client.start()
            client.set_power("left", 0.6)
            assert chip.line(17).level == 1
            since = time.monotonic()
            assert daemon.wait(10) == 1, daemon.text
        finally:
            client.close()
    text = daemon.text
    assert "bad GPIO write" in text and "left forced off at the pins after its stop failed" in text, text
    assert "a stop failed" in text
    events = chip.events_since(ns(since))
    writes17 = [(e.kind, e.level) for e in events if e.gpio == 17 and e.kind == "write"]
    assert writes17[0] == ("write", 0), writes17  # the forced write (the failed one never reached the chip)
    assert all(off_or_released(chip.line(p), off_level(r)) for r, p in EXAMPLE_PINS.items())  # the daemon's end
    record = rig.runtime / "driven.json"
    assert record.exists()
    result = run(rig, "safe-stop", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert re.search(r"safe-stop: 5 outputs off in [0-9.]+ ms", result.stderr), result.stderr
    assert not bad_lines(chip, EXAMPLE_PINS), bad_lines(chip, EXAMPLE_PINS)


# --- safe-stop ------------------------------------------------------------------------------------------------------


SAFE_STOP_CLAIMS = [(22, 0), (19, 0), (20, 0), (21, 0), (17, 0), (27, 0), (26, 0), (13, 0), (16, 1)]


def safe_stop(rig: Rig, chip: FakeChip, config: Path, outputs: int = 9, within_ms: float = 500,
              ) -> tuple[float, float, float]:
    """Run `rover-safety safe-stop --config`; check it succeeded on one line, quickly, claiming each recorded line
    once at its off level, PWM lines first (then the config's, when it names other pins). Returns, in ms: what it says
    it took, from its start (interpreter and imports included) to its last line off, and its first claim to its
    last."""
    since = time.monotonic_ns()
    started = time.monotonic()
    result = run(rig, "safe-stop", "--config", str(config))
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    no_traceback(result.stderr)
    (line,) = result.stderr.strip().splitlines()
    match = re.search(rf"safe-stop: {outputs} outputs off in ([0-9.]+) ms", line)
    assert match, line
    # What it reports includes lg's gpiochip_close (it sleeps 0.1 s) and reading the config in a child process, both
    # after the lines are off: pigpio's bound (250 ms) plus that sleep, and room for a loaded machine.
    assert float(match.group(1)) < within_ms, line
    assert took < 5.0, f"safe-stop took {took:.2f} s, interpreter start-up included"
    claims = [e for e in chip.events_since(since) if e.kind == "claim_output"]
    assert [(e.gpio, e.level) for e in claims][:9] == SAFE_STOP_CLAIMS
    assert all(e.result == 0 for e in claims)
    assert claims[8].t_ns - claims[0].t_ns < 50_000_000, "from the first claim to the last"
    return (float(match.group(1)), 1000 * (claims[8].t - started), (claims[8].t_ns - claims[0].t_ns) / 1e6)


def test_safe_stop_after_sigkill_mid_pwm_drives_every_recorded_line_off(rig: Rig, chip: FakeChip,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL mid-PWM: lgpio's PWM dies with the process, the lines left wherever they were (high, worst case) and
    still driven; the enables left enabling. safe-stop, from the daemon's record (the config was edited meanwhile
    and no longer names `aux`), drives every recorded line off, the high ones too; and again, idempotent."""
    config = write_config(rig, with_aux(lgpio_config("5s")))
    with served(rig, config) as daemon:
        client = drive(daemon, chip, aux=True)
        try:
            assert (chip.line(AUX["en_high"]).level, chip.line(AUX["en_low"]).level) == (1, 0)  # enabled
            daemon.signal(signal.SIGKILL)
            assert daemon.wait() == -signal.SIGKILL
        finally:
            client.close()
    for gpio in (22, 19, 20):  # the PWM lines: no owner any more, frozen, high
        line = chip.line(gpio)
        assert (line.mode, line.direction, line.level, line.frozen, line.owner_alive) == (
            "free", "output", 1, True, False), line
    assert (chip.line(17).level, chip.line(13).level, chip.line(16).level) == (1, 1, 0)  # still driving the bridge
    assert (rig.runtime / "driven.json").exists()
    edited = config.read_text()
    config.write_text(lgpio_config("5s"))  # an edit never applied: safe-stop goes by what was really driven
    took = [safe_stop(rig, chip, config, outputs=9 + 5, within_ms=1500)]  # the record, then the config's pins
    assert not bad_lines(chip, ALL_PINS), bad_lines(chip, ALL_PINS)
    config.write_text(edited)
    took.append(safe_stop(rig, chip, config))  # idempotent; the config as recorded: one pass
    assert not bad_lines(chip, ALL_PINS), bad_lines(chip, ALL_PINS)
    reaped = {e.gpio for e in chip.events() if e.kind == "reaped" and e.pid == daemon.proc.pid}
    assert reaped == set(ALL_PINS.values())
    with capsys.disabled():
        for what, (reported, to_last, claiming) in zip(("record + edited config", "again, as recorded"), took,
                                                         strict=True):
            print(f"\nlgpio safe-stop after SIGKILL ({what}): reports {reported:.1f} ms; process start -> 9th line off "
                  f"{to_last:.1f} ms; first claim -> 9th {claiming:.2f} ms")


def test_safe_stop_while_the_daemon_runs_says_the_lines_are_held(rig: Rig, chip: FakeChip) -> None:
    """Unlike pigpio's, lgpio's safe-stop cannot reach a live daemon's lines (the kernel gives a line to one
    request): it exits 1 saying which and why, having driven every other line off; the daemon is unharmed."""
    config = write_config(rig, lgpio_config("5s"))
    with served(rig, config) as daemon:
        client = drive(daemon, chip)
        try:
            result = run(rig, "safe-stop", "--config", str(config))
            assert result.returncode == 1
            no_traceback(result.stderr)
            message = result.stderr.strip().splitlines()[-1]
            assert "0 of 5 outputs off" in message and "left.pwm: held by another process" in message, message
            assert "is the daemon still running?" in message
            assert chip.line(22).duty == 60.0 and daemon.returncode is None
            client.motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=0.3), metadata=client.md,
                                  timeout=5)
            assert chip.line(22).duty == 30.0
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        finally:
            client.close()


# --- start-up: each way lgpio can fail, on one clear line ------------------------------------------------------------


def refused(rig: Rig, config: Path, **env: str | None) -> str:
    started = time.monotonic()
    result = run(rig, "serve", "--config", str(config), env=rig.env(**env))
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    no_traceback(result.stderr)
    return result.stderr.strip().splitlines()[-1]


def test_an_unwritable_lgpio_working_directory_refuses_to_start(rig: Rig) -> None:
    """A daemon without a writable working directory or LG_WD: lgpio's notification pipe cannot be made; the last
    line says so and what to do (before it, lg's own C side has printed its complaint, as on a Pi)."""
    line = refused(rig, write_config(rig, lgpio_config()), LG_WD=str(rig.directory / "missing"))
    assert "CRITICAL cannot start: gpio.pin_factory lgpio: lgpio cannot make its notification pipe " in line
    assert "does not exist): run the daemon with a writable working directory, or set LG_WD" in line


def test_a_missing_chip_refuses_to_start(rig: Rig) -> None:
    (rig.directory / "gpiochip0").unlink()
    line = refused(rig, write_config(rig, lgpio_config()))
    assert "CRITICAL cannot start: gpio.pin_factory lgpio: lgpio cannot open the GPIO chip: there is no " \
           "/dev/gpiochip0" in line


def test_off_a_pi_lgpio_refuses_to_start(rig: Rig) -> None:
    """Without a Raspberry Pi's board revision gpiozero cannot number the pins: one line, no fallback."""
    result = run(rig, "serve", "--config", str(write_config(rig, lgpio_config())), on_a_pi=False)
    assert result.returncode == 1
    no_traceback(result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "CRITICAL cannot start: gpio.pin_factory lgpio: gpiozero cannot tell which Raspberry Pi this is" in line


def test_a_relative_config_path_still_reloads(rig: Rig, chip: FakeChip) -> None:
    """lgpio's import moves the process to its working directory ($LG_WD); the daemon moves back, so a relative
    --config still names the same file when SIGHUP re-reads it."""
    config = write_config(rig, lgpio_config("2s"))
    with served(rig, Path(config.name), cwd=rig.directory) as daemon:
        config.write_text(lgpio_config("1500ms"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_line(r"reloaded rover\.yaml: heartbeat window 1500ms", timeout=10)
        assert "reload refused" not in daemon.text
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_the_daemon_opens_the_configured_chip(tmp_path: Path) -> None:
    """gpio.lgpio.chip: 1 makes the daemon open /dev/gpiochip1, the chip safe-stop will claim the lines on."""
    if pi_namespace_unavailable() is not None:
        pytest.skip("cannot give a child a Pi 5's /proc/cpuinfo")
    rig = make_rig(tmp_path, chips=(0, 1))
    with rig.reader() as chip, served(rig, write_config(rig, lgpio_config(chip=1))) as daemon:
        opened = [e.flags for e in chip.events() if e.kind == "open" and e.pid == daemon.proc.pid]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    assert opened == [1]
