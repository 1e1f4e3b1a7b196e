"""Closing clients when the program ends: at normal exit (atexit), and on SIGTERM.

The SIGTERM handler is installed only from the main thread and only if the program has none of its own (the
disposition is the default): it closes every open client (CloseSession: the robot stops now, not a window later),
then restores the default disposition and sends itself SIGTERM again, so the program still ends as a SIGTERM ends
it. Closing the last client from the main thread puts the default disposition back. A program with a SIGTERM
handler of its own should call `client.close()` there (or raise SystemExit, so that atexit does it). Pass
`handle_sigterm=False` to `connect()` to leave SIGTERM alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from types import FrameType
from typing import Protocol

log = logging.getLogger("rover_safety.client")


class Closable(Protocol):
    """What is closed at exit."""

    def close(self) -> None: ...


_open: list[Closable] = []
_lock = threading.Lock()
_sigterm_installed = False


def register(client: Closable, handle_sigterm: bool) -> None:
    """Close `client` at exit (and on SIGTERM, if asked and possible)."""
    with _lock:
        _open.append(client)
    if handle_sigterm:
        install_sigterm()


def forget(client: Closable) -> None:
    """`client` was closed: nothing to do for it at exit (the last one closed from the main thread also removes the
    SIGTERM handler, if it is still ours)."""
    global _sigterm_installed
    with _lock:
        if client in _open:
            _open.remove(client)
        last = not _open
    if last and _sigterm_installed and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm_installed = False


def close_all() -> None:
    """Close every registered client (newest first)."""
    with _lock:
        clients = list(reversed(_open))
        _open.clear()
    for client in clients:
        try:
            client.close()
        except Exception as exc:  # exiting: report, go on with the others
            log.warning("rover-safety client: closing at exit failed: %s", exc)


def install_sigterm() -> bool:
    """Install the SIGTERM handler if this is the main thread and the program has none; whether it is installed."""
    global _sigterm_installed
    if _sigterm_installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _sigterm_installed
    close_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the previous behaviour: end as SIGTERM ends a program
    _sigterm_installed = False
    os.kill(os.getpid(), signal.SIGTERM)


atexit.register(close_all)
