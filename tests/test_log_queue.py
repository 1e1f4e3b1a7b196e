"""The log queue never waits: records past its limit are dropped, and the count is logged once there is room."""

from __future__ import annotations

import logging
import queue

from rover_safety.daemon.journal import BoundedQueueHandler


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("rover-safety", logging.INFO, __file__, 1, message, (), None)


def test_dropped_records_are_counted_then_reported_ahead_of_the_next() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = BoundedQueueHandler(records)
    for n in range(5):
        handler.handle(record(f"line {n}"))
    assert handler.dropped == 3
    assert [records.get_nowait().getMessage() for _ in range(2)] == ["line 0", "line 1"]
    handler.handle(record("line 5"))
    notice, after = records.get_nowait(), records.get_nowait()
    assert notice.levelno == logging.WARNING
    assert notice.getMessage() == "3 log records were dropped: the log thread fell behind"
    assert after.getMessage() == "line 5" and handler.dropped == 0


def test_a_notice_that_does_not_fit_keeps_counting() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue(1)
    handler = BoundedQueueHandler(records)
    handler.handle(record("line 0"))
    handler.handle(record("line 1"))
    records.get_nowait()
    handler.handle(record("line 2"))  # the notice takes the one place; this record is dropped and counted
    assert records.get_nowait().getMessage().startswith("1 log records were dropped")
    assert handler.dropped == 1
