"""The systemd harness itself: notify, watchdog, ExecStopPost, Restart=, journald fields, verify, isolation."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.support.systemd_harness import SystemdInstance, boot_or_skip, default_shares
from tests.support.waiting import wait_until

PYTHON = sys.executable  # the checkout's venv: has systemd-python, lies outside the instance's /tmp

# A notify service: READY=1 after a moment, then WATCHDOG=1 every 0.1 s; in "hang" mode its first run (counted in
# runs.log) stops pinging after 3 pings, so that the watchdog kills it.
SERVICE = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from systemd import daemon, journal

    state = Path(sys.argv[1])
    runs = state / "runs.log"
    with runs.open("a") as log:
        log.write("run\\n")
    first_run = runs.read_text().count("run") == 1
    time.sleep(0.3)
    daemon.notify("READY=1\\nSTATUS=serving")
    journal.send("rover harness hello", MESSAGE_ID=sys.argv[2], FOO="bar", PRIORITY=5)
    pings = 0
    while True:
        if not (first_run and sys.argv[3] == "hang" and pings >= 3):
            daemon.notify("WATCHDOG=1")
            pings += 1
        time.sleep(0.1)
""")


def write_service(tmp_path: Path) -> Path:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    return script


def unit_text(tmp_path: Path, mode: str = "ok", message_id: str = "0" * 32, extra: str = "") -> str:
    script = write_service(tmp_path)
    return textwrap.dedent(f"""\
        [Unit]
        Description=harness test service
        [Service]
        Type=notify
        ExecStart={PYTHON} {script} {tmp_path} {message_id} {mode}
        ExecStopPost=/bin/sh -c 'echo "$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS" >> {tmp_path}/stop-post.log'
        Restart=on-failure
        RestartSec=200ms
        """) + extra


def stop_post_lines(tmp_path: Path) -> list[str]:
    log = tmp_path / "stop-post.log"
    return log.read_text().splitlines() if log.exists() else []


def test_boots_with_private_tmp_and_shared_tmp_path(systemd: SystemdInstance, tmp_path: Path) -> None:
    assert systemd.state == "running"
    host_marker = Path("/tmp") / f"rover-harness-marker-{uuid.uuid4().hex}"
    host_marker.write_text("host")
    try:
        (tmp_path / "seen-inside").write_text("shared")
        systemd.install_unit("probe.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        systemd.start("probe.service")  # pulls sysinit.target, whose tmpfiles/sysusers/... units are masked
        assert systemd.show("systemd-tmpfiles-setup.service", "LoadState") == "masked"
        assert systemd.run("cat", str(tmp_path / "seen-inside")).stdout == "shared"
        assert systemd.run("test", "-e", str(host_marker), check=False).returncode == 1  # /tmp is private
        assert host_marker.read_text() == "host"
    finally:
        host_marker.unlink()


def test_notify_service_becomes_active_after_ready(systemd: SystemdInstance, tmp_path: Path) -> None:
    systemd.install_unit("notify.service", unit_text(tmp_path))
    started = time.monotonic()
    systemd.start("notify.service")  # returns once READY=1 arrived
    assert time.monotonic() - started >= 0.3
    assert systemd.is_active("notify.service")
    assert systemd.show("notify.service", "SubState") == "running"
    assert systemd.show("notify.service", "StatusText") == "serving"
    systemd.stop("notify.service")
    assert not systemd.is_active("notify.service")
    assert stop_post_lines(tmp_path) == ["success killed TERM"]


def test_watchdog_kill_runs_stop_post_and_restarts(systemd: SystemdInstance, tmp_path: Path) -> None:
    name = "watchdog.service"
    systemd.install_unit(name, unit_text(tmp_path, mode="hang", extra="WatchdogSec=1\n"))
    systemd.start(name)
    first_pid = systemd.main_pid(name)
    wait_until(lambda: len(stop_post_lines(tmp_path)) >= 1, timeout=10, what="ExecStopPost to run", interval=0.05)
    assert stop_post_lines(tmp_path)[0] == "watchdog killed ABRT"
    wait_until(lambda: systemd.show(name, "NRestarts") == "1", timeout=10, what="one restart", interval=0.05)
    systemd.wait_for_state(name, "active")
    assert systemd.main_pid(name) not in (0, first_pid)
    entry = systemd.wait_for_journal(lambda e: "Watchdog timeout" in str(e.get("MESSAGE")), unit=name)
    assert entry["_PID"] == "1"
    time.sleep(1.5)  # the second run keeps pinging: no second watchdog kill
    assert systemd.show(name, "NRestarts") == "1" and systemd.is_active(name)


def test_sigkill_of_main_pid_runs_stop_post_and_restarts(systemd: SystemdInstance, tmp_path: Path) -> None:
    name = "killed.service"
    systemd.install_unit(name, unit_text(tmp_path, extra="WatchdogSec=2\n"))
    systemd.start(name)
    pid = systemd.main_pid(name)
    systemd.run("kill", "-KILL", str(pid))
    wait_until(lambda: stop_post_lines(tmp_path) == ["signal killed KILL"], timeout=10,
               what="ExecStopPost after SIGKILL", interval=0.05)
    systemd.wait_for_state(name, "active")
    assert systemd.show(name, "NRestarts") == "1"
    assert systemd.main_pid(name) not in (0, pid)


def test_structured_journal_fields(systemd: SystemdInstance, tmp_path: Path) -> None:
    name = "journal.service"
    message_id = uuid.uuid4().hex
    cursor = systemd.cursor()
    systemd.install_unit(name, unit_text(tmp_path, message_id=message_id))
    systemd.start(name)
    entry = systemd.wait_for_journal(lambda e: e.get("MESSAGE_ID") == message_id, unit=name, since_cursor=cursor)
    assert entry["MESSAGE"] == "rover harness hello"
    assert entry["FOO"] == "bar"
    assert entry["PRIORITY"] == "5"
    assert entry["_SYSTEMD_UNIT"] == name
    assert entry["_TRANSPORT"] == "journal"
    assert [e["__CURSOR"] for e in systemd.journal(matches={"MESSAGE_ID": message_id, "FOO": "bar"})] == [
        entry["__CURSOR"]
    ]
    assert systemd.journal(matches={"MESSAGE_ID": message_id, "FOO": "baz"}) == []
    assert systemd.journal(since_cursor=entry["__CURSOR"], matches={"MESSAGE_ID": message_id}) == []


def test_unit_reaches_tcp_server_in_test_process(systemd: SystemdInstance) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        client = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'hi from unit')"
        systemd.install_unit("client.service", f'[Service]\nType=oneshot\nExecStart={PYTHON} -c "{client}"\n')
        systemd.start("client.service")
        connection, _ = server.accept()
        with connection:
            assert connection.recv(100) == b"hi from unit"


def test_systemd_analyze_verify(systemd: SystemdInstance, tmp_path: Path) -> None:
    good = tmp_path / "good.service"
    good.write_text(unit_text(tmp_path, extra="WatchdogSec=1\n"))
    assert systemd.analyze_verify(good).returncode == 0
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nType=notifyy\nExecStart=relative/path\n")
    result = systemd.analyze_verify(bad)
    assert result.returncode != 0
    assert "Failed to parse service type" in result.stderr


def test_two_instances_are_isolated_and_close_leaves_nothing(
    systemd: SystemdInstance, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = boot_or_skip(tmp_path_factory.mktemp("other"), share=default_shares(tmp_path_factory.getbasetemp()))
    try:
        for instance, name in ((systemd, "a"), (other, "b")):
            state = tmp_path_factory.mktemp(name)
            instance.install_unit("same.service", unit_text(state))
            instance.start("same.service")
        procs = other.cgroup / "system.slice" / "same.service" / "cgroup.procs"
        host_pids = procs.read_text().split()
        assert host_pids
        systemd.stop("same.service")
        assert other.is_active("same.service")
        assert (systemd.cgroup / "system.slice") != (other.cgroup / "system.slice")
    finally:
        other.close()
    for pid in [other.pid, *map(int, host_pids)]:
        assert not os.path.exists(f"/proc/{pid}")
    assert not other.cgroup.exists()
    assert systemd.is_active("systemd-journald.service")
