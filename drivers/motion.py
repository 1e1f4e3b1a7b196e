"""Time-based motion for drivers without encoders: runs for a duration unless cancelled, and can be waited on."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import InvalidCommand

MAX_DURATION = 24 * 3600.0  # seconds: a timed motion longer than a day is a mistake, not a plan


def check_duration(duration: float) -> float:
    """Refuse a timed motion longer than a day (or not a number)."""
    if not duration <= MAX_DURATION:
        raise InvalidCommand(f"that move would take {duration:.0f} s; at most {MAX_DURATION:.0f} s is allowed")
    return duration


class TimedMotion:
    """A motion that ends itself after `duration` seconds by calling `on_end`, unless cancelled first."""

    def __init__(self, duration: float, on_end: Callable[[TimedMotion], None]) -> None:
        self.duration = duration
        self.cancelled = False
        self.error: Exception | None = None  # what the stop at the end raised, if it failed
        self._done = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()
        self._on_end = on_end
        self._timer = threading.Timer(duration, self._finish)
        self._timer.daemon = True

    def start(self) -> TimedMotion:
        self._timer.start()
        return self

    def _finish(self) -> None:
        try:
            self._on_end(self)
        except Exception as exc:  # kept for whoever waits: a timer thread has nobody to tell
            self.error = exc
        finally:
            self._end()

    def cancel(self) -> None:
        """Called with the outputs already off (Stop, session expiry, a newer command)."""
        self.cancelled = True
        self._timer.cancel()
        self._end()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on whichever thread ends the motion) once it has ended; at once if it already has."""
        with self._callbacks_lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _end(self) -> None:
        with self._callbacks_lock:
            if self._done.is_set():
                return
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the motion to end; True if it ran its course, False if cancelled or still running."""
        return self._done.wait(timeout) and not self.cancelled


class MotionSlot:
    """A driver's one timed motion at a time: a newer command or a stop cancels it; its end calls `stop`."""

    def __init__(self, lock: threading.RLock, stop: Callable[[], object]) -> None:
        self._lock = lock
        self._stop = stop
        self._current: TimedMotion | None = None

    def start(self, duration: float) -> TimedMotion:
        """Start timing a motion whose outputs the caller has just set (holding the lock)."""
        self.cancel()
        self._current = TimedMotion(duration, self._ended).start()
        return self._current

    def cancel(self) -> None:
        if self._current is not None:
            self._current.cancel()
            self._current = None

    def _ended(self, motion: TimedMotion) -> None:
        with self._lock:
            if self._current is motion:
                self._current = None
                self._stop()
