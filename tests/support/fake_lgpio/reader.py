"""The test side of the fake lgpio: read a chip state file (lines, event log), drive inputs, stage a dead owner."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..waiting import poll
from ._impl import (
    CLAIM_FREE,
    CLAIM_NAMES,
    CLAIM_OUTPUT,
    DEAD_PID,
    DIR_INPUT,
    DIR_OUTPUT,
    EV_CLAIM_OUTPUT,
    EV_PWM,
    EV_SET_INPUT,
    F_FROZEN,
    F_PWM,
    KINDS,
    SET_ACTIVE_LOW,
    SET_OPEN_DRAIN,
    SET_OPEN_SOURCE,
    SET_PULL_DOWN,
    SET_PULL_NONE,
    SET_PULL_UP,
    ChipFile,
    line_locked,
)


@dataclass(frozen=True)
class LineState:
    """One line as the hardware and the kernel have it now.

    ``mode`` is the line request: "free", "input", "output" or "alert"; a line whose owner died is "free" (the
    kernel released it) while ``owner_pid`` still names that owner and ``owner_alive`` is False. ``direction`` is
    what the pin is electrically: a released output keeps driving ``level``. ``level`` is the level on the pin:
    for a running PWM 1 while its duty is above 0 (as the pigpiod emulator reports), for a PWM whose threads are
    gone (its owner died, or it was stopped with frequency 0) the level it was left at, worst case — high if the
    duty was above 0 — with ``frozen`` True; for an input what drives it (``FakeChip.set_input``) or its pull.
    ``duty`` (percent) and ``frequency`` are set only while a live owner's PWM runs. ``changed_at`` is the
    ``time.monotonic_ns()`` of the last change, ``settled_at`` when the pin reflects it for sure (a new PWM duty
    takes over at the end of the running cycle: up to one period later).
    """

    gpio: int
    mode: str
    direction: str
    level: int
    duty: float | None
    frequency: float | None
    owner_pid: int | None
    owner_alive: bool
    frozen: bool
    changed_at: int
    settled_at: int
    flags: int  # the line flags of the last claim (lgpio SET_* bits: active low, drive, bias)

    @property
    def pwm_running(self) -> bool:
        return self.duty is not None

    @property
    def pull(self) -> str:
        return {SET_PULL_UP: "up", SET_PULL_DOWN: "down", SET_PULL_NONE: "none"}.get(
            self.flags & (SET_PULL_UP | SET_PULL_DOWN | SET_PULL_NONE), "")

    @property
    def active_low(self) -> bool:
        return bool(self.flags & SET_ACTIVE_LOW)

    @property
    def drive(self) -> str:
        return "open_drain" if self.flags & SET_OPEN_DRAIN else "open_source" if self.flags & SET_OPEN_SOURCE else ""


@dataclass(frozen=True)
class Event:
    """One logged call (or kernel action) that changed the chip, in order of ``seq``.

    ``kind``: "open"/"close" (a gpiochip handle; ``gpio`` -1, ``result`` the handle slot, ``flags`` the chip
    number), "claim_input"/"claim_output"/"claim_alert", "free" (gpio_free, or lg freeing a line to claim it
    again), "write", "pwm" (tx_pwm / tx_pulse / tx_servo; frequency 0 stops), "released" (the line request ended
    with gpiochip_close), "reaped" (a claim whose owner had died, found by the next claimant: ``pid`` is the dead
    owner, ``t_ns`` when it was found), "set_input" (the test drove an input; ``level`` -1: undriven). ``level``
    is the pin's level after the call (for PWM: 1 while the duty is above 0); a failed call has ``result`` < 0
    (the lgpio error number) and ``level`` -1. For "pwm" ``result`` is what tx_pwm returned (free queue entries).
    """

    seq: int
    t_ns: int  # time.monotonic_ns() of the call (CLOCK_MONOTONIC: comparable across processes)
    pid: int
    gpio: int
    kind: str
    level: int
    frequency: float
    duty: float
    result: int
    flags: int

    @property
    def t(self) -> float:
        """The time in seconds, comparable with time.monotonic()."""
        return self.t_ns / 1e9


def _event(fields: tuple[Any, ...]) -> Event:
    seq, t, pid, gpio, kind, level, freq, duty, result, flags = fields
    return Event(seq, t, pid, gpio, KINDS[kind] if kind < len(KINDS) else str(kind), level, freq, duty, result, flags)


class FakeChip:
    """A reader (and test-side driver) of a chip state file made by ``create()``; usable from any process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = ChipFile(str(path))

    @property
    def lines(self) -> int:
        return self._file.lines

    @property
    def capacity(self) -> int:
        """How many events the ring keeps."""
        return self._file.capacity

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ lines

    def line(self, gpio: int) -> LineState:
        if not 0 <= gpio < self.lines:
            raise ValueError(f"GPIO {gpio} is not a line of this chip (0..{self.lines - 1})")
        f = self._file
        f.lock(shared=True)
        try:
            rec = f.read_owner(gpio)
            ext = f.ext(gpio)
            alive = rec[1] != CLAIM_FREE and line_locked(f.fd, gpio)
        finally:
            f.unlock()
        pid, claim, direction, level, flags, kflags, on, _off, _, _token, _start, freq, duty, changed, settled = rec
        pwm = bool(flags & F_PWM)
        if pwm:
            level = 1 if on > 0 else 0
            frozen = not alive
        elif direction == DIR_INPUT:
            level = ext if ext >= 0 else 1 if kflags & SET_PULL_UP else 0
            frozen = False
        else:
            frozen = bool(flags & F_FROZEN)
        running = pwm and alive
        return LineState(
            gpio=gpio, mode=CLAIM_NAMES[claim] if alive else "free",
            direction="output" if direction == DIR_OUTPUT else "input", level=level,
            duty=duty if running else None, frequency=freq if running else None,
            owner_pid=pid if claim != CLAIM_FREE else None, owner_alive=alive, frozen=frozen,
            changed_at=changed, settled_at=settled, flags=kflags & 0xFF,
        )

    def effective_level(self, gpio: int) -> int:
        """The level on the pin now, the dead-owner rule applied (a PWM whose owner died: frozen, worst case)."""
        return self.line(gpio).level

    def set_input(self, gpio: int, level: int | None) -> None:
        """Drive the pin from outside (a button, a sensor): what it reads as an input; None: its pull decides."""
        if level not in (0, 1, None):
            raise ValueError("level must be 0, 1 or None")
        f = self._file
        now = time.monotonic_ns()
        f.lock()
        try:
            f.set_ext(gpio, -1 if level is None else level)
            f.append(now, os.getpid(), gpio, EV_SET_INPUT, -1 if level is None else level, 0.0, 0.0, 0, 0)
        finally:
            f.unlock()

    def simulate_dead_owner(
        self, gpio: int, *, duty: float = 60.0, frequency: float = 800.0, pid: int = DEAD_PID
    ) -> None:
        """Stage "the process died mid-PWM": the line claimed as an output by ``pid``, PWM at ``duty`` % — and no
        line request behind it, as after its owner was killed (so it reads frozen, high if ``duty`` > 0, and a new
        claimant gets it). The log shows that owner's claim and PWM."""
        if not 0.1 <= frequency <= 1e4 or not 0.0 <= duty <= 100.0:
            raise ValueError("frequency must be 0.1..10000 Hz and duty 0..100 %")
        micros = int(1.0e6 / frequency + 0.5)
        on = int(duty / 100.0 * micros + 0.5)
        f = self._file
        now = time.monotonic_ns()
        f.lock()
        try:
            rec = f.read_owner(gpio)
            if rec[1] != CLAIM_FREE and line_locked(f.fd, gpio):
                raise RuntimeError(f"GPIO {gpio} is claimed by a live process (pid {rec[0]})")
            token = int.from_bytes(os.urandom(8), "little") or 1
            f.write_owner(gpio, pid, CLAIM_OUTPUT, DIR_OUTPUT, 0, F_PWM, 0, on, micros - on, 0, token, 0,
                          frequency, duty, now, now)
            f.append(now, pid, gpio, EV_CLAIM_OUTPUT, 0, 0.0, 0.0, 0, 0)
            f.append(now, pid, gpio, EV_PWM, 1 if on > 0 else 0, frequency, duty, 9, 0)
        finally:
            f.unlock()

    # ------------------------------------------------------------------ the event log

    @property
    def next_seq(self) -> int:
        """The sequence number the next event will get (events so far, including those the ring dropped)."""
        f = self._file
        f.lock(shared=True)
        try:
            return f.next_seq()
        finally:
            f.unlock()

    def events_after(self, seq: int) -> list[Event]:
        """Retained events with ``seq`` greater than the one given, oldest first."""
        f = self._file
        f.lock(shared=True)
        try:
            return [_event(e) for e in f.read_events(seq)]
        finally:
            f.unlock()

    def events(self) -> list[Event]:
        """Every retained event, oldest first (the first ``next_seq - capacity`` are gone once the ring is full)."""
        return self.events_after(-1)

    def events_since(self, t_ns: int) -> list[Event]:
        """Retained events at or after ``t_ns`` (time.monotonic_ns())."""
        return [e for e in self.events() if e.t_ns >= t_ns]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, interval: float = 0.001) -> bool:
        return poll(predicate, timeout, interval)
