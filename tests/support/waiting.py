"""Waiting for something a test expects, with one contract: return once it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(condition: Callable[[], object], timeout: float, interval: float = 0.002) -> bool:
    """Check `condition` every `interval` s until it is true (True) or `timeout` s have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "the condition", *,
               interval: float = 0.002) -> None:
    """Poll `condition` every `interval` s until it is true; raise AssertionError naming `what` after `timeout` s."""
    if not poll(condition, timeout, interval):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
