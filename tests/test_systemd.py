"""The shipped unit (systemd/rover-safety.service) under a real systemd, driving the pigpiod emulator.

Each systemd test boots a throwaway systemd (tests/support/systemd_harness.py) and installs the unit as shipped,
with only the executable (this checkout's ``rover-safety`` as the harness shows it to the service, see below) and
the config path (in the instance's own /run, which the sandbox can read) substituted on the Exec lines. The daemon
runs as ``User=rover-safety`` with the full sandbox, talks to a standalone pigpiod emulator over loopback, and serves
gRPC on a loopback port to the clients of this test.

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

The unit runs this checkout's code as the rover-safety user, from any checkout (one only root may enter, one under
/home or /root that ProtectHome= hides): tests/support/systemd_rover.py shows the code to it inside the instance
(the venv's site-packages bound read-only, the sources copied, a console script) at /run/harness-code, which the
sandbox can read. The venv must come from a Python the sandbox shows (/usr/bin/python3, as `make test` builds
it); the tests fail with the reason where it does not (they never weaken the unit instead).
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
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from rover_safety.daemon.journal import MESSAGE_IDS, describe
from rover_safety.sessions import SessionEvent

from tests.support.daemons import example_config
from tests.support.grpc_client import Client, Heartbeats
from tests.support.hil import cli_env, proc_stat
from tests.support.net import free_port
from tests.support.pigpiod_emulator import EmulatorClient
from tests.support.systemd_harness import SystemdInstance
from tests.support.systemd_rover import (
    CATALOG_FILE,
    CHECKOUT,
    CONF_DIR,
    CONFIG,
    EXECUTABLE,
    INSTALL_SH,
    LEFT_PWM,
    RIGHT_PWM,
    TIMEOUT_ABORT_SEC,
    UNIT,
    WATCHDOG_SEC,
    Rover,
    ServiceCode,
    hidden_by_the_sandbox,
    install_catalog_inside,
    message,
    monotonic,
    shipped_unit,
    systemd_test,
)
from tests.support.waiting import wait_until

# ---- the tests under systemd ---------------------------------------------------------------------------------------


@systemd_test
def test_shipped_unit_passes_systemd_analyze_verify(systemd: SystemdInstance, service_code: ServiceCode) -> None:
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
    assert f"argv[]={service_code.executable} safe-stop --config {CONFIG} " in stop_post
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
    assert f"127.0.0.1:{rover.port}" in message(ready) and "(plain text, no API keys; pins: pigpio)" in message(ready)

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
    safe_stop = rover.journal_entry(lambda e: message(e).startswith("safe-stop: ") and " outputs off in " in message(e),
                                    cursor)
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
    assert int(proc_stat(f"/proc/{pid}/stat")[16]) == -10  # Nice=
    policies = [int(proc_stat(task / "stat")[38]) for task in Path(f"/proc/{pid}/task").iterdir()]
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
    # The checkout: read-only where the sandbox shows it (the harness binds one under /tmp in), else not there at all
    checkout_hidden = hidden_by_the_sandbox(CHECKOUT) is not None
    if checkout_hidden:
        assert inside("test", "-e", str(CHECKOUT)).returncode != 0, f"{CHECKOUT} is visible to the daemon"
    read_only = ["/etc", "/var/lib", "/var/log", CONF_DIR, "/run", "/run/lock", "/dev/shm", rover.code.venv,
                 f"{rover.code.venv}/site-packages"] + ([] if checkout_hidden else [str(CHECKOUT)])
    for directory in read_only:
        result = inside("touch", f"{directory}/{name}")
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (directory, result.stderr)
    assert not (CHECKOUT / name).exists()
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
                                                             service_code: ServiceCode) -> None:
    """install.sh inside the instance, into its private /run (and private catalog directories): never the host's."""
    base = "/run/rover-safety-install"
    prefix, conf_dir = f"{base}/opt", f"{base}/etc"
    install_catalog_inside(systemd, catalog=None)
    venv = service_code.venv
    env = ["env", f"ROVER_SAFETY_PREFIX={prefix}", f"ROVER_SAFETY_VENV={venv}", f"ROVER_SAFETY_CONF_DIR={conf_dir}",
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
    assert f"argv[]={venv}/bin/rover-safety serve --config {conf_dir}/config.yaml " in systemd.show(UNIT, "ExecStart")
    assert f"{venv}/bin/rover-safety safe-stop --config {conf_dir}/config.yaml" in systemd.show(UNIT, "ExecStopPost")
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

    # Uninstall: service stopped and gone, catalog gone; the config and the venv it was given stay.
    cursor = systemd.cursor()
    out = install("--uninstall")
    assert f"{conf_dir} and the rover-safety user are kept" in out
    assert systemd.show(UNIT, "LoadState") == "not-found"
    assert not systemd.root_path(f"/run/systemd/system/{UNIT}").exists()
    assert not systemd.root_path("/usr/lib/systemd/catalog/rover-safety.catalog").exists()
    assert not systemd.root_path(prefix).exists()
    assert config.exists() and systemd.root_path(service_code.executable).exists()
    systemd.wait_for_journal(lambda e: message(e).startswith("safe-stop: "), unit=UNIT, since_cursor=cursor)
    assert MESSAGE_IDS["expired"] not in systemd.run("journalctl", "--list-catalog").stdout


@systemd_test
def test_without_the_journal_socket_stderr_lines_still_carry_their_priority(systemd: SystemdInstance,
                                                                           tmp_path: Path) -> None:
    """journal.setup()'s fallback when journald's native socket cannot be reached: "<N>" prefixes that journald
    reads off the stream (the socket hidden from the service with InaccessiblePaths=)."""
    script = (
        "import logging, sys\n"
        "from rover_safety.daemon import journal\n"
        "journal.setup()\n"
        "for level in (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):\n"
        "    journal.log.log(level, 'fallback %s', logging.getLevelName(level))\n"
    )
    (tmp_path / "fallback.py").write_text(script)
    name = "fallback.service"
    systemd.install_unit(name, f"[Service]\nType=oneshot\nInaccessiblePaths=/run/systemd/journal/socket\n"
                               f"ExecStart={sys.executable} {tmp_path / 'fallback.py'}\n")
    systemd.start(name)
    entries = [e for e in systemd.journal(unit=name) if message(e).startswith("fallback ")]
    assert {message(e): e["PRIORITY"] for e in entries} == {
        "fallback INFO": "6", "fallback WARNING": "4", "fallback ERROR": "3", "fallback CRITICAL": "2"}
    assert all(e["_TRANSPORT"] == "stdout" for e in entries)


def test_log_entries_go_to_the_journal_with_their_fields(systemd: SystemdInstance, tmp_path: Path) -> None:
    """The native-protocol sender: every field, a multi-line message intact, the priority mapped."""
    script = (
        "import logging\n"
        "from rover_safety.daemon import journal\n"
        "journal.setup()\n"
        "journal.log.warning('two\\nlines', extra={'MESSAGE_ID': 'a' * 32, 'SESSION_ID': 's-1', 'lower': 'x'})\n"
    )
    (tmp_path / "native.py").write_text(script)
    name = "native.service"
    systemd.install_unit(name, f"[Service]\nType=oneshot\nExecStart={sys.executable} {tmp_path / 'native.py'}\n")
    systemd.start(name)
    (entry,) = [e for e in systemd.journal(unit=name) if e.get("SESSION_ID") == "s-1"]
    assert entry["MESSAGE"] == "two\nlines" and entry["PRIORITY"] == "4" and entry["MESSAGE_ID"] == "a" * 32
    assert entry["_TRANSPORT"] == "journal" and entry["SYSLOG_IDENTIFIER"] == "rover-safety"
    assert "lower" not in entry and "LOWER" not in entry


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
    "ended": SessionEvent("ended", "s", "p", 1.0, detail="d"),  # RESOURCES, MOVING as for an expiry
}
# Daemon-level events (journal.event and the like): the fields each always carries.
DAEMON_EVENTS = {
    "backend_lost": {"MESSAGE_ID"},
    "auth_failed": {"MESSAGE_ID", "PEER", "AUTH_ENTITY", "AUTH_LIMITED"},
    "insecure": {"MESSAGE_ID"},
    "suppressed": {"MESSAGE_ID", "PEER", "SUPPRESSED"},
    "part_lost": {"MESSAGE_ID", "PART", "PART_ADDRESS", "RESOURCES", "ENDED_SESSIONS"},
    "part_back": {"MESSAGE_ID", "PART", "PART_ADDRESS", "RESOURCES"},
    "dropped": {"MESSAGE_ID", "DROPPED"},
    "over_share": {"MESSAGE_ID", "PEER", "OWNER"},
}


def test_catalog_has_an_entry_for_every_message_id_with_fields_the_entries_carry(tmp_path: Path) -> None:
    entries = catalog_entries()
    assert set(entries) == set(MESSAGE_IDS.values())
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS)
    assert set(ALWAYS_CARRIED) | set(DAEMON_EVENTS) == set(MESSAGE_IDS)
    for kind, message_id in MESSAGE_IDS.items():
        assert re.fullmatch(r"[0-9a-f]{32}", message_id)
        text = entries[message_id]
        assert re.search(r"^Subject: \S", text, re.M) and "Defined-By: rover-safety\n" in text, kind
        if kind in DAEMON_EVENTS:  # a daemon-level event: no session fields
            fields = DAEMON_EVENTS[kind]
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
    env = cli_env()  # none of systemd's variables, so the daemon is outside systemd ...
    env["JOURNAL_STREAM"] = "1:1"  # ... but for this one, inherited from some unit and not this stderr: plain lines
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
