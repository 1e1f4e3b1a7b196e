"""The stop path: when a session ends, cut its resources' power, stop each under a timeout, force off what failed,
and report what happened. Nothing here runs under the table's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .resource import CutPower, ForceOff, Stoppable
from .session import Session, SessionEvent

STOP_TIMEOUT = 0.25  # a driver's stop() that takes longer than this is treated as hung and its pins forced off


@dataclass(eq=False)
class StopReport:
    """The outcome of ending one session: which resources were stopped, how, and how late."""

    session: Session
    reason: str
    deadline: float
    resources: tuple[str, ...]  # what to stop: a base stopped whole stands for its motors
    stopped: tuple[str, ...] = ()  # everything that stops, the motors of a whole base included (for the log)
    off_at: dict[str, float] = field(default_factory=dict)
    moving: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    cut_failed: dict[str, str] = field(default_factory=dict)  # cut_power() at the deadline raised
    detail: str = ""  # why the session ended, when not its own expiry or close
    settled: threading.Event = field(default_factory=threading.Event)  # every resource stopped or forced off
    done: threading.Event = field(default_factory=threading.Event)  # ... and the outcome reported

    @property
    def latency(self) -> float | None:
        return max(self.off_at.values()) - self.deadline if self.off_at else None

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class StopPath:
    """Turns ended sessions' resources off: `cut` (on the caller's thread), then `dispatch` (stop threads)."""

    def __init__(
        self,
        on_event: Callable[[SessionEvent], None],
        *,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        thread_setup: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_event = on_event
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._resources: dict[str, Stoppable] = {}
        self._cutters: dict[str, Callable[[], None]] = {}
        self._stoppers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="stop", initializer=thread_setup)
        self._watchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stop-watch")

    def set_resources(self, resources: Mapping[str, Stoppable]) -> None:
        """Keep the resources and each one's cut_power, looked up once here rather than at every expiry."""
        self._resources = dict(resources)
        self._cutters = {n: r.cut_power for n, r in resources.items() if isinstance(r, CutPower)}

    def resource(self, name: str) -> Stoppable | None:
        return self._resources.get(name)

    def stop(self, reports: list[StopReport]) -> None:
        """Cut every report's power here and now, then hand each full stop to the stop threads."""
        for report in reports:
            self.cut(report)
        for report in reports:
            self.dispatch(report)

    def cut(self, report: StopReport) -> None:
        """Duty 0 on every PWM output of the report's resources, on this thread, without any driver's lock."""
        for name in report.resources:
            cut = self._cutters.get(name)
            if cut is not None:
                try:
                    cut()
                except Exception as exc:  # the stop() that follows tries again; the failure is reported with it
                    report.cut_failed[name] = repr(exc)

    def dispatch(self, report: StopReport) -> None:
        """Stop the report's resources concurrently, each under a timeout; logging happens off this thread too."""
        futures = []
        for name in report.resources:
            resource = self._resources.get(name)
            if resource is not None:
                futures.append((name, resource, self._stoppers.submit(self._stop_one, report, name, resource)))
        if futures:
            self._watchers.submit(self._watch, report, futures)
        else:
            self._watchers.submit(self._finish, report)

    def close(self) -> None:
        self._stoppers.shutdown(wait=False, cancel_futures=True)
        self._watchers.shutdown(wait=False, cancel_futures=True)

    def _stop_one(self, report: StopReport, name: str, resource: Stoppable) -> None:
        if resource.stop():
            report.moving.append(name)
        report.off_at[name] = self._clock()

    def _watch(self, report: StopReport, futures: list[tuple[str, Stoppable, Future[None]]]) -> None:
        """Wait for the stops; a stop that failed or hung is reported and its resource forced off."""
        for name, why in report.cut_failed.items():
            self._failed(report, name, f"cutting the power of {name} at the deadline failed: {why}")
        wait([f for _, _, f in futures], timeout=self._stop_timeout)
        for name, resource, future in futures:
            if future.done() and future.exception() is None:
                continue
            why = "timed out" if not future.done() else f"failed: {future.exception()!r}"
            report.failed[name] = why
            self._failed(report, name, f"stop of {name} {why}")
            self._force(report, name, resource)
        self._finish(report)

    def _force(self, report: StopReport, name: str, resource: Stoppable) -> None:
        if not isinstance(resource, ForceOff):
            return
        try:
            resource.force_off()
        except Exception as exc:  # nothing more this process can do: say so loudly
            self._failed(report, name, f"forcing {name} off failed too: {exc!r}")
            return
        report.off_at[name] = self._clock()
        s = report.session
        self._on_event(SessionEvent("forced_off", s.id, s.peer, resources=(name,),
                                    latency=report.off_at[name] - report.deadline,
                                    detail=f"{name} forced off at the pins after its stop {report.failed[name]}"))

    def _failed(self, report: StopReport, name: str, detail: str) -> None:
        s = report.session
        self._on_event(SessionEvent("stop_failed", s.id, s.peer, resources=(name,), detail=detail))

    def _finish(self, report: StopReport) -> None:
        report.settled.set()
        s = report.session
        self._on_event(SessionEvent(report.reason, s.id, s.peer, s.window, report.stopped, tuple(report.moving),
                                    report.latency, report.detail))
        report.done.set()
