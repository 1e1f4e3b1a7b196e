"""Simulated pins (gpiozero's mock factory with PWM), for `--simulate` and for tests without a Pi."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from gpiozero.pins import Factory

PinWatcher = Callable[[int, float], None]


def simulated_factory(on_change: PinWatcher | None = None) -> Factory:
    """Mock pins with PWM, a bounded change history, and an optional callback (bcm, state) on every change."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    class SimulatedPin(MockPWMPin):  # type: ignore[misc]
        def __init__(self, factory: Factory, info: Any) -> None:
            super().__init__(factory, info)
            # gpiozero keeps every change in a list, which would grow for as long as the daemon runs
            self.states: deque[Any] = deque(self.states, maxlen=1024)

        def _change_state(self, value: float) -> bool:
            changed = bool(super()._change_state(value))
            if changed and on_change is not None:
                on_change(int(self.info.name.removeprefix("GPIO")), float(value))
            return changed

    return MockFactory(pin_class=SimulatedPin)
