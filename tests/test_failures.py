"""drivers.Failures: every step runs even when earlier ones fail, and no failure is lost."""

from __future__ import annotations

import pytest
from rover_safety.drivers import Failures, StopFailed


def test_every_step_runs_and_the_first_failure_is_raised_with_the_others_noted() -> None:
    ran: list[str] = []
    failures = Failures()
    for name in ("a", "b", "c", "d"):
        with failures.step(name):
            ran.append(name)
            if name in ("b", "d"):
                raise OSError(f"{name} did not answer")
    assert ran == ["a", "b", "c", "d"]
    with pytest.raises(OSError, match="b did not answer") as info:
        failures.raise_first()
    assert info.value.__notes__ == ["d failed too: OSError('d did not answer')"]


def test_raise_all_names_every_failure() -> None:
    failures = Failures()
    for name in ("left", "right", "arm"):
        with failures.step(name):
            if name != "right":
                raise TimeoutError(name)
    with pytest.raises(StopFailed) as info:
        failures.raise_all()
    assert list(info.value.failures) == ["left", "arm"]
    assert "left: TimeoutError('left')" in str(info.value) and "arm: TimeoutError('arm')" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_nothing_failed_raises_nothing() -> None:
    failures = Failures()
    with failures.step("only"):
        pass
    assert not failures
    failures.raise_first()
    failures.raise_all()


def test_base_exceptions_are_not_swallowed() -> None:
    failures = Failures()
    with pytest.raises(KeyboardInterrupt), failures.step("ctrl-c"):
        raise KeyboardInterrupt
