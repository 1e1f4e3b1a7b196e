"""The shipped unit (systemd/rover-safety.service) under a real systemd, driving the pigpiod emulator.

Each systemd test boots a throwaway systemd (tests/systemd_harness.py) and installs the unit as shipped, with only
the executable (this venv's ``rover-safety``) and the config path (in the instance's own /run, which the sandbox
can read) substituted on the Exec lines. The daemon runs as ``User=rover-safety`` with the full sandbox, talks to a
standalone pigpiod emulator over loopback, and serves gRPC on a loopback port to the clients of this test.

What the unit promises, and where it is proved:

- Type=notify reaches active, STATUS= summary, session events as structured journal entries: test_expiry_...
- STATUS= follows motion, not only session events: test_status_...
- ExecStopPost's safe-stop turns the outputs off after SIGKILL, Restart= brings it back: test_sigkill_...
- WatchdogSec= fires when the deadline loop stops, outputs off, back again: test_frozen_daemon_...
- ExecReload= / SIGHUP: new window for new sessions, bad config ignored, sessions survive: test_reload_...
- the sandbox really applies to the working daemon: test_hardening_...; the unit verifies: test_shipped_unit_...
- install.sh (against private directories inside the instance): test_install_sh_...
- the catalog matches the daemon's MESSAGE_IDs and journalctl takes it: test_catalog_...; -x: test_expiry_...
- without systemd-python the log lines still carry their journald priority: test_without_systemd_python_...
- outside systemd the events are plain lines on stderr: test_events_are_readable_lines_on_stderr_...

The unit runs the venv of this test run as the rover-safety user, so the venv must come from a Python that user
can run (/usr/bin/python3, as `make test` builds it) in a directory the sandbox does not hide; the tests fail with
the reason where it is not (they never weaken the unit instead).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import example_config
from pigpiod_emulator import Cmd, EmulatorClient
from rover_safety.api import motor_pb2, motor_pb2_grpc, robot_pb2, robot_pb2_grpc
from rover_safety.config import load as load_config
from rover_safety.daemon.journal import MESSAGE_IDS, describe
from rover_safety.daemon.sessions import SessionEvent
from systemd_harness import SystemdInstance, systemd_fixture, unavailable_reason  # noqa: F401

CHECKOUT = Path(__file__).resolve().parent.parent
UNIT = "rover-safety.service"
UNIT_FILE = CHECKOUT / "systemd" / UNIT
CATALOG_FILE = CHECKOUT / "systemd" / "rover-safety.catalog"
INSTALL_SH = CHECKOUT / "systemd" / "install.sh"
VENV = Path(sys.prefix)
EXECUTABLE = Path(sys.executable).parent / "rover-safety"
SHIPPED_EXECUTABLE = "/opt/rover-safety/venv/bin/rover-safety"
SHIPPED_CONFIG = "/etc/rover-safety/config.yaml"
CONF_DIR = "/run/rover-safety-test"  # inside the instance: its private /run, readable under ProtectSystem=strict
CONFIG = f"{CONF_DIR}/config.yaml"

# The pins of config/example.yaml (what conftest.example_config serves): every output, and each motor's PWM pin.
# Its motors have no en_low pin, so "off" is every output low.
_EXAMPLE = {m.name: m.pins.used() for m in load_config(CHECKOUT / "config" / "example.yaml").motors}
OUTPUTS = tuple(sorted({pin for pins in _EXAMPLE.values() for pin in pins.values()}))
LEFT_PWM, RIGHT_PWM = _EXAMPLE["left"]["pwm"], _EXAMPLE["right"]["pwm"]
assert not any("en_low" in pins for pins in _EXAMPLE.values())

systemd_test = pytest.mark.systemd


# ---- the unit and its user -------------------------------------------------------------------------------------


def shipped_unit(executable: str | Path = EXECUTABLE, config: str = CONFIG) -> str:
    """The shipped unit with the executable and the config path replaced on the Exec lines, nothing else."""
    lines = []
    for line in UNIT_FILE.read_text().splitlines(keepends=True):
        if line.startswith(("ExecStart=", "ExecStopPost=", "ExecReload=")):
            line = line.replace(SHIPPED_EXECUTABLE, str(executable)).replace(SHIPPED_CONFIG, config)
        lines.append(line)
    text = "".join(lines)
    assert text.count(f"{executable} ") == 2 and text.count(f"--config {config}\n") == 2, "unit's Exec lines moved?"
    return text


def unit_setting(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT_FILE.read_text().splitlines() if line.startswith(f"{key}=")]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", value)
    assert match, f"cannot read {value!r} as a duration"
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


WATCHDOG_SEC = seconds(unit_setting("WatchdogSec")[0])
TIMEOUT_ABORT_SEC = seconds(unit_setting("TimeoutAbortSec")[0])


def hidden_by_the_sandbox(path: Path) -> str | None:
    for hidden, why in (("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"),
                        ("/run", "the harness's /run")):  # /tmp and /var/tmp: the harness binds them in
        if path.is_relative_to(hidden):
            return f"{path} is under {hidden}, which the unit cannot see ({why})"
    return None


@pytest.fixture(scope="session")
def service_user() -> pwd.struct_passwd:
    """The rover-safety user and the gpio group on this machine (created by install.sh --user-only if missing),
    and a check that this user can run this venv, as the unit will. Fails (does not skip) when it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"real systemd unavailable: {reason}")
    result = subprocess.run(["bash", str(INSTALL_SH), "--user-only"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"install.sh --user-only failed:\n{result.stdout}{result.stderr}"
    interpreter = Path(sys.executable).resolve()
    problems = [p for p in map(hidden_by_the_sandbox, (interpreter, EXECUTABLE, CHECKOUT)) if p]
    probe = subprocess.run(
        ["runuser", "-u", "rover-safety", "--", sys.executable, "-c",
         "import rover_safety.daemon.cli, systemd.daemon, systemd.journal"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    if probe.returncode != 0:
        problems.append(f"the rover-safety user cannot run {sys.executable} (-> {interpreter}) with rover_safety "
                        f"and systemd-python: {probe.stderr.strip()[-400:]}")
    if problems:
        pytest.fail(
            "the unit runs as User=rover-safety in a sandbox, and cannot run this venv:\n  " + "\n  ".join(problems)
            + "\nRun these tests from a venv made from /usr/bin/python3 (as `make test` does) in a checkout outside "
            "/home and /root, e.g. `/usr/bin/python3 -m venv .venv && .venv/bin/pip install -e "
            "'.[dev,systemd]'`.",
            pytrace=False,
        )
    return pwd.getpwnam("rover-safety")


# ---- a rover: the unit in an instance, the emulator, clients ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(0.01)


class Client:
    """A plain gRPC client of the daemon (what the Viam SDKs send, minus the SDK)."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.robot = robot_pb2_grpc.RobotServiceStub(self.channel)
        self.motor = motor_pb2_grpc.MotorServiceStub(self.channel)
        self.sid = ""

    def start_session(self) -> float:
        """Start a session; returns the heartbeat window the daemon gave it, in seconds."""
        reply = self.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
        self.sid = reply.id
        return float(reply.heartbeat_window.ToTimedelta().total_seconds())

    def heartbeat(self) -> None:
        self.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=self.sid), timeout=5)

    def set_power(self, name: str, power: float) -> None:
        self.motor.SetPower(motor_pb2.SetPowerRequest(name=name, power_pct=power), timeout=5,
                            metadata=[("viam-sid", self.sid)])

    def close(self) -> None:
        self.channel.close()


class Heartbeats:
    """Heartbeats for a client from a thread, every `interval` s, until stopped; records failures."""

    def __init__(self, client: Client, interval: float) -> None:
        self.client, self.interval = client, interval
        self.errors: list[str] = []
        self.last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.heartbeat()
                self.last = time.monotonic()
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")

    def stop(self) -> float:
        """Stop; returns when the last successful heartbeat was answered."""
        self._stop.set()
        self._thread.join(10)
        return self.last


class Rover:
    """The shipped unit in a systemd instance, on the pigpiod emulator, with gRPC on a free loopback port."""

    def __init__(self, systemd: SystemdInstance, emulator: EmulatorClient) -> None:
        self.systemd, self.emulator = systemd, emulator
        self.port = free_port()
        systemd.root_path(CONF_DIR).mkdir(mode=0o755, exist_ok=True)
        self.clients: list[Client] = []

    def config(self, heartbeat_window: str = "2s") -> str:
        text = example_config(heartbeat_window, "pigpio", host="localhost", port=self.emulator.port)
        return text.replace('"127.0.0.1:0"', f'"127.0.0.1:{self.port}"')

    def write_config(self, text: str) -> None:
        staged = self.systemd.root_path(f"{CONFIG}.new")
        staged.write_text(text)
        staged.chmod(0o644)
        staged.rename(self.systemd.root_path(CONFIG))

    def start(self, heartbeat_window: str = "2s") -> None:
        self.write_config(self.config(heartbeat_window))
        self.systemd.install_unit(UNIT, shipped_unit())
        self.systemd.start(UNIT)

    def client(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def show(self, prop: str) -> str:
        return self.systemd.show(UNIT, prop)

    def main_pid(self) -> int:
        return self.systemd.main_pid(UNIT)

    def host_pids(self) -> list[int]:
        """The unit's processes as this (the host's) PID namespace numbers them."""
        procs = self.systemd.cgroup / "system.slice" / UNIT / "cgroup.procs"
        return [int(p) for p in procs.read_text().split()] if procs.exists() else []

    def duty(self, gpio: int) -> float:
        return self.emulator.pin(gpio).duty_cycle

    def outputs_off(self) -> bool:
        return all(p.duty_cycle == 0 and p.level == 0 for p in map(self.emulator.pin, OUTPUTS))

    def off_commands(self, gpio: int, since: float) -> list[float]:
        """When (time.monotonic()) pigpiod got a duty-0 PWM command for `gpio` since `since`."""
        return [c.t for c in self.emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == gpio and c.p2 == 0]

    def last_pwm_before(self, gpio: int, t: float, since: float) -> int:
        """Duty of the last PWM command on `gpio` in [since, t)."""
        duties = [c.p2 for c in self.emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == gpio and c.t < t]
        assert duties, f"no PWM command on GPIO{gpio}"
        return duties[-1]

    def journal(self, since: str | None, **matches: str) -> list[dict[str, Any]]:
        """`journalctl -u rover-safety.service -o json FIELD=value...`, the entries after the cursor `since`.

        Not the harness's since_cursor: journalctl 252's --after-cursor skips the first entry that matches when the
        cursor's own entry does not (it steps over "the cursor's entry" regardless); --cursor and dropping the
        cursor's entry here is exact.
        """
        args = ["journalctl", "--no-pager", "-o", "json", "-u", UNIT]
        args += ["--cursor", since] if since else []
        args += [f"{field}={value}" for field, value in matches.items()]
        entries = [json.loads(line) for line in self.systemd.run(*args).stdout.splitlines() if line.strip()]
        return [entry for entry in entries if entry["__CURSOR"] != since]

    def journal_entry(self, predicate: Callable[[dict[str, Any]], bool], since: str | None, timeout: float = 10.0,
                      **matches: str) -> dict[str, Any]:
        """The first entry after `since` with these fields for which `predicate` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.journal(since, **matches)
            for entry in entries:
                if predicate(entry):
                    return entry
            if time.monotonic() > deadline:
                seen = "\n".join(message(entry) for entry in entries[-20:])
                raise AssertionError(f"no such journal entry ({matches}) within {timeout} s; last ones:\n{seen}")
            time.sleep(0.05)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def monotonic(entry: dict[str, Any]) -> float:
    """A journal entry's CLOCK_MONOTONIC time in seconds: comparable with time.monotonic() and the emulator's log."""
    return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6


def message(entry: dict[str, Any]) -> str:
    return str(entry.get("MESSAGE", ""))


@pytest.fixture
def emulator() -> Iterator[EmulatorClient]:
    client = EmulatorClient.spawn()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rover(systemd: SystemdInstance, emulator: EmulatorClient, service_user: pwd.struct_passwd) -> Iterator[Rover]:
    rover = Rover(systemd, emulator)
    try:
        yield rover
    finally:
        rover.close()


def install_catalog_inside(systemd: SystemdInstance, catalog: Path | None = CATALOG_FILE) -> None:
    """Private (tmpfs) /usr/lib/systemd/catalog and /var/lib/systemd/catalog inside the instance, so that
    `journalctl --update-catalog` and `-x` there never touch the host's, holding systemd's own catalog as on any
    system; with `catalog`, install and index that too."""
    for directory in ("/usr/lib/systemd/catalog", "/var/lib/systemd/catalog"):
        systemd.run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory)
    systemd_catalog = Path("/usr/lib/systemd/catalog/systemd.catalog")  # the host's, read from outside
    if systemd_catalog.exists():
        shutil.copyfile(systemd_catalog, systemd.root_path(str(systemd_catalog)))
    if catalog is not None:
        shutil.copyfile(catalog, systemd.root_path(f"/usr/lib/systemd/catalog/{catalog.name}"))
    systemd.run("journalctl", "--update-catalog")


# ---- the tests under systemd ---------------------------------------------------------------------------------------


@systemd_test
def test_shipped_unit_passes_systemd_analyze_verify(systemd: SystemdInstance,
                                                    service_user: pwd.struct_passwd) -> None:
    path = f"{CONF_DIR}/{UNIT}"
    systemd.root_path(CONF_DIR).mkdir()
    systemd.root_path(path).write_text(shipped_unit())
    result = systemd.analyze_verify(Path(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd-analyze verify warns:\n{result.stderr}"

    # What the issue asks of the unit, as systemd itself reads it.
    systemd.install_unit(UNIT, shipped_unit())
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "TimeoutAbortUSec": "2s",
        "WatchdogSignal": str(int(signal.SIGABRT)), "User": "rover-safety", "Group": "rover-safety",
        "SupplementaryGroups": "gpio", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "DevicePolicy": "closed", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "", "SystemCallErrorNumber": "1", "LimitCORE": "0", "Nice": "-10",
        "LimitRTPRIO": "20",
    }
    assert {key: systemd.show(UNIT, key) for key in expected} == expected  # WatchdogUSec shows once it runs
    allowed = systemd.show(UNIT, "SystemCallFilter").split()
    assert {"read", "socket", "epoll_wait", "futex"} <= set(allowed)
    assert not {"setrlimit", "setpriority", "setuid", "chown", "mount", "reboot"} & set(allowed)
    assert "sched_setscheduler" in allowed  # the deadline and stop threads go SCHED_FIFO
    assert "pigpiod.service" in systemd.show(UNIT, "After").split()
    assert "pigpiod.service" not in systemd.show(UNIT, "Wants").split()  # only install.sh's drop-in pulls it in
    stop_post = systemd.show(UNIT, "ExecStopPost")
    assert f"argv[]={EXECUTABLE} safe-stop --config {CONFIG} " in stop_post
    assert systemd.show(UNIT, "ExecReload").startswith("{ path=/bin/kill ; argv[]=/bin/kill -HUP $MAINPID ")


@systemd_test
def test_expiry_of_a_killed_client_is_a_journal_entry_with_its_fields(rover: Rover) -> None:
    systemd = rover.systemd
    cursor = systemd.cursor()
    started = time.monotonic()
    rover.start(heartbeat_window="500ms")  # returns once READY=1 arrived
    assert time.monotonic() - started < 15
    assert rover.show("ActiveState") == "active" and rover.show("SubState") == "running"
    assert rover.show("StatusText") == "0 sessions; moving: nothing"
    assert rover.show("WatchdogUSec") == "1s"
    assert rover.outputs_off()
    ready = rover.journal_entry(lambda e: message(e).startswith("rover-safety listening on"), cursor)
    assert f"127.0.0.1:{rover.port}" in message(ready) and "(pins: pigpio)" in message(ready)

    # A client in a process of its own: a session, a motor at 60 %, heartbeats every window/5; then SIGKILL.
    script = (
        "import json, sys, time, grpc\n"
        "from rover_safety.api import motor_pb2, motor_pb2_grpc, robot_pb2, robot_pb2_grpc\n"
        "channel = grpc.insecure_channel(f'127.0.0.1:{sys.argv[1]}')\n"
        "robot = robot_pb2_grpc.RobotServiceStub(channel)\n"
        "reply = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)\n"
        "window = reply.heartbeat_window.ToTimedelta().total_seconds()\n"
        "motor_pb2_grpc.MotorServiceStub(channel).SetPower(motor_pb2.SetPowerRequest(name='left', power_pct=0.6),\n"
        "    metadata=[('viam-sid', reply.id)], timeout=5)\n"
        "print(json.dumps({'sid': reply.id, 'window': window}), flush=True)\n"
        "while True:\n"
        "    time.sleep(window / 5)\n"
        "    robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=reply.id), timeout=5)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", script, str(rover.port)], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        ready_to_read, _, _ = select.select([client.stdout], [], [], 15)
        assert ready_to_read, "the client did not start a session"
        hello = json.loads(client.stdout.readline())
        sid, window = hello["sid"], hello["window"]
        assert window == 0.5
        assert rover.duty(LEFT_PWM) == pytest.approx(0.6, abs=0.01)
        time.sleep(3 * window)  # heartbeats keep it going well past one window
        assert rover.duty(LEFT_PWM) == pytest.approx(0.6, abs=0.01), "stopped although the client heartbeats"
        assert client.poll() is None
        killed = time.monotonic()
        client.kill()
    finally:
        client.kill()
        client.wait(10)
        assert client.stdout is not None
        client.stdout.close()

    wait_until(rover.outputs_off, timeout=window + 2, what="outputs off after the client's death")
    off = rover.off_commands(LEFT_PWM, since=killed)
    assert off, "the daemon did not stop the left motor's PWM"
    assert killed + 0.8 * window - 0.05 <= off[0] <= killed + window + 0.25, f"stopped {off[0] - killed:.3f} s after"

    entry = rover.journal_entry(lambda e: True, cursor, MESSAGE_ID=MESSAGE_IDS["expired"], SESSION_ID=sid)
    assert entry["PRIORITY"] == "4"  # a warning: it stopped a moving motor
    assert entry["SESSION_EVENT"] == "expired"
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", entry["PEER"]), entry["PEER"]
    assert entry["RESOURCES"] == "left" and entry["MOVING"] == "left"
    assert entry["HEARTBEAT_WINDOW_MS"] == "500"
    assert 0 <= float(entry["STOP_LATENCY_MS"]) < 250
    assert entry["_SYSTEMD_UNIT"] == UNIT and entry["SYSLOG_IDENTIFIER"] == "rover-safety"
    assert entry["_UID"] == str(pwd.getpwnam("rover-safety").pw_uid)
    assert entry["_TRANSPORT"] == "journal"
    assert f"session {sid} from {entry['PEER']} expired: no heartbeat for 500ms; stopped left" in message(entry)
    assert abs(monotonic(entry) - off[0]) < 1.0

    start_entry = rover.journal_entry(lambda e: True, cursor, MESSAGE_ID=MESSAGE_IDS["started"], SESSION_ID=sid)
    assert start_entry["PRIORITY"] == "6"
    assert start_entry["SESSION_EVENT"] == "started"
    assert start_entry["PEER"] == entry["PEER"] and start_entry["HEARTBEAT_WINDOW_MS"] == "500"
    assert f"session {sid} from {entry['PEER']} started, heartbeat window 500ms" == message(start_entry)
    wait_until(lambda: rover.show("StatusText") == "0 sessions; moving: nothing", timeout=5, what="STATUS= after")

    # `journalctl -x` explains it from the shipped catalog, with this entry's fields filled in.
    install_catalog_inside(systemd)
    explained = systemd.run("journalctl", "--no-pager", "-x", "-u", UNIT, f"MESSAGE_ID={MESSAGE_IDS['expired']}",
                            f"SESSION_ID={sid}").stdout
    assert "Subject: Client session expired, its resources were stopped" in explained
    assert "Defined-By: rover-safety" in explained
    assert f"Session {sid} from {entry['PEER']} sent no heartbeat for 500 ms" in explained
    assert "@" not in explained.split("Subject:", 1)[1], f"unfilled catalog fields:\n{explained}"


@systemd_test
def test_status_shows_sessions_and_what_moves(rover: Rover) -> None:
    """`systemctl status` keeps up with motion, not only with session events (needs the daemon to refresh STATUS=
    after each motion command: Daemon.refresh_status(), called by wire._monitored)."""
    rover.start(heartbeat_window="5s")
    assert rover.show("StatusText") == "0 sessions; moving: nothing"
    client = rover.client()
    client.start_session()
    wait_until(lambda: rover.show("StatusText") == "1 session; moving: nothing", timeout=2, what="STATUS= 1 session")
    client.set_power("left", 0.5)  # the base moves too: one of its motors does
    wait_until(lambda: rover.show("StatusText") == "1 session; moving: left, base", timeout=2,
               what=f"STATUS= after SetPower (it says {rover.show('StatusText')!r})")
    client.set_power("left", 0)
    wait_until(lambda: rover.show("StatusText") == "1 session; moving: nothing", timeout=2, what="STATUS= stopped")



@systemd_test
def test_safe_stop_turns_off_what_is_driven_even_if_the_config_file_broke_since(rover: Rover) -> None:
    """The operator broke config.yaml (unreloaded) and the daemon then died: safe-stop still finds the pins through
    the daemon's record in its RuntimeDirectory, and says what is wrong with the file."""
    rover.start(heartbeat_window="30s")
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.6)
    client.set_power("right", -0.4)
    cursor = rover.systemd.cursor()
    rover.write_config("network: [this is not\n")
    rover.systemd.run("kill", "-KILL", str(rover.main_pid()))
    wait_until(rover.outputs_off, timeout=10, what="outputs off after SIGKILL with a broken config")
    safe_stop = rover.journal_entry(lambda e: message(e).startswith("safe-stop: "), cursor)
    assert f"left.pwm (GPIO{LEFT_PWM}) -> duty 0" in message(safe_stop)
    rover.journal_entry(lambda e: "not valid YAML" in message(e), cursor)
    recorded = json.loads(rover.systemd.root_path("/run/rover-safety/driven.json").read_text())
    assert [m["name"] for m in recorded["motors"]] == ["left", "right"]


@systemd_test
def test_sigkill_of_the_daemon_safe_stops_the_outputs_then_it_restarts(rover: Rover) -> None:
    rover.start(heartbeat_window="30s")  # no expiry interferes: only the kill can stop the motors
    since = time.monotonic()
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.6)
    client.set_power("right", -0.4)
    assert rover.duty(LEFT_PWM) == pytest.approx(0.6, abs=0.01) and rover.duty(RIGHT_PWM) == pytest.approx(0.4, 0.02)
    assert rover.show("NRestarts") == "0"
    cursor = rover.systemd.cursor()
    old_pid = rover.main_pid()

    killed = time.monotonic()  # from here on, nothing but safe-stop sets a duty of 0: the client is alive
    rover.systemd.run("kill", "-KILL", str(old_pid))

    rover.journal_entry(lambda e: "Main process exited, code=killed, status=9/KILL" in message(e), cursor)
    wait_until(rover.outputs_off, timeout=10, what="outputs off after SIGKILL")
    rover.systemd.wait_for_state(UNIT, "active", timeout=15)
    wait_until(lambda: rover.show("SubState") == "running", timeout=10, what="running again")
    assert rover.show("NRestarts") == "1"
    new_pid = rover.main_pid()
    assert new_pid not in (0, old_pid)
    restarted = int(rover.show("ExecMainStartTimestampMonotonic")) / 1e6

    # pigpiod kept the PWM going after the daemon died; safe-stop (ExecStopPost) stopped it, before the restart
    # (systemd's own clock: the new main process was forked after ExecStopPost had finished).
    for gpio in (LEFT_PWM, RIGHT_PWM):
        assert rover.last_pwm_before(gpio, killed, since) > 0, f"GPIO{gpio} was not running when it was killed"
        offs = rover.off_commands(gpio, since)
        assert offs and killed < offs[0] < restarted, f"GPIO{gpio}: off {offs}, killed {killed}, restart {restarted}"
    safe_stop = rover.journal_entry(lambda e: message(e).startswith("safe-stop: "), cursor)
    assert safe_stop["_PID"] not in (str(old_pid), str(new_pid))
    assert f"left.pwm (GPIO{LEFT_PWM}) -> duty 0" in message(safe_stop)
    assert not [message(e) for e in rover.journal(cursor) if "Control process exited" in message(e)]  # exit 0
    assert rover.outputs_off()

    # The new daemon serves: a new session can drive again.
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.3)
    assert rover.duty(LEFT_PWM) == pytest.approx(0.3, abs=0.01)


@systemd_test
def test_frozen_daemon_is_killed_by_the_watchdog_outputs_off_and_back(rover: Rover) -> None:
    rover.start(heartbeat_window="30s")
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.6)
    assert rover.duty(LEFT_PWM) == pytest.approx(0.6, abs=0.01)
    cursor = rover.systemd.cursor()
    since = time.monotonic()
    old_pid = rover.main_pid()
    frozen = time.monotonic()
    rover.systemd.run("kill", "-STOP", str(old_pid))

    timeout = rover.journal_entry(lambda e: "Watchdog timeout" in message(e), cursor, timeout=WATCHDOG_SEC + 10)
    fired = monotonic(timeout) - frozen
    # The last ping was at most WatchdogSec/2 before the freeze; journald stamps the entry when it reads it (late
    # on a loaded machine), hence the margin above.
    assert WATCHDOG_SEC / 2 - 0.1 <= fired <= WATCHDOG_SEC + 0.5, f"watchdog fired {fired:.3f} s after the freeze"
    wait_until(rover.outputs_off, timeout=TIMEOUT_ABORT_SEC + 10, what="outputs off after the watchdog")
    offs = rover.off_commands(LEFT_PWM, since)
    assert offs and offs[0] - frozen <= WATCHDOG_SEC + TIMEOUT_ABORT_SEC + 3, f"off {offs[0] - frozen:.3f} s after"
    rover.journal_entry(lambda e: message(e).startswith("safe-stop: "), cursor)

    rover.systemd.wait_for_state(UNIT, "active", timeout=15)
    wait_until(lambda: rover.show("SubState") == "running", timeout=10, what="running again")
    assert rover.show("NRestarts") == "1"
    assert rover.main_pid() not in (0, old_pid)
    assert rover.outputs_off()
    time.sleep(2 * WATCHDOG_SEC)  # the new daemon pings: no second watchdog kill
    assert rover.show("NRestarts") == "1" and rover.show("SubState") == "running"


@systemd_test
def test_reload_applies_a_new_window_and_ignores_a_broken_config(rover: Rover) -> None:
    rover.start(heartbeat_window="2s")
    pid = rover.main_pid()
    first = rover.client()
    assert first.start_session() == 2.0
    first.set_power("left", 0.5)
    heartbeats = Heartbeats(first, 0.1)  # the session must survive every reload below

    # A good reload: new sessions get the new window at once; live ones survive; nothing moves or stops.
    cursor = rover.systemd.cursor()
    rover.write_config(rover.config(heartbeat_window="700ms"))
    rover.systemd.systemctl("reload", UNIT)
    reloaded = rover.journal_entry(lambda e: message(e).startswith("reloaded "), cursor)
    assert "heartbeat window 700ms" in message(reloaded)
    assert rover.client().start_session() == 0.7
    assert rover.duty(LEFT_PWM) == pytest.approx(0.5, abs=0.01) and rover.duty(RIGHT_PWM) == 0

    # A broken config: logged, and the daemon keeps running on the previous one.
    cursor = rover.systemd.cursor()
    rover.write_config(rover.config(heartbeat_window="5 seconds"))
    rover.systemd.systemctl("reload", UNIT)
    refused = rover.journal_entry(lambda e: message(e).startswith("reload refused"), cursor)
    assert refused["PRIORITY"] == "3"
    assert f"{CONFIG}:" in message(refused) and "'5 seconds' is not a duration" in message(refused)
    wait_until(lambda: rover.show("SubState") == "running", timeout=5, what="running after the refused reload")
    assert rover.show("ActiveState") == "active" and rover.main_pid() == pid and rover.show("NRestarts") == "0"
    assert rover.client().start_session() == 0.7
    assert rover.duty(LEFT_PWM) == pytest.approx(0.5, abs=0.01)

    # The first session took the new window from its first heartbeat after the good reload.
    last = heartbeats.stop()
    assert heartbeats.errors == []
    wait_until(lambda: rover.duty(LEFT_PWM) == 0, timeout=5, what="left stopped after the first session lapsed")
    expired = rover.journal_entry(lambda e: True, None, MESSAGE_ID=MESSAGE_IDS["expired"], SESSION_ID=first.sid)
    assert expired["HEARTBEAT_WINDOW_MS"] == "700"
    offs = rover.off_commands(LEFT_PWM, since=last)
    assert offs, "no duty-0 command for the left motor after the last heartbeat"
    off = offs[0]
    assert off - last < 0.7 + 0.25, f"stopped {off - last:.3f} s after the last heartbeat (window 0.7 s)"
    assert rover.main_pid() == pid and rover.show("NRestarts") == "0"


@systemd_test
def test_hardening_holds_on_the_working_daemon(rover: Rover, service_user: pwd.struct_passwd) -> None:
    rover.start()
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.4)  # it works: pigpiod over loopback, gRPC, journald, sd_notify
    assert rover.duty(LEFT_PWM) == pytest.approx(0.4, abs=0.01)

    (pid,) = rover.host_pids()
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split() == [str(service_user.pw_uid)] * 4
    assert status["Gid"].split() == [str(service_user.pw_gid)] * 4
    assert str(grp.getgrnam("gpio").gr_gid) in status["Groups"].split()
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == -10  # Nice=
    tasks = Path(f"/proc/{pid}/task").iterdir()
    policies = [int(Path(task, "stat").read_text().rsplit(")", 1)[1].split()[38]) for task in tasks]
    rtprio = next(line.split()[3] for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                  if line.startswith("Max realtime priority"))
    if int(rtprio) >= 10:  # LimitRTPRIO=20 took effect: the deadline and stop threads are SCHED_FIFO (1)
        assert 1 in policies, "the session-deadline thread is not SCHED_FIFO"
    else:  # this sandbox refuses to raise RLIMIT_RTPRIO even for PID 1: the daemon must say it runs without it
        assert 1 not in policies
        rover.systemd.wait_for_journal(lambda e: "without real-time priority" in str(e.get("MESSAGE")), unit=UNIT)

    # Its mount namespace, seen as root from the outside: everything read-only, its own /tmp, no /root or /home.
    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True, timeout=10)

    name = f".sandbox-probe-{uuid.uuid4().hex}"
    for directory in (CHECKOUT / "build", "/etc", "/var/lib", "/var/log", CONF_DIR, "/run", "/run/lock", "/dev/shm"):
        result = inside("touch", f"{directory}/{name}")
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (directory, result.stderr)
    assert not (CHECKOUT / "build" / name).exists()
    assert os.readlink(f"/proc/{pid}/cwd") == "/tmp"  # lgpio makes its pipes in the working directory
    assert inside("touch", f"/tmp/{name}").returncode == 0  # a private /tmp ...
    assert not rover.systemd.root_path(f"/tmp/{name}").exists()  # ... not the instance's
    assert inside("sh", "-c", "ls -A /root /home").stdout.split() in ([], ["/home:", "/root:"])

    security = rover.systemd.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", security)
    # 1.7 "OK" as shipped (no RestrictRealtime=: the deadline threads go SCHED_FIFO); more is a regression
    assert exposure and float(exposure[1]) <= 1.7, security[-2000:]


@systemd_test
def test_install_sh_installs_keeps_the_config_and_uninstalls(systemd: SystemdInstance, emulator: EmulatorClient,
                                                             service_user: pwd.struct_passwd) -> None:
    """install.sh inside the instance, into its private /run (and private catalog directories): never the host's."""
    base = "/run/rover-safety-install"
    prefix, conf_dir = f"{base}/opt", f"{base}/etc"
    install_catalog_inside(systemd, catalog=None)
    env = ["env", f"ROVER_SAFETY_PREFIX={prefix}", f"ROVER_SAFETY_VENV={VENV}", f"ROVER_SAFETY_CONF_DIR={conf_dir}",
           "ROVER_SAFETY_UNIT_DIR=/run/systemd/system"]

    def install(*args: str) -> str:
        result = systemd.run(*env, "bash", str(INSTALL_SH), *args, check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    config = systemd.root_path(f"{conf_dir}/config.yaml")
    drop_in = systemd.root_path(f"/run/systemd/system/{UNIT}.d/pigpio.conf")

    # A fresh install: the example config on pigpio, the unit on this venv, the pigpiod drop-in, the catalog.
    out = install("--no-start")
    assert f"wrote a default {conf_dir}/config.yaml (pin_factory: pigpio)" in out
    example = (CHECKOUT / "config" / "example.yaml").read_text()
    pigpio = "  pin_factory: pigpio                   # pigpio | lgpio | rpigpio | mock"
    assert config.read_text() == re.sub(r"(?m)^  pin_factory: mock .*$", pigpio, example)
    assert "pin_factory: pigpio" in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o644
    assert systemd.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "enabled-runtime"
    assert not systemd.is_active(UNIT)
    assert f"argv[]={VENV}/bin/rover-safety serve --config {conf_dir}/config.yaml " in systemd.show(UNIT, "ExecStart")
    assert f"{VENV}/bin/rover-safety safe-stop --config {conf_dir}/config.yaml" in systemd.show(UNIT, "ExecStopPost")
    assert drop_in.exists() and "pigpiod.service" in systemd.show(UNIT, "Wants").split()
    assert systemd.root_path(f"{prefix}/README.md").read_text() == (CHECKOUT / "README.md").read_text()
    listed = systemd.run("journalctl", "--list-catalog").stdout
    assert f"{MESSAGE_IDS['expired']} rover-safety: Client session expired" in listed

    # The user edits the config; installing again keeps it, byte for byte, and (re)starts the service on it.
    edited = example_config("1500ms", "pigpio", host="127.0.0.1", port=emulator.port)
    edited = edited.replace('"127.0.0.1:0"', f'"127.0.0.1:{free_port()}"') + "# my rover\n"
    config.write_text(edited)
    cursor = systemd.cursor()
    out = install()
    assert f"keeping the existing {conf_dir}/config.yaml" in out
    assert config.read_text() == edited
    assert systemd.is_active(UNIT) and drop_in.exists()
    started = systemd.wait_for_journal(lambda e: message(e).startswith("rover-safety listening on"), unit=UNIT,
                                       since_cursor=cursor)
    assert "heartbeat window 1500ms" in message(started)

    # Off pigpio: no drop-in, nothing pulls pigpiod in (the unit stays ordered after it).
    config.write_text(edited.replace("pin_factory: pigpio", "pin_factory: mock"))
    install("--no-start")
    assert not drop_in.exists() and "pigpiod.service" not in systemd.show(UNIT, "Wants").split()
    assert "pigpiod.service" in systemd.show(UNIT, "After").split()

    # Uninstall: service stopped and gone, catalog gone; the config and this venv stay.
    cursor = systemd.cursor()
    out = install("--uninstall")
    assert f"{conf_dir} and the rover-safety user are kept" in out
    assert systemd.show(UNIT, "LoadState") == "not-found"
    assert not systemd.root_path(f"/run/systemd/system/{UNIT}").exists()
    assert not systemd.root_path("/usr/lib/systemd/catalog/rover-safety.catalog").exists()
    assert not systemd.root_path(prefix).exists()
    assert config.exists() and EXECUTABLE.exists()
    systemd.wait_for_journal(lambda e: message(e).startswith("safe-stop: "), unit=UNIT, since_cursor=cursor)
    assert MESSAGE_IDS["expired"] not in systemd.run("journalctl", "--list-catalog").stdout


@systemd_test
def test_without_systemd_python_stderr_lines_still_carry_their_priority(systemd: SystemdInstance,
                                                                        tmp_path: Path) -> None:
    """journal.setup()'s fallback when systemd-python is missing: "<N>" prefixes that journald reads."""
    script = (
        "import logging, sys\n"
        "sys.modules['systemd.journal'] = None  # as if systemd-python were not installed\n"
        "from rover_safety.daemon import journal\n"
        "journal.setup()\n"
        "for level in (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):\n"
        "    journal.log.log(level, 'fallback %s', logging.getLevelName(level))\n"
    )
    (tmp_path / "fallback.py").write_text(script)
    name = "fallback.service"
    systemd.install_unit(name, f"[Service]\nType=oneshot\nExecStart={sys.executable} {tmp_path / 'fallback.py'}\n")
    systemd.start(name)
    entries = [e for e in systemd.journal(unit=name) if message(e).startswith("fallback ")]
    assert {message(e): e["PRIORITY"] for e in entries} == {
        "fallback INFO": "6", "fallback WARNING": "4", "fallback ERROR": "3", "fallback CRITICAL": "2"}
    assert all(e["_TRANSPORT"] == "stdout" for e in entries)


# ---- without systemd -----------------------------------------------------------------------------------------------


def catalog_entries() -> dict[str, str]:
    """MESSAGE_ID -> the entry's text (header lines and body), from systemd/rover-safety.catalog."""
    entries: dict[str, str] = {}
    current = None
    for line in CATALOG_FILE.read_text().splitlines():
        if line.startswith("-- "):
            current = line[3:].strip()
            assert current not in entries, f"{current} twice in the catalog"
            entries[current] = ""
        elif current is not None:
            entries[current] += line + "\n"
    return entries


# Each event kind with only the fields it always carries (as daemon/sessions.py makes them): the catalog may fill in
# only these, or `journalctl -x` shows a bare field name where a value was missing (journalctl's behaviour).
ALWAYS_CARRIED = {
    "started": SessionEvent("started", "s", "p", 1.0),
    "resumed": SessionEvent("resumed", "s", "p", 1.0),
    "expired": SessionEvent("expired", "s", "p", 1.0),  # RESOURCES, MOVING, STOP_LATENCY_MS only if it drove any
    "closed": SessionEvent("closed", "s", "p", 1.0),
    "stop_failed": SessionEvent("stop_failed", "s", "p", resources=("left",), detail="d"),
    "forced_off": SessionEvent("forced_off", "s", "p", resources=("left",), latency=0.001, detail="d"),
    "unmonitored": SessionEvent("unmonitored", "", resources=("left",), detail="d"),  # no session: the nil id
}


def test_catalog_has_an_entry_for_every_message_id_with_fields_the_entries_carry(tmp_path: Path) -> None:
    entries = catalog_entries()
    assert set(entries) == set(MESSAGE_IDS.values())
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS)
    assert set(ALWAYS_CARRIED) | {"backend_lost"} == set(MESSAGE_IDS)
    for kind, message_id in MESSAGE_IDS.items():
        assert re.fullmatch(r"[0-9a-f]{32}", message_id)
        text = entries[message_id]
        assert re.search(r"^Subject: \S", text, re.M) and "Defined-By: rover-safety\n" in text, kind
        if kind == "backend_lost":  # a daemon-level event (journal.event): no session fields
            fields = {"MESSAGE_ID"}
        else:
            _, _, carried = describe(ALWAYS_CARRIED[kind])
            assert carried["MESSAGE_ID"] == message_id
            fields = set(carried)
        used = set(re.findall(r"@([A-Z0-9_]+)@", text))
        assert used <= fields, f"{kind}: the catalog fills in {used - fields}, which such an entry may lack"

    if shutil.which("journalctl") is None:
        pytest.skip("journalctl not installed: cannot check that it accepts the catalog")
    root = tmp_path / "root"
    (root / "usr/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(CATALOG_FILE, root / "usr/lib/systemd/catalog")
    subprocess.run(["journalctl", f"--root={root}", "--update-catalog"], check=True, capture_output=True, timeout=30)
    listed = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"], check=True, capture_output=True,
                            text=True, timeout=30).stdout.splitlines()
    subjects = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in listed}
    for message_id, text in entries.items():
        subject = re.search(r"^Subject: (.*)$", text, re.M)
        assert subject and subjects.get(message_id) == f"rover-safety: {subject[1]}"


def test_events_are_readable_lines_on_stderr_outside_systemd(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(example_config("300ms"))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["JOURNAL_STREAM"] = "1:1"  # inherited from some unit, but not this stderr: still plain lines
    daemon = subprocess.Popen([str(EXECUTABLE), "serve", "--simulate", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []

    def read() -> None:
        assert daemon.stderr is not None
        lines.extend(line.rstrip("\n") for line in daemon.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def line_matching(pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if match := re.fullmatch(pattern, line):
                    return match
            time.sleep(0.01)
        raise AssertionError(f"no stderr line matches {pattern!r} within {timeout} s; got:\n" + "\n".join(lines))

    client = None
    try:
        listening = line_matching(r"\d\d:\d\d:\d\d INFO     rover-safety listening on 127\.0\.0\.1:(\d+) .*")
        client = Client(int(listening[1]))
        client.start_session()
        client.set_power("left", 0.5)
        sid = re.escape(client.sid)
        peer = r"ipv4:127\.0\.0\.1:\d+"
        line_matching(rf"\d\d:\d\d:\d\d INFO     session {sid} from {peer} started, heartbeat window 300ms")
        line_matching(rf"\d\d:\d\d:\d\d WARNING  session {sid} from {peer} expired: no heartbeat for 300ms; "
                      r"stopped left \(moving: left\), outputs off \d+\.\d\d ms after the deadline")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(ProcessLookupError):
            daemon.kill()
        daemon.wait(10)
        reader.join(10)
    assert not any(line.startswith("<") for line in lines), lines  # no journald priority prefixes on a terminal
    assert any(line.endswith("SIGTERM: stopping every output and exiting") for line in lines), lines
