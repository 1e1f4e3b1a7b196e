"""A pytest plugin for `make reliability` (``-p tests.support.fault_links``): records the outcome of the existing
tests that already prove a fault of issue 9's table (the daemon's own death and hang under systemd, pigpiod going
away), so that docs/RELIABILITY.md links them with the result of the same run."""

from __future__ import annotations

import time

import pytest

from .faults import Row, record

# nodeid -> (row key, fault, what the test asserts)
LINKED: dict[str, tuple[str, str, str]] = {
    "tests/test_systemd.py::test_sigkill_of_the_daemon_safe_stops_the_outputs_then_it_restarts": (
        "daemon-sigkill", "daemon killed (SIGKILL) mid-drive, under the unit",
        "ExecStopPost safe-stop turns both PWM outputs off after the kill and before the restart; restarts once; "
        "a new session drives again"),
    "tests/test_systemd.py::test_frozen_daemon_is_killed_by_the_watchdog_outputs_off_and_back": (
        "daemon-hang-watchdog", "daemon frozen (SIGSTOP), under the unit",
        "watchdog fires WatchdogSec/2-0.1 .. WatchdogSec+0.5 s after the freeze; outputs off within "
        "WatchdogSec + TimeoutAbortSec + 3 s; safe-stop; restarted and pinging"),
    "tests/test_exit_paths.py::test_losing_pigpiod_exits_non_zero_without_burning_cpu": (
        "pigpiod-lost-idle", "pigpiod dies while nothing moves",
        "noticed within window/4 (0.5 s), exit 1 within the window, < 0.3 s CPU meanwhile"),
    "tests/test_hil.py::test_losing_pigpiod_is_noticed_at_once_and_refuses_motion": (
        "pigpiod-lost-motion", "pigpiod dies: motion refused",
        "noticed at once, motion refused"),
    "tests/test_hil.py::test_a_hung_pigpiod_is_noticed_within_one_window": (
        "pigpiod-hung", "pigpiod hangs (answers nothing)", "noticed within one heartbeat window"),
}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    link = LINKED.get(report.nodeid)
    if link is None or (report.when != "call" and not (report.when == "setup" and report.outcome != "passed")):
        return
    key, fault, asserts = link
    outcome = {"passed": "passed", "failed": "FAILED", "skipped": "skipped"}[report.outcome]
    record(Row(key=key, fault=fault, test=report.nodeid, trials=1, outcome=f"{outcome}: {asserts}",
               figure="bounds asserted by the test (see outcome)", passed=report.outcome == "passed",
               seconds=round(report.duration, 1), recorded=time.strftime("%Y-%m-%d %H:%M:%S"), kind="linked"))
