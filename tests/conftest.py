"""Shared fixtures; under CI=true a skipped test fails the run (CI must run everything but hardware tests)."""

from __future__ import annotations

import os

# Before anything imports grpc: its fork handlers restart a poller thread in a child forked to exec (subprocess with
# preexec_fn), which aborts when the child closes its descriptors (grpc/grpc#43055, grpcio >= 1.81). The tests fork
# such children (a throwaway systemd in a cgroup, clients at a nice level) from a process that holds channels; none
# of them goes on using gRPC across a fork, so the handlers are not wanted. Children inherit the setting.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import DaemonFactory
from tests.support.hil import Gpio, gpio_backend

pytest_plugins = ["tests.support.systemd_harness", "tests.support.systemd_rover", "tests.support.viam_sdk"]

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


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """`make_daemon(heartbeat_window="200ms")` -> a started Daemon; `.port` is its gRPC port, `.rig` its pins."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(params=["emulator", pytest.param("hardware", marks=pytest.mark.hardware)])
def gpio(request: pytest.FixtureRequest) -> Iterator[Gpio]:
    """The pigpio backend under test: the emulator, or (ROVER_SAFETY_HIL=1, on a Pi) the real pigpiod."""
    with gpio_backend(request.param) as backend:
        yield backend


@pytest.fixture
def emulated() -> Iterator[Gpio]:
    """Always the emulator: for what only it can show (its command log, a pigpiod that dies or hangs)."""
    with gpio_backend("emulator") as backend:
        yield backend
