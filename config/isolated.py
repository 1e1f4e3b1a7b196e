"""`load()` in a child process, under a memory limit and a timeout, so reading a config never competes with the
caller for its GIL, its memory or its time.

The child (`python -m rover_safety.config.isolated [--memory-bytes N] PATH`) prints one JSON object: `{"config":
Config.to_dict()}` or `{"error": {"source", "line", "key", "problem"}}`; a child that runs out of memory exits 3.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any

from .errors import ConfigError
from .loading import load
from .model import Config

CHILD_MODULE = "rover_safety.config.isolated"
_OUT_OF_MEMORY = 3


def load_isolated(path: str | os.PathLike[str], *, timeout: float = 5.0, memory_bytes: int = 256 * 2**20) -> Config:
    """`load(path)` run in a child process limited to `memory_bytes` of address space and `timeout` seconds.

    Raises ConfigError for a bad config (as `load` would, line and all), and for a child that times out, runs out
    of memory or dies, naming the file.
    """
    source = str(path)
    command = [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m", CHILD_MODULE,
               "--memory-bytes", str(memory_bytes), "--", source]
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ConfigError(source, None, "", f"cannot start a process to read it: {exc.strerror or exc}") from None
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(child)
        raise ConfigError(source, None, "", f"took longer than {timeout:g} s to read") from None
    except BaseException:
        _kill(child)
        raise
    limit = f"limit {memory_bytes / 2**20:g} MiB"
    if child.returncode == _OUT_OF_MEMORY or (child.returncode != 0 and b"MemoryError" in err[-2000:]):
        raise ConfigError(source, None, "", f"ran out of memory ({limit})")
    if child.returncode != 0:
        raise ConfigError(source, None, "", f"the process reading it {_death(child.returncode)}: {_last_line(err)}")
    return _answer(source, out)


def _kill(child: subprocess.Popen[bytes]) -> None:
    """Kill the child and reap it, waiting a moment at most (one stuck in the kernel is left for Popen to reap)."""
    child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.communicate(timeout=1.0)


def _answer(source: str, out: bytes) -> Config:
    try:
        answer = json.loads(out)
        if "error" in answer:
            e = answer["error"]
            if not (isinstance(e["source"], str) and isinstance(e["key"], str) and isinstance(e["problem"], str)
                    and (e["line"] is None or (isinstance(e["line"], int) and not isinstance(e["line"], bool)))):
                raise ValueError("a malformed error")
            error = ConfigError(e["source"], e["line"], e["key"], e["problem"])
        else:
            return Config.from_dict(answer["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(source, None, "", f"the process reading it gave an unreadable answer ({exc})") from None
    raise error


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"failed (exit status {returncode})"


def _last_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    last = lines[-1] if lines else "no message"
    return last if len(last) <= 120 else last[:119] + "…"


# --- The child ----------------------------------------------------------------------------------


def _limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space (never above the hard limit, which an unprivileged process cannot raise)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))


def main(argv: list[str] | None = None) -> int:
    """The child: read the config named on the command line and print the answer as one JSON object."""
    args = sys.argv[1:] if argv is None else argv
    memory_bytes: int | None = None
    if args[:1] == ["--memory-bytes"]:
        memory_bytes, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if len(args) != 1:
        print(f"usage: python -m {CHILD_MODULE} [--memory-bytes N] PATH", file=sys.stderr)
        return 2
    try:
        if memory_bytes is not None:
            _limit_memory(memory_bytes)
        answer: dict[str, Any]
        try:
            answer = {"config": load(args[0]).to_dict()}
        except ConfigError as exc:
            answer = {"error": {"source": exc.source, "line": exc.line, "key": exc.key, "problem": exc.problem}}
        text = json.dumps(answer, allow_nan=False)
        sys.stdout.write(text)
        sys.stdout.flush()
    except MemoryError:
        os._exit(_OUT_OF_MEMORY)  # nothing more can be allocated, not even a traceback
    return 0


if __name__ == "__main__":
    sys.exit(main())
