"""The daemon's log records, captured on its own logger (the CLI's set-up stops it propagating to the root)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .waiting import poll

LOGGER = "rover-safety"


def field(record: logging.LogRecord, name: str) -> str:
    """A journal field of a record (daemon/journal.py passes them as `extra`); "" when absent."""
    return str(getattr(record, name, ""))


class Records(logging.Handler):
    """Every record the daemon logs, with the journal fields it carries."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def events(self, kind: str) -> list[logging.LogRecord]:
        """The session events of one kind (SESSION_EVENT=kind)."""
        return [r for r in self.records if field(r, "SESSION_EVENT") == kind]

    def wait_for(self, kind: str, session_id: str, timeout: float = 5.0) -> logging.LogRecord:
        """The first `kind` event of a session, waiting for it; fails with everything logged so far."""
        def found() -> list[logging.LogRecord]:
            return [r for r in self.events(kind) if field(r, "SESSION_ID") == session_id]

        if poll(found, timeout, 0.01):
            return found()[0]  # records are only ever appended: the first found stays first
        seen = "\n".join(r.getMessage() for r in self.records)
        raise AssertionError(f"no {kind!r} event for session {session_id} within {timeout:g} s; the daemon "
                             f"logged:\n{seen}")


@contextmanager
def captured(level: int = logging.DEBUG) -> Iterator[Records]:
    """Capture the daemon's records at `level` and above for the duration of the block."""
    logger = logging.getLogger(LOGGER)
    handler, old_level = Records(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
