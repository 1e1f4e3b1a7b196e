"""A pigpiod emulator: the real ``pigpio`` client and gpiozero's ``PiGPIOFactory`` run against it unchanged.

It speaks pigpiod's socket protocol (https://abyz.me.uk/rpi/pigpio/sif.html) on TCP: a request is four
little-endian uint32 ``cmd, p1, p2, p3``; for the commands that carry an extension (``EXT_COMMANDS``, taken
from pigpio.py) ``p3`` is its length and that many bytes follow. The reply echoes ``cmd, p1, p2`` and carries
an int32 result, negative for a pigpio error. Every command is answered: unknown or unemulated ones get
``PI_UNKNOWN_COMMAND`` (-88), bad arguments get the error pigpiod would give.

Emulated (semantics follow pigpio.c): modes, pulls, read/write, bank read/set/clear, software PWM (duty,
range 25..40000 with the duty rescaled on a range change, frequency rounded to the nearest of
``PWM_FREQUENCIES`` as at pigpiod's default 5 us sample rate, default 800 Hz / range 255), servo pulses,
hardware PWM (HP, 4-byte duty extension, on the Pi 3's PWM pins), watchdog/glitch/noise settings (stored, no
timeouts fired), tick, hardware revision (0xa02082, a Pi 3B, by default), pigpio version, and
notifications (NO/NOIB/NB/NP/NC): after NOIB a socket is a notification stream and gets a 12-byte report
whenever a monitored GPIO 0-31 changes level; an idle stream stays silent, so pigpio's notify thread sleeps.
A pin doing software PWM, servo or hardware PWM reads 1 while its duty (pulse width) is above 0.

Like real pins, nothing resets when a client disconnects or is killed, and ``stop()`` (pigpiod dying: the
listener and every client connection are closed, so the client's next command raises) keeps all state for a
later ``start()`` on the same port. Every command is logged as a ``Command`` (``time.monotonic()`` when the
request was complete, cmd, p1, p2, p3, ext, result).

In-process use::

    with PigpiodEmulator() as emu:            # 127.0.0.1, ephemeral port in emu.port
        pi = pigpio.pi("127.0.0.1", emu.port)
        ...
        emu.wait_for(lambda: emu.pin(18).duty == 0, timeout=2)

Standalone (pigpiod for a process under test, e.g. a daemon run by systemd)::

    python tests/support/pigpiod_emulator.py --port 8888 [--control-port 8889] [--host 127.0.0.1]

Once listening it prints one JSON line to stdout, ``{"port": N, "control_port": M, "pid": P}``, then serves
until SIGTERM/SIGINT. The control port speaks JSON lines: each request is one JSON object with an ``op``,
each reply one JSON object with ``"ok": true`` plus results, or ``"ok": false, "error": ...``:

- ``{"op": "pin", "gpio": 17}`` -> ``{"pin": {PinState fields}}``; ``{"op": "pins"}`` -> ``{"pins": [...]}``
- ``{"op": "log", "since": t}`` -> ``{"log": [[t, cmd, p1, p2, p3, ext_hex, result], ...]}``, ``t`` being
  ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes on one machine)
- ``{"op": "clear_log"}``; ``{"op": "set_input", "gpio": 5, "level": 1}`` (``null`` = let the pull decide)
- ``{"op": "stop"}`` / ``{"op": "start"}``: pigpiod dies (all connections dropped) / comes back, state kept
- ``{"op": "status"}`` -> ``{"port", "running", "clients", "now"}``

``EmulatorClient`` wraps it: ``EmulatorClient.spawn()`` starts the process and reads the ready line;
``.pin(17)``, ``.pins()``, ``.log(since)``, ``.clear_log()``, ``.set_input()``, ``.stop_pigpiod()``,
``.start_pigpiod()``, ``.wait_for()``, ``.close()`` (also ends a spawned process).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import enum
import json
import os
import select
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Self


class Cmd(enum.IntEnum):
    """The emulated pigpiod commands (numbers from pigpio.py's ``_PI_CMD_*``)."""

    MODES = 0
    MODEG = 1
    PUD = 2
    READ = 3
    WRITE = 4
    PWM = 5
    PRS = 6
    PFS = 7
    SERVO = 8
    WDOG = 9
    BR1 = 10
    BR2 = 11
    BC1 = 12
    BC2 = 13
    BS1 = 14
    BS2 = 15
    TICK = 16
    HWVER = 17
    NO = 18
    NB = 19
    NP = 20
    NC = 21
    PRG = 22
    PFG = 23
    PRRG = 24
    PIGPV = 26
    GDC = 83
    GPW = 84
    HP = 86
    CGI = 95
    CSI = 96
    FG = 97
    FN = 98
    NOIB = 99


# Commands that pigpio.py sends with an extension of p3 bytes (any other command's p3 is ignored): WVAG WVAS
# TRIG PROC PROCR SLRO I2CO I2CWD I2CWB I2CWW I2CWK I2CRI I2CWI I2CPC I2CPK SPIO SPIW SPIX SERO SERW HP CF1 CF2
# BI2CO BI2CZ I2CZ WVCHA FN FO FW FS FL SHELL BSPIO BSPIX BSCX PROCU.
EXT_COMMANDS = frozenset({
    28, 29, 37, 38, 40, 42, 54, 57, 62, 64, 66, 67, 68, 69, 70, 71, 74, 75, 76, 81, 86, 87, 88, 90, 91, 92, 93, 98,
    104, 107, 108, 109, 110, 112, 113, 114, 117,
})
MAX_EXTENSION = 1 << 20  # a longer extension drops the connection

# pigpio error codes used here
PI_BAD_USER_GPIO = -2
PI_BAD_GPIO = -3
PI_BAD_MODE = -4
PI_BAD_LEVEL = -5
PI_BAD_PUD = -6
PI_BAD_PULSEWIDTH = -7
PI_BAD_DUTYCYCLE = -8
PI_BAD_WDOG_TIMEOUT = -15
PI_BAD_DUTYRANGE = -21
PI_NO_HANDLE = -24
PI_BAD_HANDLE = -25
PI_BAD_PARAM = -81
PI_UNKNOWN_COMMAND = -88
PI_NOT_PWM_GPIO = -92
PI_NOT_SERVO_GPIO = -93
PI_NOT_HPWM_GPIO = -95
PI_BAD_HPWM_FREQ = -96
PI_BAD_HPWM_DUTY = -97
PI_BAD_FILTER = -125

INPUT, OUTPUT = 0, 1
PUD_OFF, PUD_DOWN, PUD_UP = 0, 1, 2
MAX_GPIO, MAX_USER_GPIO = 53, 31
DEFAULT_HWVER = 0xA02082  # Raspberry Pi 3 Model B
PIGPIO_VERSION = 79
# Software PWM at pigpiod's default 5 us sample rate: allowed frequencies and the real range of each.
PWM_FREQUENCIES = (8000, 4000, 2000, 1600, 1000, 800, 500, 400, 320, 250, 200, 160, 100, 80, 50, 40, 20, 10)
PWM_REAL_RANGES = tuple(200_000 // f for f in PWM_FREQUENCIES)
DEFAULT_FREQ_INDEX = 5  # 800 Hz
DEFAULT_RANGE = 255
HW_PWM_RANGE = 1_000_000
HW_PWM_ALT_MODE = {12: 4, 13: 4, 18: 2, 19: 2, 40: 4, 41: 4, 45: 4, 52: 5, 53: 5}  # GPIO -> ALT0/ALT5/ALT1
MAX_NOTIFY_HANDLES = 32


class Command(NamedTuple):
    """One logged request and its result."""

    t: float  # time.monotonic() when the request (with its extension) was complete
    cmd: int
    p1: int
    p2: int
    p3: int
    ext: bytes
    result: int

    @property
    def name(self) -> str:
        try:
            return Cmd(self.cmd).name
        except ValueError:
            return str(self.cmd)


@dataclass(frozen=True)
class PinState:
    """A snapshot of one GPIO."""

    gpio: int
    mode: int  # pigpio mode: 0 input, 1 output, 2..7 ALT5, ALT4, ALT0..ALT3
    level: int  # 0/1; 1 while software/hardware PWM or servo pulses run with duty > 0
    pull: int  # 0 off, 1 down, 2 up
    function: str  # what pigpiod drives: "" nothing, "write", "pwm", "servo", "hw_pwm"
    duty: int  # PWM duty in `range` units (0 unless function is "pwm" or "hw_pwm")
    range: int  # the PWM range: set by PRS (default 255), 1_000_000 for hardware PWM
    frequency: int  # PWM frequency in Hz
    pulsewidth: int  # servo pulse width in us, 0 = off
    watchdog_ms: int
    glitch_us: int

    @property
    def pwm_running(self) -> bool:
        return self.function in ("pwm", "hw_pwm") and self.duty > 0

    @property
    def duty_cycle(self) -> float:
        """Duty as a fraction 0..1 (0.0 when no PWM)."""
        return self.duty / self.range if self.function in ("pwm", "hw_pwm") else 0.0


@dataclass
class _Pin:
    mode: int = INPUT
    pull: int = PUD_OFF
    level: int = 0
    latch: int = 0  # output latch: the level last written
    external: int | None = None  # level driven from outside (set_input); None: pull decides
    function: str = ""  # pigpio's gpioInfo.is
    width: int = 0  # software PWM duty or servo pulse width
    range: int = DEFAULT_RANGE
    freq_index: int = DEFAULT_FREQ_INDEX
    hw_freq: int = 0
    hw_duty: int = 0
    watchdog_ms: int = 0
    glitch_us: int = 0

    def driven_level(self) -> int:
        if self.mode == INPUT:
            if self.external is not None:
                return self.external
            return {PUD_UP: 1, PUD_DOWN: 0}.get(self.pull, self.level)
        if self.function in ("pwm", "servo"):
            return int(self.width > 0)
        if self.function == "hw_pwm":
            return int(self.hw_duty > 0 and self.hw_freq > 0)
        return self.latch if self.mode == OUTPUT else self.level


@dataclass
class _Notify:
    sock: socket.socket | None  # the NOIB socket; None for NO (pipe notifications are not emulated)
    bits: int = 0
    active: bool = False
    seq: int = 0


class _Fail(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class PigpiodEmulator:
    """pigpiod on ``host:port`` (port 0: ephemeral, see ``.port`` after ``start()``)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, hwver: int = DEFAULT_HWVER, max_log: int | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.hwver = hwver
        self.max_log = max_log  # keep at least the last max_log commands (None: all)
        self.log: list[Command] = []
        self._cond = threading.Condition()  # guards everything below; RLock, so predicates may call pin()
        self._pins = [_Pin(pull=PUD_UP if g <= 8 else PUD_DOWN if g <= 27 else PUD_OFF) for g in range(54)]
        for p in self._pins:
            p.level = p.driven_level()
        self._bank1 = self._levels(0)
        self._notify: dict[int, _Notify] = {}
        self._internals = 0
        self._t0 = time.monotonic()
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._handlers: dict[int, Callable[[int, int, bytes], int]] = {
            Cmd.MODES: self._modes, Cmd.MODEG: self._modeg, Cmd.PUD: self._pud, Cmd.READ: self._read,
            Cmd.WRITE: self._write, Cmd.PWM: self._pwm, Cmd.PRS: self._prs, Cmd.PFS: self._pfs,
            Cmd.SERVO: self._servo, Cmd.WDOG: self._wdog, Cmd.PRG: self._prg, Cmd.PFG: self._pfg,
            Cmd.PRRG: self._prrg, Cmd.GDC: self._gdc, Cmd.GPW: self._gpw, Cmd.HP: self._hp, Cmd.FG: self._fg,
            Cmd.FN: self._fn, Cmd.NO: self._no, Cmd.NB: self._nb, Cmd.NP: self._np, Cmd.NC: self._nc,
            Cmd.BR1: lambda p1, p2, ext: self._levels(0), Cmd.BR2: lambda p1, p2, ext: self._levels(32),
            Cmd.BC1: lambda p1, p2, ext: self._bank(0, p1, 0), Cmd.BC2: lambda p1, p2, ext: self._bank(32, p1, 0),
            Cmd.BS1: lambda p1, p2, ext: self._bank(0, p1, 1), Cmd.BS2: lambda p1, p2, ext: self._bank(32, p1, 1),
            Cmd.TICK: lambda p1, p2, ext: self.tick(), Cmd.HWVER: lambda p1, p2, ext: self.hwver,
            Cmd.PIGPV: lambda p1, p2, ext: PIGPIO_VERSION, Cmd.CGI: lambda p1, p2, ext: self._internals,
            Cmd.CSI: self._csi,
        }

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> PigpiodEmulator:
        with self._cond:
            if self._listener is not None:
                return self
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(16)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._spawn(self._accept_loop, listener)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """pigpiod dies: close the listener and every client connection. Pin state is kept."""
        with self._cond:
            listener, self._listener = self._listener, None
            clients, threads = list(self._clients), self._threads
            self._threads = []
        if listener is None:
            return
        for s in (listener, *clients):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes accept()/recv() in the serving threads
        listener.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def client_count(self) -> int:
        """Open client connections (a pigpio.pi() holds two: commands and notifications)."""
        with self._cond:
            return len(self._clients)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- inspection

    def pin(self, gpio: int) -> PinState:
        with self._cond:
            p = self._pins[gpio]
            hw = p.function == "hw_pwm"
            return PinState(
                gpio=gpio, mode=p.mode, level=p.level, pull=p.pull, function=p.function,
                duty=p.hw_duty if hw else p.width if p.function == "pwm" else 0,
                range=HW_PWM_RANGE if hw else p.range,
                frequency=p.hw_freq if hw else PWM_FREQUENCIES[p.freq_index],
                pulsewidth=p.width if p.function == "servo" else 0,
                watchdog_ms=p.watchdog_ms, glitch_us=p.glitch_us,
            )

    def pins(self) -> list[PinState]:
        with self._cond:
            return [self.pin(g) for g in range(len(self._pins))]

    def commands_since(self, t: float) -> list[Command]:
        """Logged commands with ``c.t >= t`` (t from time.monotonic())."""
        with self._cond:
            return self.log[bisect.bisect_left(self.log, t, key=lambda c: c.t):]

    def clear_log(self) -> None:
        with self._cond:
            self.log.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every command, disconnect and set_input."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def set_input(self, gpio: int, level: int | None) -> None:
        """Drive an input from outside (a button, a sensor); None lets the pull decide again."""
        with self._cond:
            self._pins[gpio].external = level
            self._refresh(gpio)
            self._cond.notify_all()

    def tick(self) -> int:
        """pigpiod's tick: microseconds since start, wrapping at 2**32."""
        return int((time.monotonic() - self._t0) * 1e6) & 0xFFFFFFFF

    # ---------------------------------------------------------------- serving

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=f"pigpiod-emulator-{self.port}")
        self._threads = [*(t for t in self._threads if t.is_alive()), t]
        t.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener shut down by stop()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                if self._listener is not listener:
                    conn.close()
                    return
                self._clients.add(conn)
                self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            while (head := _recv_exact(conn, 16)) is not None:
                cmd, p1, p2, p3 = struct.unpack("<4I", head)
                ext: bytes | None = b""
                if p3 and cmd in EXT_COMMANDS and (p3 > MAX_EXTENSION or (ext := _recv_exact(conn, p3)) is None):
                    break
                result = self._execute(cmd, p1, p2, p3, ext or b"", conn)
                conn.sendall(struct.pack("<4I", cmd, p1, p2, result & 0xFFFFFFFF))
        except OSError:
            pass
        finally:
            with self._cond:
                self._clients.discard(conn)
                for handle in [h for h, n in self._notify.items() if n.sock is conn]:
                    del self._notify[handle]
                self._cond.notify_all()
            conn.close()

    def _execute(self, cmd: int, p1: int, p2: int, p3: int, ext: bytes, conn: socket.socket | None) -> int:
        with self._cond:
            t = time.monotonic()
            try:
                if cmd == Cmd.NOIB:
                    result = self._open_notify(conn)
                elif (handler := self._handlers.get(cmd)) is not None:
                    result = handler(p1, p2, ext)
                else:
                    result = PI_UNKNOWN_COMMAND
            except _Fail as fail:
                result = fail.code
            if cmd in (Cmd.BC1, Cmd.BC2, Cmd.BS1, Cmd.BS2):
                self._refresh(*range(len(self._pins)))
            elif p1 <= MAX_GPIO:
                self._refresh(p1)
            self.log.append(Command(t, cmd, p1, p2, p3, ext, result))
            if self.max_log is not None and len(self.log) >= 2 * self.max_log:
                del self.log[: -self.max_log]
            self._cond.notify_all()
            return result

    def _refresh(self, *gpios: int) -> None:
        """Recompute levels; report changes of GPIO 0-31 to the notification streams."""
        moved = False
        for g in gpios:
            p = self._pins[g]
            level = p.driven_level()
            moved |= level != p.level
            p.level = level
        if not moved:
            return
        bank1 = self._levels(0)
        changed, self._bank1 = bank1 ^ self._bank1, bank1
        if not changed:
            return
        tick = self.tick()
        for n in self._notify.values():
            if n.sock is not None and n.active and n.bits & changed:
                n.seq = (n.seq + 1) & 0xFFFF
                with contextlib.suppress(OSError):  # a client that does not read loses reports
                    n.sock.send(struct.pack("<HHII", n.seq, 0, tick, bank1), socket.MSG_DONTWAIT)

    # ---------------------------------------------------------------- commands

    def _gpio(self, gpio: int, user: bool = False) -> _Pin:
        if gpio > (MAX_USER_GPIO if user else MAX_GPIO):
            raise _Fail(PI_BAD_USER_GPIO if user else PI_BAD_GPIO)
        return self._pins[gpio]

    @staticmethod
    def _switch_off(p: _Pin, function: str = "") -> None:
        """pigpio's switchFunctionOff(): stop PWM/servo pulses (the pin is left low)."""
        if p.function in ("pwm", "servo"):
            p.latch = 0
        p.width = 0
        p.function = function

    def _levels(self, first: int) -> int:
        return sum(p.level << i for i, p in enumerate(self._pins[first : first + 32]))

    def _bank(self, first: int, bits: int, level: int) -> int:
        for i, p in enumerate(self._pins[first : first + 32]):
            if bits >> i & 1:
                p.latch = level
        return 0

    def _modes(self, gpio: int, mode: int, ext: bytes) -> int:
        p = self._gpio(gpio)
        if mode > 7:
            raise _Fail(PI_BAD_MODE)
        if mode != p.mode:
            self._switch_off(p)
        p.mode = mode
        return 0

    def _modeg(self, gpio: int, p2: int, ext: bytes) -> int:
        return self._gpio(gpio).mode

    def _pud(self, gpio: int, pud: int, ext: bytes) -> int:
        p = self._gpio(gpio)
        if pud > PUD_UP:
            raise _Fail(PI_BAD_PUD)
        p.pull = pud
        return 0

    def _read(self, gpio: int, p2: int, ext: bytes) -> int:
        return self._gpio(gpio).level

    def _write(self, gpio: int, level: int, ext: bytes) -> int:
        p = self._gpio(gpio)
        if level > 1:
            raise _Fail(PI_BAD_LEVEL)
        if p.function != "write":
            self._switch_off(p, "write")
        p.mode, p.latch = OUTPUT, level
        return 0

    def _pwm(self, gpio: int, duty: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if duty > p.range:
            raise _Fail(PI_BAD_DUTYCYCLE)
        if p.function != "pwm":
            self._switch_off(p, "pwm")
        p.mode, p.width = OUTPUT, duty
        return 0

    def _prs(self, gpio: int, range_: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if not 25 <= range_ <= 40000:
            raise _Fail(PI_BAD_DUTYRANGE)
        if p.function == "pwm" and p.width:
            p.width = range_ * p.width // p.range
        p.range = range_
        return PWM_REAL_RANGES[p.freq_index]

    def _pfs(self, gpio: int, frequency: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        # nearest allowed frequency; on a tie the higher one (the first in the table), as pigpio.c does
        p.freq_index = min(range(len(PWM_FREQUENCIES)), key=lambda i: abs(PWM_FREQUENCIES[i] - frequency))
        return PWM_FREQUENCIES[p.freq_index]

    def _prg(self, gpio: int, p2: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        return HW_PWM_RANGE if p.function == "hw_pwm" else p.range

    def _pfg(self, gpio: int, p2: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        return p.hw_freq if p.function == "hw_pwm" else PWM_FREQUENCIES[p.freq_index]

    def _prrg(self, gpio: int, p2: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if p.function == "hw_pwm":
            return 250_000_000 // p.hw_freq if p.hw_freq else 0
        return PWM_REAL_RANGES[p.freq_index]

    def _gdc(self, gpio: int, p2: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if p.function == "pwm":
            return p.width
        if p.function == "hw_pwm":
            return p.hw_duty
        raise _Fail(PI_NOT_PWM_GPIO)

    def _servo(self, gpio: int, width: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if width and not 500 <= width <= 2500:
            raise _Fail(PI_BAD_PULSEWIDTH)
        if p.function != "servo":
            self._switch_off(p, "servo")
        p.mode, p.width = OUTPUT, width
        return 0

    def _gpw(self, gpio: int, p2: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if p.function != "servo":
            raise _Fail(PI_NOT_SERVO_GPIO)
        return p.width

    def _hp(self, gpio: int, frequency: int, ext: bytes) -> int:
        p = self._gpio(gpio)
        if gpio not in HW_PWM_ALT_MODE:
            raise _Fail(PI_NOT_HPWM_GPIO)
        if frequency and not 1 <= frequency <= 125_000_000:
            raise _Fail(PI_BAD_HPWM_FREQ)
        if len(ext) != 4:
            raise _Fail(PI_BAD_PARAM)
        (duty,) = struct.unpack("<I", ext)
        if duty > HW_PWM_RANGE:
            raise _Fail(PI_BAD_HPWM_DUTY)
        if p.function != "hw_pwm":
            self._switch_off(p, "hw_pwm")
        if frequency:
            p.mode = HW_PWM_ALT_MODE[gpio]
        p.hw_freq, p.hw_duty = frequency, duty
        return 0

    def _wdog(self, gpio: int, ms: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if ms > 60000:
            raise _Fail(PI_BAD_WDOG_TIMEOUT)
        p.watchdog_ms = ms
        return 0

    def _fg(self, gpio: int, steady: int, ext: bytes) -> int:
        p = self._gpio(gpio, user=True)
        if steady > 300_000:
            raise _Fail(PI_BAD_FILTER)
        p.glitch_us = steady
        return 0

    def _fn(self, gpio: int, steady: int, ext: bytes) -> int:
        self._gpio(gpio, user=True)
        active = struct.unpack("<I", ext)[0] if len(ext) == 4 else -1
        if steady > 300_000 or not 0 <= active <= 1_000_000:
            raise _Fail(PI_BAD_FILTER)
        return 0

    def _csi(self, bits: int, p2: int, ext: bytes) -> int:
        self._internals = bits
        return 0

    def _new_handle(self, sock: socket.socket | None) -> int:
        free = [h for h in range(MAX_NOTIFY_HANDLES) if h not in self._notify]
        if not free:
            raise _Fail(PI_NO_HANDLE)
        self._notify[free[0]] = _Notify(sock)
        return free[0]

    def _open_notify(self, conn: socket.socket | None) -> int:
        try:
            return self._new_handle(conn)
        except _Fail as fail:
            return fail.code

    def _no(self, p1: int, p2: int, ext: bytes) -> int:
        return self._new_handle(None)

    def _handle(self, handle: int) -> _Notify:
        if handle not in self._notify:
            raise _Fail(PI_BAD_HANDLE)
        return self._notify[handle]

    def _nb(self, handle: int, bits: int, ext: bytes) -> int:
        n = self._handle(handle)
        n.bits, n.active = bits, True
        return 0

    def _np(self, handle: int, p2: int, ext: bytes) -> int:
        self._handle(handle).active = False
        return 0

    def _nc(self, handle: int, p2: int, ext: bytes) -> int:
        self._handle(handle)
        del self._notify[handle]
        return 0


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """n bytes, or None at end of stream."""
    data = sock.recv(n)
    while 0 < len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            return None
        data += more
    return data if data else None


# -------------------------------------------------------------------- standalone mode


def _control(emu: PigpiodEmulator, req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "pin":
        return {"pin": asdict(emu.pin(int(req["gpio"])))}
    if op == "pins":
        return {"pins": [asdict(s) for s in emu.pins()]}
    if op == "log":
        since = float(req.get("since", 0.0))
        return {"log": [[*c[:5], c.ext.hex(), c.result] for c in emu.commands_since(since)]}
    if op == "clear_log":
        emu.clear_log()
    elif op == "set_input":
        emu.set_input(int(req["gpio"]), req.get("level"))
    elif op == "stop":
        emu.stop()
    elif op == "start":
        emu.start()
    elif op != "status":
        raise ValueError(f"unknown op {op!r}")
    return {"port": emu.port, "running": emu.running, "clients": emu.client_count, "now": time.monotonic()}


class _ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_control(emu: PigpiodEmulator, host: str = "127.0.0.1", port: int = 0) -> socketserver.TCPServer:
    """Serve the JSON-lines control protocol for ``emu`` in a background thread; returns the server."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    reply = {"ok": True, **_control(emu, json.loads(line))}
                except Exception as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

    server = _ControlServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="pigpiod-emulator-control").start()
    return server


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a spawned emulator, reap it and close its stdout pipe."""
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class EmulatorClient:
    """Client of a standalone emulator's control port (see the module docstring)."""

    def __init__(
        self, control_port: int, host: str = "127.0.0.1", *, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        self.host = host
        self.control_port = control_port
        self.process = process
        self._sock = socket.create_connection((host, control_port), timeout=10)
        self._file = self._sock.makefile("rwb")
        self._lock = threading.Lock()
        try:
            self.port: int = self.status()["port"]  # the pigpiod port
        except BaseException:
            self._file.close()
            self._sock.close()
            raise

    @classmethod
    def spawn(
        cls, port: int = 0, control_port: int = 0, host: str = "127.0.0.1", timeout: float = 10.0
    ) -> EmulatorClient:
        """Start ``python pigpiod_emulator.py`` and connect once it is listening."""
        cmd = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", str(port),
               "--control-port", str(control_port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline() if ready else b""
            if line:
                return cls(json.loads(line)["control_port"], host, process=proc)
        except BaseException:  # not listening, or the control connection failed: the process must not outlive it
            _kill(proc)
            raise
        _kill(proc)
        raise RuntimeError(f"pigpiod emulator did not start (exit code {proc.returncode})")

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._file.write(json.dumps({"op": op, **args}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        if not line:
            raise ConnectionError("pigpiod emulator control connection closed")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(reply["error"])
        return reply

    def status(self) -> dict[str, Any]:
        return self._call("status")

    def pin(self, gpio: int) -> PinState:
        return PinState(**self._call("pin", gpio=gpio)["pin"])

    def pins(self) -> list[PinState]:
        return [PinState(**d) for d in self._call("pins")["pins"]]

    def log(self, since: float = 0.0) -> list[Command]:
        return [Command(t, c, p1, p2, p3, bytes.fromhex(ext), r)
                for t, c, p1, p2, p3, ext, r in self._call("log", since=since)["log"]]

    def clear_log(self) -> None:
        self._call("clear_log")

    def set_input(self, gpio: int, level: int | None) -> None:
        self._call("set_input", gpio=gpio, level=level)

    def stop_pigpiod(self) -> None:
        self._call("stop")

    def start_pigpiod(self) -> None:
        self._call("start")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
        from .waiting import poll  # imported here: as a script (`main`) this module is stdlib only

        return poll(predicate, timeout, interval)

    def close(self) -> None:
        """Close the control connection and end the emulator process if this client spawned it."""
        self._file.close()
        self._sock.close()
        if self.process is not None:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pigpiod emulator (see the module docstring)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8888, help="pigpiod port (0: ephemeral)")
    ap.add_argument("--control-port", type=int, default=0, help="JSON-lines control port (0: ephemeral)")
    ap.add_argument("--hwver", type=lambda s: int(s, 0), default=DEFAULT_HWVER)
    args = ap.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    emu = PigpiodEmulator(args.host, args.port, hwver=args.hwver, max_log=100_000).start()
    control = serve_control(emu, args.host, args.control_port)
    print(json.dumps({"port": emu.port, "control_port": control.server_address[1], "pid": os.getpid()}), flush=True)
    done.wait()
    emu.stop()
    control.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
