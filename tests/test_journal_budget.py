"""One client's churn is summarised in the journal; the evidence of what was stopped never is."""

from __future__ import annotations

import logging
import time

from rover_safety.daemon import journal
from rover_safety.sessions import SessionEvent

from tests.support.logs import captured, field
from tests.support.waiting import wait_until

SUPPRESSED = "bb519779963442a9a7c684b989777727"


def churn(peer: str, count: int, kind: str = "started", moving: tuple[str, ...] = ()) -> None:
    for i in range(count):
        journal.session_event(SessionEvent(kind, f"id-{peer}-{i}", peer, 2.0, ("left",) if moving else (), moving,
                                           0.001 if kind == "expired" else None))


def test_a_clients_churn_is_summarised_but_expiries_that_stopped_something_are_not() -> None:
    journal.budget.per_second = 5
    try:
        with captured(logging.INFO) as records:
            churn("ipv4:10.0.0.9:1000", 50)  # a client that starts sessions in a loop
            churn("ipv4:10.0.0.9:1001", 10, "expired", moving=("left",))  # ... whose expiries stopped a motor
            churn("ipv4:10.0.0.8:2000", 3)  # another client: its own budget
            wait_until(lambda: any(field(r, "MESSAGE_ID") == SUPPRESSED for r in records.records), timeout=3,
                       what="the summary line")
        started = [r for r in records.events("started") if field(r, "PEER").startswith("ipv4:10.0.0.9")]
        expired = records.events("expired")
        others = [r for r in records.events("started") if field(r, "PEER").startswith("ipv4:10.0.0.8")]
        assert len(started) == 5, len(started)
        assert len(expired) == 10, "an expiry that stopped something moving is always logged"
        assert len(others) == 3
        (summary,) = [r for r in records.records if field(r, "MESSAGE_ID") == SUPPRESSED]
        assert field(summary, "SUPPRESSED") == "45" and "ipv4:10.0.0.9" in summary.getMessage()
    finally:
        journal.budget.per_second = 20


def test_the_budget_renews_every_second() -> None:
    budget = journal.LineBudget(per_second=2, clock=time.monotonic)
    assert [budget.admit("a", "x") for _ in range(3)] == [True, True, False]
    assert budget.admit("a", "x", always=True)
    time.sleep(1.05)
    assert budget.admit("a", "x")


def test_the_log_thread_never_takes_the_main_threads_signals() -> None:
    """journal.setup() starts the log's own thread; a SIGTERM meant for `serve`'s sigwait() must never land on it
    (its default action would end the daemon without turning anything off). Its signal mask says so."""
    import subprocess
    import sys

    script = (
        "import signal, threading\n"
        "from rover_safety.daemon import journal\n"
        "journal.setup()\n"
        "(log_thread,) = [t for t in threading.enumerate() if t is not threading.main_thread()]\n"
        "status = open(f'/proc/self/task/{log_thread.native_id}/status').read()\n"
        "blocked = int(next(l for l in status.splitlines() if l.startswith('SigBlk:')).split()[1], 16)\n"
        "print(all(blocked & (1 << (s - 1)) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout.strip() == "True", result.stdout + result.stderr
