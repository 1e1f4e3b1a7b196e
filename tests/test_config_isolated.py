"""load_isolated: load() in a child process; the same Config or ConfigError, and a clear error when the child fails."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from rover_safety.config import ConfigError, load, load_isolated

EXAMPLE = Path(__file__).parent.parent / "config" / "example.yaml"


def isolated_error(path: Path, *, timeout: float = 10.0, memory_bytes: int = 256 * 2**20) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_isolated(path, timeout=timeout, memory_bytes=memory_bytes)
    return info.value


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value


def test_the_example_gives_the_same_config_as_load() -> None:
    assert load_isolated(EXAMPLE) == load(EXAMPLE)


def test_a_full_config_with_secrets_and_warnings_survives_the_trip(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("pem\n")
    path = tmp_path / "rover.yaml"
    path.write_text(EXAMPLE.read_text().replace("{a: 17, b: 27, pwm: 22}", "{a: 7, b: 27, pwm: 22}") + (
        f"remotes:\n  - name: arm\n    address: arm.local:8080\n    tls: {{ca_file: {pem}}}\n"
        "    auth: {key_id: primary, key: 'k3y'}\n"))
    config = load_isolated(path)
    assert config == load(path)
    assert config.warnings and config.remotes[0].auth is not None and config.remotes[0].auth.key == "k3y"


def test_a_config_error_passes_through_with_its_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("network:\n  sessions:\n    heartbeat_window: 10ms\n")
    error = isolated_error(path)
    expected = load_error(path)
    assert (error.source, error.line, error.key, error.problem) == (
        expected.source, expected.line, expected.key, expected.problem)
    assert str(error) == f"{path}:3: network.sessions.heartbeat_window: '10ms' is out of range: allowed 30ms..1m"


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "it is a named pipe (FIFO), not a regular file" in isolated_error(fifo).problem
    assert time.monotonic() - started < 5.0


def test_a_huge_file_and_an_alias_bomb_are_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("#" * 2**20)
    assert isolated_error(huge).problem.startswith("is too large (1048576 bytes)")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\nnetwork: {bind_address: *a9}\n")
    error = isolated_error(bomb)
    assert (error.line, error.key) == (5, "a4") and "expands to more than 10000 values" in error.problem


def test_a_missing_file_is_the_same_error_as_load(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(isolated_error(missing)) == f"{missing}: cannot read config: No such file or directory"


def test_a_child_that_takes_too_long_is_a_config_error() -> None:
    """A timeout shorter than a Python start-up: the child is killed and the caller told which file."""
    started = time.monotonic()
    error = isolated_error(EXAMPLE, timeout=0.001)
    assert str(error) == f"{EXAMPLE}: took longer than 0.001 s to read"
    assert time.monotonic() - started < 5.0


def test_a_child_that_runs_out_of_memory_is_a_config_error() -> None:
    """An address-space limit below what the child already uses: its next allocation fails."""
    assert str(isolated_error(EXAMPLE, memory_bytes=2**20)) == f"{EXAMPLE}: ran out of memory (limit 1 MiB)"


def test_a_child_that_dies_or_talks_nonsense_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    assert isolated_error(EXAMPLE).problem == "the process reading it failed (exit status 1): no message"
    monkeypatch.setattr(sys, "executable", "/bin/echo")
    assert "the process reading it gave an unreadable answer" in isolated_error(EXAMPLE).problem
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert isolated_error(EXAMPLE).problem == "cannot start a process to read it: No such file or directory"
