"""safe-stop never depends on the config parsing: after the daemon died mid-drive, a config that is broken in any
way (one that once made safe-stop print a traceback and touch no pin; a huge, hostile or hanging file) still
leaves every output the daemon recorded off."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.grpc_client import Client
from tests.support.hil import RUN_CLI, Gpio, cli_env, no_traceback, pigpio_config

pytestmark = pytest.mark.timeout(60)

LEFT_PWM, RIGHT_PWM = 22, 19


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


# Each turns the config file into something hostile or broken, after the daemon read the good one and died.
HOSTILE: dict[str, Callable[[Path], object]] = {
    "int tag with junk": lambda p: p.write_text(p.read_text().replace("pwm_freq: 800", "pwm_freq: !!int 800Hz")),
    "an integer of 5000 digits": lambda p: p.write_text(p.read_text().replace("pwm_freq: 800",
                                                                              "pwm_freq: " + "9" * 5000)),
    "nesting 100000 deep": lambda p: p.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    "alias bomb": lambda p: p.write_text('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
                                         + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(
                                             [f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
                                         + "network: {bind_address: *i}\n"),
    "8 MB file": lambda p: p.write_text("# " + "x" * (8 * 2**20) + "\n"),
    "not UTF-8": lambda p: p.write_bytes(b"network:\n  bind_address: \xff\xfe\n"),
    "a FIFO nobody writes": _fifo,
    "a directory": _directory,
    "gone": lambda p: p.unlink(),
}


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir()
    return directory


def env_with(runtime: Path) -> dict[str, str]:
    return {**cli_env(), "RUNTIME_DIRECTORY": str(runtime)}


@pytest.fixture
def killed_mid_drive(emulated: Gpio, tmp_path: Path, runtime: Path) -> Iterator[Path]:
    """A daemon that recorded its pins, drove both motors, and was SIGKILLed: the config path it was started with."""
    config = tmp_path / "rover.yaml"
    config.write_text(pigpio_config(emulated, heartbeat_window="30s"))
    proc = subprocess.Popen([*RUN_CLI, "serve", "--config", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env_with(runtime))
    try:
        assert proc.stderr is not None
        port = 0
        deadline = time.monotonic() + 30
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "listening on" in line:
                port = int(line.split("listening on ")[1].split(" ")[0].rsplit(":", 1)[1])
        assert port, "the daemon did not start"
        assert (runtime / "driven.json").exists()
        client = Client(port)
        client.start()
        client.set_power("left", 0.6)
        client.set_power("right", -0.4)
        client.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert emulated.duty_now(LEFT_PWM) > 0 and emulated.duty_now(RIGHT_PWM) > 0, "pigpiod keeps PWM running"
        yield config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def safe_stop(config: Path, runtime: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`rover-safety safe-stop --config CONFIG` as ExecStopPost runs it (RUNTIME_DIRECTORY set): its result, its
    time in seconds; it never prints a traceback."""
    started = time.monotonic()
    result = subprocess.run([*RUN_CLI, "safe-stop", "--config", str(config)], capture_output=True, text=True,
                            timeout=30, env=env_with(runtime), stdin=subprocess.DEVNULL, check=False)
    no_traceback(result.stderr)
    return result, time.monotonic() - started


@pytest.mark.parametrize("breakage", list(HOSTILE))
def test_safe_stop_turns_off_the_record_whatever_the_config_holds(killed_mid_drive: Path, emulated: Gpio,
                                                                  runtime: Path, breakage: str) -> None:
    HOSTILE[breakage](killed_mid_drive)
    result, took = safe_stop(killed_mid_drive, runtime)
    assert emulated.duty_now(LEFT_PWM) == 0 and emulated.duty_now(RIGHT_PWM) == 0, result.stderr
    assert result.returncode == 0, result.stderr  # the record's outputs are off: that is what was driven
    assert "going by the daemon's record only" in result.stderr, result.stderr
    assert "safe-stop: 5 outputs off" in result.stderr, result.stderr
    assert took < 6, f"safe-stop took {took:.1f} s"
    assert all(len(line) < 600 for line in result.stderr.splitlines()), "a message quoted the hostile file"


@pytest.mark.parametrize("breakage", ["a FIFO nobody writes", "8 MB file", "a directory"])
def test_a_hostile_record_does_not_hang_safe_stop_it_goes_by_the_config(killed_mid_drive: Path, emulated: Gpio,
                                                                        runtime: Path, breakage: str) -> None:
    record = runtime / "driven.json"
    HOSTILE[breakage](record)
    result, took = safe_stop(killed_mid_drive, runtime)
    assert emulated.duty_now(LEFT_PWM) == 0 and emulated.duty_now(RIGHT_PWM) == 0, result.stderr
    assert result.returncode == 0, result.stderr
    assert "cannot read the daemon's record of its pins" in result.stderr, result.stderr
    assert took < 6, f"safe-stop took {took:.1f} s"
    assert all(len(line) < 600 for line in result.stderr.splitlines()), "a message quoted the hostile record"


def test_without_a_record_a_broken_config_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "rover.yaml"
    config.write_text("components:\n  - {name: m, type: motor, model: gpio, attributes: {pins: {a: 021, b: 5}}}\n")
    result = subprocess.run([*RUN_CLI, "safe-stop", "--config", str(config)], capture_output=True, text=True,
                            timeout=30, env=cli_env(), stdin=subprocess.DEVNULL, check=False)
    no_traceback(result.stderr)
    assert result.returncode == 1
    assert f"{config}:2:" in result.stderr and "nothing to stop by" in result.stderr
