"""Shared fixtures; under CI=true a skipped test fails the run (CI must run everything but hardware tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # helpers such as pigpiod_emulator and systemd_harness import as top-level modules

_skipped: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Hardware-in-the-loop tests run only when asked (ROVER_SAFETY_HIL=1 on a Pi); elsewhere they are deselected."""
    if os.environ.get("ROVER_SAFETY_HIL") == "1":
        return
    hardware = [item for item in items if item.get_closest_marker("hardware")]
    if hardware:
        config.hook.pytest_deselected(items=hardware)
        items[:] = [item for item in items if not item.get_closest_marker("hardware")]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CI=true: {len(_skipped)} test(s) were skipped, and CI must run them all:", red=True)
            for nodeid in _skipped:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
