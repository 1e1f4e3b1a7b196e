"""The operator's commands against a real daemon on the pigpiod emulator: sessions, stop-all, watch (which
survives a daemon restart) and drive through a pseudo-terminal, including `kill -9` of drive: the daemon stops the
base at the window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.grpc_client import Client, Heartbeats
from tests.support.hil import RUN_CLI, Gpio, Served, cli_env, pigpio_config, served
from tests.support.net import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

WINDOW = 0.5
LEFT_PWM, RIGHT_PWM = 22, 19


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def config(emulated: Gpio, tmp_path: Path, port: int) -> Path:
    path = tmp_path / "rover.yaml"
    path.write_text(pigpio_config(emulated, heartbeat_window="500ms").replace('"127.0.0.1:0"',
                                                                               f'"127.0.0.1:{port}"'))
    return path


@pytest.fixture
def daemon(config: Path) -> Iterator[Served]:
    with served(config) as running:
        yield running


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN_CLI, *args], capture_output=True, text=True, timeout=30, env=cli_env(),
                          stdin=subprocess.DEVNULL, check=False)


def test_sessions_lists_every_session_but_the_full_id_only_of_ones_own(daemon: Served) -> None:
    address = f"127.0.0.1:{daemon.port}"
    result = cli("sessions", "--address", address)
    assert result.returncode == 0 and "no live sessions" in result.stdout, result.stderr
    client = Client(daemon.port)
    sid = client.start()
    client.set_power("left", 0.3)
    beats = Heartbeats(client, WINDOW / 5)
    result = cli("sessions", "--address", address)
    assert result.returncode == 0, result.stderr
    assert "OWNER" in result.stdout and "left" in result.stdout and sid in result.stdout
    listed = json.loads(cli("sessions", "--address", address, "--json").stdout)
    (entry,) = listed["sessions"]
    assert listed["parts"] == []
    assert entry["id"] == sid and entry["owner"] == "127.0.0.1" and entry["resources"] == ["left"]
    beats.stop()
    assert not beats.errors
    client.close()


def test_stop_all_stops_everything(daemon: Served, emulated: Gpio) -> None:
    client = Client(daemon.port)
    client.start()
    client.set_power("left", 0.5)
    client.set_power("right", 0.5)
    result = cli("stop-all", "--address", f"127.0.0.1:{daemon.port}")
    assert result.returncode == 0 and "stopped everything" in result.stdout, result.stderr
    assert emulated.duty_now(LEFT_PWM) == 0 and emulated.duty_now(RIGHT_PWM) == 0
    client.close()


def test_an_unreachable_daemon_or_a_refused_key_is_one_line(tmp_path: Path) -> None:
    result = cli("sessions", "--address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "could not connect" in result.stderr
    key_file = tmp_path / "key"
    key_file.write_text("not-a-key")
    result = cli("stop-all", "--address", f"127.0.0.1:{free_port()}", "--key-id", "x", "--api-key-file",
                 str(key_file), "--insecure")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def test_watch_follows_sessions_and_survives_a_daemon_restart(config: Path, port: int) -> None:
    first = served(config)
    running = first.__enter__()
    watch = subprocess.Popen([*RUN_CLI, "watch", "--lines", "--address", f"127.0.0.1:{port}"], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), stdin=subprocess.DEVNULL)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")) if watch.stdout else None,
                              daemon=True)
    reader.start()
    try:
        time.sleep(1.0)
        client = Client(running.port)
        client.start()
        client.set_power("left", 0.4)
        client.close()
        wait_until(lambda: any(" expired " in line for line in lines), timeout=5, what="the expiry in watch")
        assert any(" started " in line for line in lines) and any(" moving " in line for line in lines), lines
        running.signal(signal.SIGTERM)
        running.wait()
        first.__exit__(None, None, None)
        wait_until(lambda: any("reconnecting" in line for line in lines), timeout=10, what="watch saying so")
        with served(config):
            wait_until(lambda: any("reconnected" in line for line in lines), timeout=15, what="watch back")
            watch.send_signal(signal.SIGINT)
            assert watch.wait(10) in (0, 130)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
        first.__exit__(None, None, None)
        for stream in (watch.stdout, watch.stderr):
            if stream is not None:
                stream.close()


def spawn_drive(port: int) -> pexpect.spawn[str]:
    child = pexpect.spawn(RUN_CLI[0], [*RUN_CLI[1:], "drive", "base", "--address", f"127.0.0.1:{port}"],
                          env=cli_env(), encoding="utf-8", timeout=15, dimensions=(24, 120))
    child.expect("q quits")
    return child


def hold(child: pexpect.spawn[str], key: str, seconds: float, rate: float = 30.0) -> None:
    """What a held key sends: the key, then its auto-repeats."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        child.send(key)
        time.sleep(1 / rate)


def test_drive_moves_while_a_key_is_held_and_stops_when_released(daemon: Served, emulated: Gpio) -> None:
    child = spawn_drive(daemon.port)
    try:
        hold(child, "w", 1.0)
        assert emulated.duty_now(LEFT_PWM) > 0 and emulated.duty_now(RIGHT_PWM) > 0  # forward, both sides
        released = time.monotonic()
        wait_until(lambda: emulated.duty_now(LEFT_PWM) == 0, timeout=3, what="the base stopped after release")
        assert time.monotonic() - released < 1.5
        hold(child, "\x1b[D", 0.5)  # left arrow: turning left, the sides opposite
        assert emulated.duty_now(LEFT_PWM) > 0 and emulated.duty_now(RIGHT_PWM) > 0
        child.send(" ")
        wait_until(lambda: emulated.duty_now(LEFT_PWM) == 0, timeout=2, what="space stops")
        hold(child, "w", 0.3)
        child.send("q")
        child.expect(pexpect.EOF)
        assert emulated.duty_now(LEFT_PWM) == 0 and emulated.duty_now(RIGHT_PWM) == 0
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def test_kill_9_of_drive_stops_the_base_at_the_window(daemon: Served, emulated: Gpio) -> None:
    child = spawn_drive(daemon.port)
    try:
        holder = threading.Thread(target=hold, args=(child, "w", 0.8), daemon=True)
        holder.start()
        time.sleep(0.6)
        assert emulated.duty_now(LEFT_PWM) > 0
        killed = time.monotonic()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        holder.join(2)
        time.sleep(0.1)
        assert emulated.duty_now(LEFT_PWM) > 0, "nothing but the daemon can stop it now"
        wait_until(lambda: emulated.duty_now(LEFT_PWM) == 0 and emulated.duty_now(RIGHT_PWM) == 0, timeout=3,
                   what="the daemon to stop the base at the window")
        took = time.monotonic() - killed
        assert WINDOW * 0.5 < took < WINDOW + 0.5, f"stopped {took:.3f} s after the kill (window {WINDOW} s)"
    finally:
        child.close(force=True)
