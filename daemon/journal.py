"""Operator-facing events: structured journald entries under systemd, readable lines on a terminal."""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rover_safety.config import format_duration
from rover_safety.sessions import SessionEvent

from .journal_socket import JournalSocketHandler

log = logging.getLogger("rover-safety")

# One stable MESSAGE_ID per event kind; systemd/rover-safety.catalog explains each for `journalctl -x`.
MESSAGE_IDS = {
    "started": "e71c0825dc2949079f0206a8b2b5f8ec",
    "resumed": "f80db82e18554e3381585ae52a032a80",
    "expired": "a5ece02da8e4478cabbfda4c1ff61ae8",
    "closed": "a540e573ab05417da237f73c8e75bed7",
    "stop_failed": "14d1208ff7ec46df8ce2662f996cc386",
    "forced_off": "796b716add244b7dbed2820a7a5c6bdb",
    "unmonitored": "e506e4e2fe1548538ee26895a2fd804d",
    "backend_lost": "0138d8f8bcdf4b46b81dd965c043523c",
    "auth_failed": "f70a4627dcc54a40b8bb74da4e7d1e18",
    "insecure": "1f38ed7cbbb0405b8a7657e7d4f54fe7",
    "suppressed": "bb519779963442a9a7c684b989777727",
    "ended": "d736dc6f3d9147399ca7dd741b0dea2d",
    "part_lost": "2adef990c57f4b09bd72eb21e3029b51",
    "part_back": "acf7c0c293bb41ccbc763f2562ef7a40",
    "dropped": "d90840cb888c425080846f8b80c99566",
    "over_share": "2c17bffaeeda42f8b90303a71e39e3fa",
}
# Never summarised, whatever the churn: the evidence of what was stopped, and of stops that failed.
ALWAYS_LOGGED = frozenset({"stop_failed", "forced_off", "unmonitored", "backend_lost", "ended"})


def under_journald() -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM to its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


QUEUE_LIMIT = 10_000  # records waiting for the log thread before new ones are dropped (and counted)


class BoundedQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the log thread; never waits: when its queue is full, a record is dropped and counted, and
    the count is logged ahead of the next record that fits."""

    def __init__(self, queue: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(queue)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        try:
            if self.dropped:
                self.queue.put_nowait(logging.LogRecord(
                    record.name, logging.WARNING, __file__, 0,
                    "%d log records were dropped: the log thread fell behind", (self.dropped,), None))
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


_listener: logging.handlers.QueueListener | None = None


def setup(verbose: bool = False) -> None:
    """Send the daemon's log to journald when running under it, else to stderr as plain lines: always through a
    thread of its own, so that no thread that logs (the event loop that answers heartbeats, a stop thread) ever
    waits for the log. A stuck terminal or pipe holds up only that thread; a stuck journald, nothing at all."""
    global _listener
    handler: logging.Handler
    handler = plain = logging.StreamHandler()
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
    if under_journald():
        try:
            handler = JournalSocketHandler("rover-safety")
        except OSError:  # no journal socket here: plain lines, with the priority as journald's "<N>" prefix
            handler = logging.StreamHandler()
            handler.setFormatter(PriorityPrefixFormatter())
    if _listener is not None:
        _listener.stop()
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_LIMIT)
    _listener = logging.handlers.QueueListener(records, handler)
    # The log thread must never take a signal meant for the main thread (it waits for them in sigwait): started
    # with every signal blocked, it keeps them blocked.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))
    try:
        _listener.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    atexit.register(_listener.stop)  # what is queued is written before the process ends
    log.handlers[:] = [BoundedQueueHandler(records)]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


# syslog priorities (sd-daemon.h) of the logging levels: an expiry that stopped something moving is a warning (4),
# a failed stop critical (2). A "<N>" prefix on a line of stderr sets the entry's PRIORITY when stderr is journald.
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the standard ones round up to the next)."""
    return next((p for level, p in sorted(PRIORITIES.items()) if levelno <= level), 2)


class PriorityPrefixFormatter(logging.Formatter):
    """``<4>message``: journald reads the priority off each line (a bare level number would not do: "<40>" is
    priority 0, emergency, with facility 5)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{priority(record.levelno)}>{super().format(record)}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def describe(event: SessionEvent) -> tuple[int, str, dict[str, Any]]:
    """The log level, one-line message and journal fields of a session event."""
    fields: dict[str, Any] = {"MESSAGE_ID": MESSAGE_IDS[event.kind], "SESSION_EVENT": event.kind}
    if event.session_id:
        fields["SESSION_ID"] = event.session_id
    if event.peer:
        fields["PEER"] = event.peer
    if event.window:
        fields["HEARTBEAT_WINDOW_MS"] = f"{event.window * 1000:g}"
    if event.resources:
        fields["RESOURCES"] = ",".join(event.resources)
    if event.moving:
        fields["MOVING"] = ",".join(event.moving)
    if event.latency is not None:
        fields["STOP_LATENCY_MS"] = _ms(event.latency)
    who = f"session {event.session_id} from {event.peer or 'an unknown peer'}"
    stopped = ", ".join(event.resources) or "nothing (it drove no resource)"
    moving = f" (moving: {', '.join(event.moving)})" if event.moving else ""
    latency = f", outputs off {_ms(event.latency)} ms after the deadline" if event.latency is not None else ""
    window = format_duration(event.window)
    level, message = {
        "started": (logging.INFO, f"{who} started, heartbeat window {window}"),
        "resumed": (logging.INFO, f"{who} resumed"),
        "expired": (
            logging.WARNING if event.moving else logging.INFO,
            f"{who} expired: no heartbeat for {window}; stopped {stopped}{moving}{latency}",
        ),
        "closed": (
            logging.INFO,
            f"{who} closed by the client; stopped {stopped}{moving}"
            + (f", outputs off {_ms(event.latency)} ms after the close" if event.latency is not None else ""),
        ),
        "ended": (
            logging.WARNING if event.moving else logging.INFO,
            f"{who} ended: {event.detail}; stopped {stopped}{moving}{latency}",
        ),
        "stop_failed": (logging.CRITICAL, f"{who}: {event.detail}"),
        "forced_off": (logging.ERROR, f"{who}: {event.detail}"),
        "unmonitored": (logging.WARNING, f"unmonitored motion: {event.detail}"),
    }[event.kind]
    return level, message, fields


class LineBudget:
    """At most `per_second` lines a second per client; lines held back are counted and reported in one line when
    that client's second is over (a timer, started only when something was held back)."""

    def __init__(self, per_second: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self._held: dict[str, tuple[str, int]] = {}  # client -> (what, how many)
        self._timer: threading.Timer | None = None

    def admit(self, client: str, what: str, *, always: bool = False) -> bool:
        """Whether this client's next line may be written; if not, it is counted under `what`. An `always` line
        is written whatever the budget (it still uses some of it)."""
        now = self._clock()
        with self._lock:
            start, lines = self._windows.pop(client, (now, 0))
            if now - start >= 1.0:
                start, lines = now, 0
            allowed = always or lines < self.per_second
            self._windows[client] = (start, lines + 1)
            while len(self._windows) > 4096:
                self._windows.popitem(last=False)
            if not allowed:
                self._held[client] = (what, self._held.get(client, (what, 0))[1] + 1)
                if self._timer is None:
                    self._timer = threading.Timer(1.0, self._report)
                    self._timer.daemon = True
                    self._timer.start()
        return allowed

    def _report(self) -> None:
        with self._lock:
            held, self._held, self._timer = self._held, {}, None
        for client, (what, count) in held.items():
            log.warning("%d %s from %s were not logged one by one (more than %d a second)", count, what,
                        client or "an unknown peer", self.per_second,
                        extra={"MESSAGE_ID": MESSAGE_IDS["suppressed"], "PEER": client, "SUPPRESSED": str(count)})


budget = LineBudget()


def session_event(event: SessionEvent) -> None:
    """Log a session event; one client's churn (starts, closes, expiries that stopped nothing) is summarised, but
    an expiry that stopped something moving, and any failed stop, is always logged in full."""
    level, message, fields = describe(event)
    evidence = event.kind in ALWAYS_LOGGED or (event.kind == "expired" and bool(event.moving))
    client = event.peer.rpartition(":")[0] or event.peer
    if budget.admit(client, "session events", always=evidence):
        log.log(level, message, extra=fields)


def auth_failed(peer: str, entity: str, reason: str, *, limited: bool) -> None:
    """A refused Authenticate: logged (its own MESSAGE_ID), one client's flood summarised like session churn."""
    if budget.admit(peer.rpartition(":")[0] or peer, "failed authentications"):
        log.warning("authentication failed from %s for key id %s: %s", peer, entity, reason,
                    extra={"MESSAGE_ID": MESSAGE_IDS["auth_failed"], "PEER": peer, "AUTH_ENTITY": entity,
                           "AUTH_LIMITED": "1" if limited else "0"})


def over_share(owner: str, peer: str, reason: str) -> None:
    """A client refused for taking more than its share of calls or connections (the front door: once a minute)."""
    log.warning("%s (at %s) is over its share, its calls are refused after a hold: %s", owner, peer, reason,
                extra={"MESSAGE_ID": MESSAGE_IDS["over_share"], "PEER": peer, "OWNER": owner})


def event(kind: str, level: int, message: str, **fields: Any) -> None:
    """A daemon-level event with its own MESSAGE_ID (e.g. backend_lost)."""
    log.log(level, message, extra={"MESSAGE_ID": MESSAGE_IDS[kind], **fields})
