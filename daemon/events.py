"""What happened, for operators: one stream of events that `rover-safety watch`, the web page and metrics share.

Events come from any thread (the session table's stop threads, command threads, the main thread); subscribers are
coroutines on the daemon's event loop, each with a bounded queue, so a slow or stalled reader costs a bounded amount
of memory and never delays anything else: when its queue is full it misses events and is told so ("lagged"), and
its next event carries a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

QUEUE_LIMIT = 256  # events a subscriber may fall behind by before it misses some
RECENT_EXPIRIES = 20


@dataclass(frozen=True)
class Event:
    """One thing that happened; `kind` as in safety.proto's Event (started, expired, moving, part_lost, ...)."""

    kind: str
    unix_time: float = field(default_factory=time.time)
    session_tag: str = ""
    peer: str = ""
    resources: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    latency_ms: float | None = None
    detail: str = ""


class EventHub:
    """Fans events out to subscribers on one event loop; keeps the last expiries for the status view."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._lagged: set[asyncio.Queue[Event]] = set()
        self._lock = threading.Lock()
        self.recent: collections.deque[Event] = collections.deque(maxlen=RECENT_EXPIRIES)
        self._listeners: list[Callable[[Event], None]] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver to subscribers on `loop` from now on (the daemon's serving loop)."""
        self._loop = loop

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` on the publishing thread for every event (metrics); it must be quick and never raise."""
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Record an event and hand it to every subscriber; safe from any thread, never blocks."""
        if event.kind in ("expired", "closed"):
            with self._lock:
                self.recent.appendleft(event)
        for listener in self._listeners:
            listener(event)
        loop = self._loop
        if loop is None or not self._subscribers:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is gone, nobody is listening
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._lagged.add(queue)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Every event from now on, for the duration of the block (on the event loop)."""
        subscription = Subscription(self)
        self._subscribers.add(subscription.queue)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription.queue)
            self._lagged.discard(subscription.queue)

    def expiries(self) -> list[Event]:
        with self._lock:
            return list(self.recent)


class Subscription:
    """One reader's queue of events."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` s without one; "lagged" once after events were missed."""
        if self.queue.empty() and self.queue in self._hub._lagged:
            self._hub._lagged.discard(self.queue)
            return Event("lagged", detail="this reader fell behind and missed events")
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
