"""Where the official Viam Python SDK is: a venv of its own (it pins its own protobuf), so it never runs in this
process; tests run its interpreter in a child process (tests/support/viam_client.py, or a script of their own)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from .daemons import CHECKOUT

# `make test` creates .venv-viam; ROVER_SAFETY_VIAM_PYTHON names any other python that has viam-sdk installed.
VIAM_PYTHON = Path(os.environ.get("ROVER_SAFETY_VIAM_PYTHON", CHECKOUT / ".venv-viam" / "bin" / "python"))
CLIENT = Path(__file__).parent / "viam_client.py"
REPLY_TIMEOUT = 15.0  # for any one reply of the client, connecting included


def sdk_env() -> dict[str, str]:
    """This process's environment without what would make the SDK's interpreter import this venv's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def viam_python() -> str:
    """The Viam SDK's interpreter; the test is skipped (which fails CI) if it is missing."""
    if not VIAM_PYTHON.is_file():
        pytest.skip(f"the official Viam SDK venv is missing: no {VIAM_PYTHON} (`make test` creates it; or set "
                    "ROVER_SAFETY_VIAM_PYTHON to a python that has viam-sdk installed)")
    probe = subprocess.run([str(VIAM_PYTHON), "-c", "import viam.robot.client"], capture_output=True, text=True,
                           timeout=60, env=sdk_env())
    if probe.returncode != 0:
        pytest.skip(f"{VIAM_PYTHON} cannot import the Viam SDK (viam-sdk not installed there?): {probe.stderr[-500:]}")
    return str(VIAM_PYTHON)


class SdkClient:
    """One viam_client.py process: `call("motor.set_power", "left", 0.5)` returns its JSON reply."""

    def __init__(self, python: str, address: str, flags: tuple[str, ...], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        try:
            self.proc = subprocess.Popen(
                [python, str(CLIENT), address, *flags],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                env={**sdk_env(), **(env or {})},
            )
        except BaseException:
            self._log.close()
            raise
        self._replies: queue.Queue[str | None] = queue.Queue()
        try:
            threading.Thread(target=self._read, name="viam-client-reader", daemon=True).start()
            self.resources: list[str] = self._reply()["resources"]
        except BaseException:  # pytest.fail() included: no caller gets this object to close, so close it here
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _reply(self) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the SDK client did not answer within {REPLY_TIMEOUT:g} s; its log:\n{self.log()}")
        if line is None:
            pytest.fail(f"the SDK client exited (status {self.proc.wait(5)}); its log:\n{self.log()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, *words: object) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def ok(self, *words: object) -> dict[str, Any]:
        reply = self.call(*words)
        assert reply["ok"], f"{' '.join(map(str, words))} failed: {reply}\nclient log:\n{self.log()}"
        return reply

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()
