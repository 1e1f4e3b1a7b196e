"""Scheduling of the daemon's own threads: real-time for the deadline and stop threads, a raised priority for the
thread that answers heartbeats, and garbage collection settled once so it never pauses a stop."""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import threading

log = logging.getLogger("rover-safety")

# SCHED_FIFO priority of the deadline thread and the stop threads; the unit's LimitRTPRIO= allows it without any
# capability.
REALTIME_PRIORITY = 10
# The nice value the serving thread (the event loop that answers heartbeats) asks for when it runs at a lower
# priority, so ordinary CPU load on the board cannot starve heartbeats into false expiries. The unit sets Nice=-10
# for the whole service already; elsewhere (`make run`, a terminal) this needs root or CAP_SYS_NICE or RLIMIT_NICE.
SERVING_NICE = -10


def realtime_thread() -> None:
    """Run the calling thread SCHED_FIFO, so a deadline wakes it on time on a busy board; warn once if refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except OSError as exc:
        _warn_not_realtime(exc.strerror or str(exc))


@functools.cache
def _warn_not_realtime(reason: str) -> None:
    log.warning("the session deadline and stop threads run without real-time priority (%s): stops may be late by "
                "milliseconds on a busy board; allow it with LimitRTPRIO=%d (the unit does)", reason,
                REALTIME_PRIORITY)


def raise_process_priority() -> None:
    """At start, before any thread exists: the whole daemon at SERVING_NICE if it runs lower and may go higher.

    Every thread the daemon starts inherits it, so that none that holds the GIL is preempted by ordinary processes
    while a deadline thread (SCHED_FIFO) waits for it: under CPU starvation, that wait is the stop's delay. The unit
    does the same with Nice=-10; this covers `make run` and any other launcher with the privilege.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > SERVING_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, SERVING_NICE)
    except OSError as exc:
        log.info("rover-safety keeps its nice value (%s): under heavy CPU load stops may be late by milliseconds; "
                 "its systemd unit sets Nice=-10, or give it CAP_SYS_NICE", exc.strerror or exc)


def serving_thread() -> None:
    """Raise the calling thread's priority to SERVING_NICE if it runs lower and the system allows it.

    On Linux a thread's nice value is its own (setpriority on its thread id), so this leaves the rest of the process
    where it was. Refused, the thread runs as it is, and the daemon says so once.
    """
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) > SERVING_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, SERVING_NICE)
    except OSError as exc:
        _note_not_raised(exc.strerror or str(exc))


@functools.cache
def _note_not_raised(reason: str) -> None:
    log.info("the threads that answer heartbeats and run commands keep their nice value (%s): under heavy CPU load "
             "on the board, run the daemon under its systemd unit (Nice=-10) or with CAP_SYS_NICE", reason)


# How long a thread that wants the GIL waits before it asks the holder to let go (CPython's default: 5 ms). The
# deadline thread is such a thread whenever the event loop is busy with calls: the default put up to 5 ms between a
# deadline and the cut (docs/BENCHMARKS.md).
GIL_SWITCH_INTERVAL = 0.0005


def short_gil_handover() -> None:
    """Make a thread that wants the GIL get it within GIL_SWITCH_INTERVAL of asking, instead of 5 ms."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def settle_garbage() -> None:
    """Collect once and freeze what survives, so a full collection later never holds the GIL for tens of ms."""
    gc.collect()
    gc.freeze()
