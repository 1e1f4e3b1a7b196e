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


EXAMPLE = TESTS.parent / "config" / "example.yaml"


def example_config(heartbeat_window: str = "2s", pin_factory: str = "mock", extra: str = "", **gpio: object) -> str:
    """The shipped example config on a free loopback port, with the window and pin factory given."""
    text = EXAMPLE.read_text()
    text = text.replace('bind_address: "127.0.0.1:8080"', 'bind_address: "127.0.0.1:0"')
    text = text.replace("heartbeat_window: 2s", f"heartbeat_window: {heartbeat_window}")
    text = text.replace("pin_factory: mock", f"pin_factory: {pin_factory}")
    if gpio:
        text = text.replace("pigpio: {host: localhost, port: 8888}",
                            "pigpio: {" + ", ".join(f"{k}: {v}" for k, v in gpio.items()) + "}")
    return text + extra


class DaemonFactory:
    """Starts in-process daemons on mock (or emulated) pins and a free loopback port; shuts them all down after."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[object] = []
        self.fatal_calls = 0

    def __call__(self, text: str | None = None, **kwargs: str) -> object:
        from rover_safety.config import load
        from rover_safety.daemon.app import Daemon

        path = self.directory / f"config{len(self.started)}.yaml"
        path.write_text(text if text is not None else example_config(**kwargs))

        def on_fatal() -> None:
            self.fatal_calls += 1

        daemon = Daemon(load(path), config_path=str(path), on_fatal=on_fatal)
        daemon.start()
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            daemon.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
def make_daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`make_daemon(heartbeat_window="200ms")` -> a started Daemon; `.port` is its gRPC port, `.rig` its pins."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(params=["emulator", pytest.param("hardware", marks=pytest.mark.hardware)])
def gpio(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The pigpio backend under test: the emulator, or (ROVER_SAFETY_HIL=1, on a Pi) the real pigpiod."""
    from hil_fixtures import gpio_backend

    with gpio_backend(request.param) as backend:
        yield backend


@pytest.fixture
def emulated():  # type: ignore[no-untyped-def]
    """Always the emulator: for what only it can show (its command log, a pigpiod that dies or hangs)."""
    from hil_fixtures import gpio_backend

    with gpio_backend("emulator") as backend:
        yield backend
