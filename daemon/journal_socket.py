"""Journal entries sent without ever waiting: journald's native protocol on a non-blocking datagram socket.

systemd-python's JournalHandler calls sd_journal_sendv(), which blocks in sendmsg() while it holds the GIL when
journald is slow or stopped (its socket queue holds ten datagrams), and so freezes every thread of the daemon, the
deadline thread included, until the watchdog kills it. Here each entry is one datagram sent with MSG_DONTWAIT: if
journald cannot take it now, it is counted as dropped and the count is logged once journald takes entries again.
The format is systemd's (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): `NAME=value\\n` per field, and for a value
with a newline `NAME\\n`, its length as a little-endian 64-bit integer, the value, `\\n`.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
from typing import Any

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SEND_BUFFER = 1 << 20  # bytes queued in the kernel for journald before a send would have to wait
MAX_ENTRY = 48 * 1024  # a datagram larger than this is cut (the daemon's entries are far smaller)
_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def field(name: str, value: object) -> bytes:
    """One field of an entry in the native format."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


class JournalSocketHandler(logging.Handler):
    """A logging handler that writes each record as one journal entry and never waits for journald."""

    def __init__(self, identifier: str, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.dropped = 0
        self._lock_dropped = threading.Lock()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            self._socket.connect(path)
            self._socket.setblocking(False)
        except OSError:
            self._socket.close()
            raise

    def entry(self, record: logging.LogRecord) -> bytes:
        """The record as a native-protocol datagram: the message, priority, code location, and the record's
        upper-case attributes (the `extra` fields: MESSAGE_ID, SESSION_ID, ...)."""
        from .journal import priority

        parts = [
            field("MESSAGE", self.format(record)),
            field("PRIORITY", priority(record.levelno)),
            field("SYSLOG_IDENTIFIER", self.identifier),
            field("LOGGER", record.name),
            field("THREAD_NAME", record.threadName),
            field("CODE_FILE", record.pathname),
            field("CODE_LINE", record.lineno),
            field("CODE_FUNC", record.funcName),
        ]
        extra: dict[str, Any] = {k: v for k, v in vars(record).items() if k not in _STANDARD and _FIELD.fullmatch(k)}
        parts += [field(name, value) for name, value in extra.items() if value is not None]
        return b"".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.entry(record)
            if len(data) > MAX_ENTRY:
                data = data[:MAX_ENTRY]
            dropped = self._take_dropped()
            if dropped:
                self._send(field("MESSAGE", f"{dropped} log entries were dropped while journald took none")
                           + field("PRIORITY", 4) + field("SYSLOG_IDENTIFIER", self.identifier)
                           + field("MESSAGE_ID", "d90840cb888c425080846f8b80c99566") + field("DROPPED", dropped))
            self._send(data)
        except Exception:
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        try:
            self._socket.send(data)
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            with self._lock_dropped:
                self.dropped += 1

    def _take_dropped(self) -> int:
        with self._lock_dropped:
            dropped, self.dropped = self.dropped, 0
        return dropped

    def close(self) -> None:
        self._socket.close()
        super().close()
