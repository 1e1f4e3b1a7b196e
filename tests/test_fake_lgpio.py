"""The fake lgpio (tests/support/fake_lgpio): gpiozero's real LGPIOFactory on it, state that outlives the process
driving it (a killed PWM owner leaves its line frozen high), the device node, lgpio's notification pipe, lg's
return values and errors, and the cost of the stop call ``tx_pwm(h, g, f, 0)``."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.fake_lgpio import (
    CLOSE_SETTLE_S,
    DEAD_PID,
    ENV_CHIP,
    ENV_DEV,
    ENV_WD,
    SITE_DIR,
    FakeChip,
    FakeLgpioConfigError,
    child_env,
    create,
    installed,
    pi_command,
    pi_namespace_unavailable,
    pi_revision,
)

ROOT = os.geteuid() == 0
NOBODY = 65534

# A child: runs its code (which fills ``result``), prints ``result`` as one JSON line, then waits on stdin.
_DRIVER = textwrap.dedent("""
    import json, sys
    result = {}
    exec(sys.argv[1])
    print(json.dumps(result), flush=True)
    sys.stdin.readline()
""")


class Children:
    """Child processes of a test, ended (killed) at its end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, code: str, env: dict[str, str], *, wrap: Sequence[str] = (), **popen: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*wrap, sys.executable, "-c", _DRIVER, textwrap.dedent(code)], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
        )
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen[str], timeout: float = 15.0) -> dict[str, Any]:
        """The child's JSON line (it is then waiting on stdin)."""
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            raise AssertionError(f"child said nothing (exit {proc.returncode}): {proc.stderr.read()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def finish(self, proc: subprocess.Popen[str]) -> int:
        """Let the child return (it exits normally); its exit code."""
        assert proc.stdin is not None
        proc.stdin.close()
        return proc.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    yield kids
    kids.close()


@pytest.fixture
def chip_path(tmp_path: Path) -> Path:
    path = tmp_path / "chip.state"
    create(path)
    for n in (0, 4):  # gpiozero opens chip 4 on a Pi 5 when /dev/gpiochip4 exists, else 0
        (tmp_path / f"gpiochip{n}").touch()
    return path


@pytest.fixture
def device(tmp_path: Path) -> str:
    return str(tmp_path / "gpiochip{chip}")


@pytest.fixture
def chip(chip_path: Path) -> Iterator[FakeChip]:
    with FakeChip(chip_path) as reader:
        yield reader


@pytest.fixture
def lgpio(chip_path: Path, device: str) -> Iterator[ModuleType]:
    with installed(chip_path, device=device) as module:
        yield module


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="fake-lgpio-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def process_state(pid: int) -> str:
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return stat_line[stat_line.rindex(")") + 2]


def kinds(events: Sequence[Any], gpio: int) -> list[str]:
    return [e.kind for e in events if e.gpio == gpio]


# ---------------------------------------------------------------------------------------------- gpiozero on the fake


@pytest.fixture
def factory(chip_path: Path, device: str) -> Iterator[Any]:
    """gpiozero's LGPIOFactory() in this process, on the fake (closed at the end)."""
    with installed(chip_path, device=device), pi_revision():
        from gpiozero.pins.lgpio import LGPIOFactory

        lgpio_factory = LGPIOFactory()  # as rover_safety.drivers.pins.open_factory("lgpio") makes it
        try:
            yield lgpio_factory
        finally:
            lgpio_factory.close()


def test_gpiozero_lgpio_factory_drives_the_fake(factory: Any, chip: FakeChip) -> None:
    """gpiozero's own LGPIOFactory, unchanged: outputs and PWM on several pins, read back, closed; the fake's state
    and log show each write, in order, with its time."""
    from gpiozero import DigitalOutputDevice, PWMOutputDevice

    t0 = chip.events()[0].t_ns  # the factory's gpiochip_open
    assert factory.board_info.model == "5B"
    assert factory.chip == (4 if os.path.exists("/dev/gpiochip4") else 0)
    a = DigitalOutputDevice(17, pin_factory=factory)
    b = DigitalOutputDevice(27, pin_factory=factory, initial_value=True)
    pwm = PWMOutputDevice(22, pin_factory=factory, frequency=800)
    pwm2 = PWMOutputDevice(19, pin_factory=factory, frequency=1000)
    assert (chip.line(17).mode, chip.line(17).level, chip.line(27).level) == ("output", 0, 1)
    assert chip.line(17).owner_pid == os.getpid() and chip.line(17).owner_alive

    a.on()
    pwm.value = 0.6
    pwm2.value = 0.25
    assert (a.value, b.value, pwm.value, pwm2.value) == (1, 1, 0.6, 0.25)
    line = chip.line(22)
    assert (line.mode, line.level, line.duty, line.frequency) == ("output", 1, 60.0, 800.0)
    assert (chip.line(19).duty, chip.line(19).frequency) == (25.0, 1000.0)
    pwm.value = 0.555  # gpiozero hands lgpio whole percents, truncated
    assert chip.line(22).duty == 55.0

    a.off()
    b.off()
    pwm.value = 0  # the stop: duty 0, which lg applies at the end of the running cycle
    line = chip.line(22)
    assert (line.level, line.duty) == (0, 0.0)
    assert line.settled_at - line.changed_at >= 1_250_000  # up to one 800 Hz period later
    assert (chip.line(17).level, chip.line(27).level) == (0, 0)

    events = chip.events_since(t0)
    assert all(e.pid == os.getpid() and e.result >= 0 for e in events)
    assert [e.t_ns for e in events] == sorted(e.t_ns for e in events)
    writes17 = [(e.kind, e.level) for e in events if e.gpio == 17 and e.kind in ("claim_output", "write")]
    assert writes17 == [("claim_output", 0), ("write", 0), ("write", 1), ("write", 0)]
    duties22 = [(e.frequency, e.duty, e.result) for e in events if e.gpio == 22 and e.kind == "pwm"]
    assert duties22 == [(800.0, 0.0, 9), (800.0, 0.0, 8), (800.0, 60.0, 8), (800.0, 55.0, 8), (800.0, 0.0, 8)]
    assert kinds(events, 22)[:3] == ["claim_input", "free", "claim_output"]  # gpiozero's pin, then output

    mark = chip.next_seq
    pwm2.close()  # gpiozero stops the PWM (frequency 0) at 25 % duty, then makes the pin an input
    closing = [(e.kind, e.level) for e in chip.events_after(mark - 1)]
    assert closing == [("pwm", 1), ("free", 1), ("claim_input", 0)]  # left high until it is an input
    for device_ in (a, b, pwm):
        device_.close()
    assert [(chip.line(g).mode, chip.line(g).direction) for g in (17, 19, 22, 27)] == [("input", "input")] * 4

    mark = chip.next_seq
    factory.close()
    released = chip.events_after(mark - 1)
    assert sorted(e.gpio for e in released if e.kind == "released") == [17, 19, 22, 27]
    assert released[-1].kind == "close"
    assert all(chip.line(g).mode == "free" and chip.line(g).owner_pid is None for g in (17, 19, 22, 27))


def test_gpiozero_factory_in_a_child_on_a_pi5_cpuinfo(
    tmp_path: Path, chip_path: Path, device: str, chip: FakeChip, children: Children
) -> None:
    """A child process with nothing patched: the fake on PYTHONPATH, a Pi 5's /proc/cpuinfo in its own mount
    namespace; gpiozero's LGPIOFactory() runs PWM at 60 %; SIGKILL leaves the line frozen high."""
    reason = pi_namespace_unavailable()
    if reason is not None:
        pytest.skip(reason)
    proc = children.spawn(
        """
        from gpiozero import PWMOutputDevice
        from gpiozero.pins.lgpio import LGPIOFactory
        factory = LGPIOFactory()
        motor = PWMOutputDevice(22, pin_factory=factory, frequency=800)
        motor.value = 0.6
        result.update(model=factory.board_info.model, chip=factory.chip, cwd=__import__("os").getcwd())
        """,
        child_env(chip_path, device=device, workdir=tmp_path),
        wrap=pi_command([], tmp_path),
    )
    reply = children.result(proc)
    assert reply == {"model": "5B", "chip": 4 if os.path.exists("/dev/gpiochip4") else 0, "cwd": str(tmp_path)}
    assert (chip.line(22).duty, chip.line(22).owner_alive) == (60.0, True)
    proc.send_signal(signal.SIGKILL)
    assert chip.wait_for(lambda: not chip.line(22).owner_alive, 5)
    line = chip.line(22)
    assert (line.mode, line.direction, line.level, line.frozen, line.duty) == ("free", "output", 1, True, None)


# ---------------------------------------------------------------------------------------------- processes and death


def test_a_killed_pwm_owner_leaves_its_line_frozen_high(
    chip_path: Path, device: str, chip: FakeChip, lgpio: ModuleType, children: Children
) -> None:
    """PWM runs in its owner's threads: SIGKILL stops it wherever it was (worst case high) and the kernel releases
    the line (already while the process is a zombie); a live owner's line is busy for anyone else; a new process
    can claim it and drive it low, and a released output keeps its level."""
    env = child_env(chip_path, device=device)
    owner = children.spawn(
        """
        import lgpio
        h = lgpio.gpiochip_open(0)
        lgpio.gpio_claim_output(h, 22)
        result["tx_pwm"] = lgpio.tx_pwm(h, 22, 800, 60)
        """,
        env,
    )
    assert children.result(owner) == {"tx_pwm": 9}
    line = chip.line(22)
    assert (line.mode, line.duty, line.frequency, line.owner_pid, line.owner_alive) == (
        "output", 60.0, 800.0, owner.pid, True)

    other = children.spawn(
        """
        import lgpio
        h = lgpio.gpiochip_open(0)
        for name, call in [("claim", lambda: lgpio.gpio_claim_output(h, 22)), ("read", lambda: lgpio.gpio_read(h, 22)),
                           ("pwm", lambda: lgpio.tx_pwm(h, 22, 800, 0)), ("mode", lambda: lgpio.gpio_get_mode(h, 22))]:
            try:
                result[name] = call()
            except lgpio.error as e:
                result[name] = str(e)
        """,
        env,
    )
    assert children.result(other) == {
        "claim": "'GPIO busy'", "read": "'GPIO not allocated'", "pwm": "'GPIO not set as an output'",
        "mode": 1 | 2,  # the kernel's bits only: used, output (the LG bits are the owner's)
    }
    assert children.finish(other) == 0
    h = lgpio.gpiochip_open(0)
    with pytest.raises(lgpio.error, match="GPIO busy"):
        lgpio.gpio_claim_output(h, 22)
    assert chip.line(22).owner_pid == owner.pid  # the failed claims changed nothing

    killed_at = time.monotonic_ns()
    owner.send_signal(signal.SIGKILL)
    # the kernel releases the line as the process dies: while it is still a zombie (not reaped, its pid still there)
    assert chip.wait_for(lambda: process_state(owner.pid) == "Z" and not chip.line(22).owner_alive, 5)
    line = chip.line(22)
    assert (line.mode, line.direction, line.owner_pid, line.owner_alive) == ("free", "output", owner.pid, False)
    assert (line.level, line.frozen, line.duty, line.frequency) == (1, True, None, None)
    assert chip.effective_level(22) == 1
    assert owner.wait(5) == -signal.SIGKILL

    rescuer = children.spawn(
        """
        import lgpio
        h = lgpio.gpiochip_open(0)
        result["claim"] = lgpio.gpio_claim_output(h, 22, 0)
        result["read"] = lgpio.gpio_read(h, 22)
        """,
        env,
    )
    assert children.result(rescuer) == {"claim": 0, "read": 0}
    line = chip.line(22)
    assert (line.mode, line.level, line.frozen, line.owner_pid) == ("output", 0, False, rescuer.pid)
    assert children.finish(rescuer) == 0  # exits without freeing it: the kernel releases it, low
    assert chip.wait_for(lambda: not chip.line(22).owner_alive, 5)
    line = chip.line(22)
    assert (line.mode, line.direction, line.level, line.frozen) == ("free", "output", 0, False)

    log = [(e.kind, e.pid, e.level, e.result) for e in chip.events_since(killed_at) if e.gpio == 22]
    assert log == [("reaped", owner.pid, 1, 0), ("claim_output", rescuer.pid, 0, 0)]
    busy = [e for e in chip.events() if e.gpio == 22 and e.result == -79]
    assert {e.pid for e in busy} == {other.pid, os.getpid()}


def test_simulated_death_mid_pwm(chip: FakeChip, lgpio: ModuleType) -> None:
    chip.simulate_dead_owner(5, duty=60.0, frequency=800.0)
    line = chip.line(5)
    assert (line.mode, line.level, line.frozen, line.owner_pid, line.owner_alive) == ("free", 1, True, DEAD_PID, False)
    h = lgpio.gpiochip_open(0)
    assert lgpio.gpio_claim_output(h, 5, 0) == 0
    assert (chip.line(5).level, chip.line(5).mode) == (0, "output")
    assert [e.kind for e in chip.events() if e.gpio == 5] == ["claim_output", "pwm", "reaped", "claim_output"]
    with pytest.raises(RuntimeError, match="live process"):
        chip.simulate_dead_owner(5)


def test_two_handles_of_one_process_are_two_line_requests(chip: FakeChip, lgpio: ModuleType) -> None:
    h1, h2 = lgpio.gpiochip_open(0), lgpio.gpiochip_open(0)
    assert (h1, h2) == (1, 2)  # handle 0 is the notification pipe lgpio opened at import
    lgpio.gpio_claim_output(h1, 17, 1)
    with pytest.raises(lgpio.error, match="GPIO busy"):
        lgpio.gpio_claim_input(h2, 17)
    assert lgpio.gpio_get_mode(h1, 17) == 1 | 2 | 2 << 8 and lgpio.gpio_get_mode(h2, 17) == 1 | 2
    lgpio.gpiochip_close(h1)
    assert lgpio.gpio_claim_input(h2, 17) == 0
    with pytest.raises(lgpio.error, match="unknown handle"):
        lgpio.gpiochip_close(h1)


# ---------------------------------------------------------------------------------------------- lg's semantics


def test_lg_return_values_and_errors(chip: FakeChip, lgpio: Any, capfd: pytest.CaptureFixture[str]) -> None:
    h = lgpio.gpiochip_open(0)
    assert lgpio.gpiochip_open(4) == 2 | 4 << 16  # the chip number rides in the handle's high bits
    assert lgpio.gpio_claim_output(h, 22, 1) == 0 and chip.line(22).level == 1
    assert lgpio.gpio_claim_output(h, 22, 0) == 0 and chip.line(22).level == 1  # already an output: a no-op
    assert lgpio.gpio_get_mode(h, 22) == 0x203 and lgpio.gpio_get_mode(h, 30) == 1 << 16

    assert lgpio.tx_pwm(h, 22, 800, 60) == 9  # free PWM queue entries
    assert lgpio.tx_pwm(h, 22, 800, 30) == 8
    assert (lgpio.tx_busy(h, 22, lgpio.TX_PWM), lgpio.tx_room(h, 22, lgpio.TX_PWM)) == (1, 8)
    assert lgpio.gpio_read(h, 22) == 1
    assert lgpio.tx_pwm(h, 22, 0, 0) == 0  # stops the PWM thread where it is: worst case high
    line = chip.line(22)
    assert (line.mode, line.level, line.frozen, line.duty) == ("output", 1, True, None)
    assert lgpio.tx_busy(h, 22, lgpio.TX_PWM) == 0
    with pytest.raises(lgpio.error, match="bad PWM micros") as caught:
        lgpio.tx_pwm(h, 22, 0, 0)  # nothing to stop
    assert str(caught.value) == "'bad PWM micros'" and caught.value.value == "bad PWM micros"
    assert lgpio.gpio_write(h, 22, 0) == 0 and (chip.line(22).level, chip.line(22).frozen) == (0, False)

    assert lgpio.tx_pwm(h, 24, 1000, 50) == 9  # an unclaimed line: lg claims it as an output (open drain)
    line = chip.line(24)
    assert line.drive == "open_drain"
    assert line.settled_at - line.changed_at == 1_000_000 + 20_000_000  # a cycle, after the thread's <= 20 ms sleep
    time.sleep(0.025)
    lgpio.tx_pwm(h, 24, 1000, 0)
    line = chip.line(24)
    assert (line.level, line.settled_at - line.changed_at) == (0, 1_000_000)  # at the end of the running cycle

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: lgpio.tx_pwm(h, 22, 20000, 50), "bad PWM frequency"),
        (lambda: lgpio.tx_pwm(h, 22, 800, 101), "bad PWM dutycycle"),
        (lambda: lgpio.gpio_write(h, 54, 1), "bad GPIO number"),
        (lambda: lgpio.gpio_claim_output(h, 55), "GPIO operation not permitted"),
        (lambda: lgpio.gpio_free(h, 30), "GPIO not allocated"),
        (lambda: lgpio.gpio_read(0x7FFF, 1), "unknown handle"),
        (lambda: lgpio.gpiochip_open(-1), "bad gpiochip"),
        (lambda: lgpio.gpio_set_debounce_micros(h, 5, 6_000_000), "bad debounce microseconds"),
    ]
    for call, text in cases:
        with pytest.raises(lgpio.error) as caught:
            call()
        assert caught.value.value == text
    lgpio.exceptions = False
    try:
        assert lgpio.tx_pwm(h, 22, 20000, 50) == lgpio.BAD_PWM_FREQ == -102
        assert lgpio.gpio_claim_input(h, 23, lgpio.SET_PULL_UP | lgpio.SET_PULL_DOWN) == lgpio.UNEGPECTED_ERROR
    finally:
        lgpio.exceptions = True
    assert "xGpioHandleRequest: Invalid argument" in capfd.readouterr().err  # the kernel's EINVAL, as lg prints it
    with pytest.raises(TypeError, match="in method '_gpio_write', argument 3 of type 'int'"):
        lgpio.gpio_write(h, 22, 0.5)
    with pytest.raises(NotImplementedError, match="spi_open"):
        lgpio.spi_open(0, 0, 500000, 0)
    with pytest.raises(NotImplementedError, match="pulse_cycles"):
        lgpio.tx_pwm(h, 22, 800, 50, 0, 10)

    assert lgpio.gpio_claim_output(h, 25, 1, lgpio.SET_ACTIVE_LOW) == 0
    assert (chip.line(25).level, lgpio.gpio_read(h, 25), chip.line(25).active_low) == (0, 1, True)
    assert lgpio.gpio_claim_input(h, 6, lgpio.SET_PULL_UP) == 0 and lgpio.gpio_read(h, 6) == 1
    chip.set_input(6, 0)
    assert lgpio.gpio_read(h, 6) == 0 and chip.line(6).pull == "up"
    assert lgpio.gpio_claim_alert(h, 6, lgpio.BOTH_EDGES) == 0
    assert lgpio.gpio_get_mode(h, 6) == 1 | 1 << 16 | 1 << 17 | 1 << 18 | 4 << 8
    tally = lgpio.callback(h, 6, lgpio.BOTH_EDGES)
    assert tally.tally() == 0
    tally.cancel()
    assert lgpio.gpio_get_chip_info(h)[:2] == [0, 54]
    assert lgpio.error_text(-79) == "GPIO busy" and lgpio.get_module_version() == "lgpio.py_0.2.2.0"


def test_chip_state_file_must_be_set_up(tmp_path: Path, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CHIP, raising=False)
    (tmp_path / "gpiochip0").touch()
    with installed("", device=device, workdir=tmp_path) as lgpio, \
            pytest.raises(FakeLgpioConfigError, match=ENV_CHIP):
        lgpio.gpiochip_open(0)
    (tmp_path / "junk").write_bytes(b"x" * 100)
    with installed(tmp_path / "junk", device=device) as lgpio, \
            pytest.raises(FakeLgpioConfigError, match="not a chip state file"):
        lgpio.gpiochip_open(0)


def test_the_event_ring_keeps_the_last_events(tmp_path: Path, device: str) -> None:
    path = tmp_path / "small.state"
    create(path, lines=28, events=8)
    (tmp_path / "gpiochip0").touch()
    with installed(path, device=device) as lgpio, FakeChip(path) as chip:
        h = lgpio.gpiochip_open(0)
        lgpio.gpio_claim_output(h, 17)
        for i in range(20):
            lgpio.gpio_write(h, 17, i % 2)
        assert chip.next_seq == 22 and chip.lines == 28
        events = chip.events()
        assert [e.seq for e in events] == list(range(14, 22))
        assert [e.level for e in events] == [i % 2 for i in range(12, 20)]


# ---------------------------------------------------------------------------------------------- the device node


def test_a_missing_device_node_fails_as_lgpio_does(chip_path: Path, tmp_path: Path) -> None:
    with installed(chip_path, device=tmp_path / "no-such-gpiochip{chip}") as module, pi_revision():
        lgpio: Any = module
        with pytest.raises(lgpio.error) as caught:
            lgpio.gpiochip_open(0)
        assert str(caught.value) == "'can not open gpiochip'"
        lgpio.exceptions = False
        assert lgpio.gpiochip_open(0) == lgpio.CANNOT_OPEN_CHIP == -78
        lgpio.exceptions = True
        from gpiozero.pins.lgpio import LGPIOFactory

        with pytest.raises(lgpio.error, match="can not open gpiochip"):
            LGPIOFactory()


def test_an_inaccessible_device_node_fails_and_its_group_opens_it(children: Children) -> None:
    """Opening the node is a real open(O_RDWR): file permissions apply (as would a device cgroup or a read-only
    mount); the owning group (the ``gpio`` group on a Pi) gets in."""
    with shared_dir() as shared:
        create(shared / "chip.state")
        node = shared / "gpiochip0"
        node.touch()
        node.chmod(0o600 if ROOT else 0o000)
        if not ROOT:
            with installed(shared / "chip.state", device=node) as lgpio, pytest.raises(lgpio.error, match="can not"):
                lgpio.gpiochip_open(0)
            return
        wd = shared / "wd"
        wd.mkdir()
        os.chown(wd, NOBODY, NOBODY)
        code = """
            import lgpio
            try:
                result["open"] = lgpio.gpiochip_open(0)
            except lgpio.error as e:
                result["open"] = str(e)
        """
        env = child_env(shared / "chip.state", device=node, workdir=wd)
        denied = children.spawn(code, env, user=NOBODY, group=NOBODY, extra_groups=[], cwd=wd)
        assert children.result(denied) == {"open": "'can not open gpiochip'"}
        gpio_group = 54321
        os.chown(node, 0, gpio_group)
        node.chmod(0o660)
        member = children.spawn(code, env, user=NOBODY, group=NOBODY, extra_groups=[gpio_group], cwd=wd)
        assert children.result(member) == {"open": 1}


# ---------------------------------------------------------------------------------------------- notification pipes


def test_import_makes_the_notification_pipe_in_lg_wd(tmp_path: Path, chip_path: Path, children: Children) -> None:
    """``import lgpio`` makes the FIFO .lgd-nfy0 in $LG_WD (else the current directory) and chdir()s there; the
    pipe stays after the process ends."""
    wd, elsewhere = tmp_path / "wd", tmp_path / "elsewhere"
    wd.mkdir()
    elsewhere.mkdir()
    code = 'import lgpio, os; result["cwd"] = os.getcwd()'
    with_wd = children.spawn(code, child_env(chip_path, workdir=wd), cwd=elsewhere)
    assert children.result(with_wd) == {"cwd": str(wd)}
    env = child_env(chip_path)
    env.pop(ENV_WD, None)
    without = children.spawn(code, env, cwd=elsewhere)
    assert children.result(without) == {"cwd": str(elsewhere)}
    for proc in (with_wd, without):
        assert children.finish(proc) == 0
    for directory in (wd, elsewhere):
        mode = (directory / ".lgd-nfy0").stat().st_mode
        assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o664


def test_an_unwritable_working_directory_fails_the_import_as_lgpio_does(tmp_path: Path, chip_path: Path) -> None:
    with shared_dir() as shared:
        readonly = shared / "ro"
        readonly.mkdir(mode=0o555)
        readonly.chmod(0o555)
        missing = shared / "missing"
        as_nobody: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if ROOT else {}
        for wd, extra in [(readonly, as_nobody), (missing, {})]:
            result = subprocess.run(
                [sys.executable, "-c", "import lgpio"], env=child_env(chip_path, workdir=wd), cwd=shared,
                capture_output=True, text=True, timeout=15, check=False, **extra,
            )
            assert result.returncode == 1
            assert "FileNotFoundError: [Errno 2] No such file or directory: '.lgd-nfy-3'" in result.stderr
            assert f"xCreatePipe: Can't set permissions (436) for {wd}/.lgd-nfy0, No such file or directory" \
                in result.stderr
        assert "lguGetWorkDir: can't set working directory (No such file or directory)" in result.stderr

    cwd, before = os.getcwd(), set(sys.modules)
    with pytest.raises(FileNotFoundError, match=r"\.lgd-nfy-3"), installed(chip_path, workdir=tmp_path / "missing"):
        pass
    assert os.getcwd() == cwd and "lgpio" not in set(sys.modules) - before


def test_child_env() -> None:
    env = child_env("/x/chip.state", device="/dev/gpiochip{chip}", workdir="/tmp", base={"PYTHONPATH": "/a"})
    assert env == {
        "PYTHONPATH": f"{SITE_DIR}{os.pathsep}/a", ENV_CHIP: "/x/chip.state", ENV_DEV: "/dev/gpiochip{chip}",
        ENV_WD: "/tmp",
    }


# ---------------------------------------------------------------------------------------------- cost


def test_cost_of_the_stop_call(lgpio: ModuleType, chip: FakeChip, capsys: pytest.CaptureFixture[str]) -> None:
    """One ``tx_pwm(h, g, f, 0)`` (the stop path's call) on the fake: a local call, as on a Pi, with the chip file's
    lock and log write. Printed; bounded only generously."""
    h = lgpio.gpiochip_open(0)
    lgpio.gpio_claim_output(h, 22)
    lgpio.tx_pwm(h, 22, 800, 50)
    clock, tx_pwm, write = time.perf_counter_ns, lgpio.tx_pwm, lgpio.gpio_write
    samples, writes = [], []
    for _ in range(3000):
        t = clock()
        tx_pwm(h, 22, 800, 0)
        samples.append(clock() - t)
    for i in range(1000):
        t = clock()
        write(h, 17, i & 1)
        writes.append(clock() - t)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    with capsys.disabled():
        print(f"\nfake lgpio: tx_pwm(h, 22, 800, 0): p50 {p50 / 1000:.1f} us, p99 {p99 / 1000:.1f} us, "
              f"max {samples[-1] / 1000:.1f} us; gpio_write p50 {statistics.median(writes) / 1000:.1f} us; "
              f"gpiochip_close sleeps {CLOSE_SETTLE_S * 1000:.0f} ms as lg does")
    assert p50 < 1_000_000
    assert chip.line(22).duty == 0.0
