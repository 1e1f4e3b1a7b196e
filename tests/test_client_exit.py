"""Ending a program ends its session at once: SIGTERM (the client's handler, chained to the default), a normal exit
(atexit), and a program with a SIGTERM handler of its own (left alone; its exit still closes)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from rover_safety.client import connect

from tests.support.fake_server import FakeServer

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import signal, sys, time
from rover_safety.client import connect

if sys.argv[2] == "own-handler":
    def handler(signum, frame):
        print("own handler", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)
client = connect(sys.argv[1], tls=False)
client.motor("left").set_power(0.5)
print("driving", client.session_id, flush=True)
if sys.argv[2] != "exit":
    time.sleep(30)
"""


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(window=2.0) as srv:  # a long window: only CloseSession can end the session in time
        yield srv


class Child:
    """The script as a child process; its stdout and stderr read by threads, so that no read can block the test."""

    def __init__(self, server: FakeServer, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", SCRIPT, server.address, mode], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, stdout: bool) -> None:
        assert stream is not None
        for line in stream:
            (self.out if stdout else self.err).append(line)
            if stdout:
                self.lines.put(line)
        if stdout:
            self.lines.put(None)

    def line(self, timeout: float = 20) -> str:
        """The next line on its stdout ("" at its end)."""
        try:
            return self.lines.get(timeout=timeout) or ""
        except queue.Empty:
            raise AssertionError(f"the child wrote no line within {timeout:g} s: {''.join(self.err)}") from None

    def output(self) -> str:
        """All it wrote on stdout, once it has exited."""
        self._readers[0].join(5)
        return "".join(self.out)

    def close(self) -> None:
        self.proc.kill()  # its own pid, only if not yet reaped
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def run_child(server: FakeServer, mode: str) -> Iterator[tuple[Child, str]]:
    """The child, once it drives, and its session id; killed at the end whatever happened."""
    child = Child(server, mode)
    try:
        line = child.line()
        if not line.startswith("driving"):
            child.proc.kill()
            child.proc.wait(10)
            raise AssertionError(f"the child did not start: {line!r} {child.output()} {''.join(child.err)}")
        yield child, line.split()[1]
    finally:
        child.close()


def closed(server: FakeServer, sid: str) -> bool:
    return any(r.request.id == sid for r in server.calls("SafetyService/CloseSession"))  # type: ignore[attr-defined]


def test_sigterm_closes_the_session_then_ends_the_program_as_sigterm_does(server: FakeServer) -> None:
    with run_child(server, "sleep") as (child, sid):
        sent = time.monotonic()
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(10) == -signal.SIGTERM
        elapsed = time.monotonic() - sent
    print(f"\nSIGTERM to exit with the session closed: {elapsed * 1000:.0f} ms")
    assert closed(server, sid) and server.sessions[sid].ended == "closed"
    assert elapsed < 2.0  # well inside the 2 s window


def test_a_normal_exit_closes_the_session(server: FakeServer) -> None:
    with run_child(server, "exit") as (child, sid):
        assert child.proc.wait(10) == 0
    assert closed(server, sid)


def test_a_program_with_its_own_sigterm_handler_keeps_it(server: FakeServer) -> None:
    with run_child(server, "own-handler") as (child, sid):
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(10) == 3
        assert "own handler" in child.output()
    assert closed(server, sid)  # its sys.exit ran atexit


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    """SIGTERM at its default disposition for the test, whatever ran before."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("default_sigterm")
def test_the_handler_is_installed_only_from_the_main_thread_and_removed_after(server: FakeServer) -> None:
    with connect(server.address, tls=False):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with connect(server.address, tls=False, handle_sigterm=False):
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    seen: list[object] = []

    def in_thread() -> None:
        with connect(server.address, tls=False):
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(10)
    assert seen == [signal.SIG_DFL]

    def own(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, own)
    with connect(server.address, tls=False):
        assert signal.getsignal(signal.SIGTERM) is own  # the program's handler is left alone
    assert signal.getsignal(signal.SIGTERM) is own
