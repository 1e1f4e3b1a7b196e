"""The fake ``lgpio`` module (lg 0.2.2's Python binding), at the edge: what gpiozero's ``LGPIOFactory`` calls.

This file is the whole fake and uses only the standard library: a child process gets it through
``tests/support/fake_lgpio/site/lgpio.py`` (put that directory on ``PYTHONPATH``), which loads this file by path;
in the test process ``tests.support.fake_lgpio.installed()`` makes a fresh ``lgpio`` module from it. The test-side
reader (``FakeChip``) is in ``reader.py``; ``__init__.py`` documents the whole thing.

What is reproduced from lg's source (joan2937/lg: PY_LGPIO/lgpio_extra.py, lgGpio.c, lgPthTx.c, lgNotify.c,
lgUtil.c, lgErr.c), and where the fake stands in for the kernel:

- The Python wrapper: handles are ``slot | gpiochip << 16``; every call masks ``handle & 0xffff``; a negative status
  raises ``lgpio.error(error_text(status))`` (``str(e)`` is the quoted text, e.g. ``'GPIO busy'``) unless
  ``lgpio.exceptions`` is False, when the negative code is returned. SWIG's argument checks (``TypeError`` /
  ``OverflowError`` "in method '_gpio_write', argument 3 of type 'int'") and its C ``float`` for the PWM frequency
  and duty are reproduced.
- Import (``_notify_thread = _callback_thread()`` at module level): the C library resolves its working directory
  once (``$LG_WD``, else the current directory) and ``chdir``s there, allocates handle 0 and makes the FIFO
  ``<workdir>/.lgd-nfy0`` (unlink, mkfifo 0664, chmod 0664, open O_RDWR|O_NONBLOCK); the Python side then opens
  ``.lgd-nfy<handle>`` (relative: in the new current directory) for reading in a daemon thread. When the directory
  is not writable, the C side prints ``Can't set permissions (436) for <dir>/.lgd-nfy0, <error>`` on stderr and
  returns -3, and the import fails with ``FileNotFoundError: ... '.lgd-nfy-3'``. The FIFO is never removed
  (lg's close unlinks ``/dev/lg<n>`` instead).
- ``gpiochip_open(N)``: ``open("/dev/gpiochipN", O_RDWR|O_CLOEXEC)`` for real (``$ROVER_SAFETY_FAKE_LGPIO_DEV``
  overrides the path, ``{chip}`` standing for N), so a missing node, file permissions, a device cgroup
  (``DevicePolicy=``/``DeviceAllow=``, for a character device), a ``nodev`` mount, or for a regular file standing
  in for the node a read-only mount, fail it as they fail lg (-78, "can not open gpiochip"). lg's next step,
  the GPIO_GET_CHIPINFO ioctl, is not emulated: any node that opens is taken for a gpiochip. The first handle in a
  process is 1 (the notification pipe took 0). ``gpiochip_close`` stops PWM, sleeps 100 ms as lg does, then
  releases every line.
- Claims follow lgGpio.c: claiming an already-output line as output is a no-op (its level is *not* changed); a
  claim first frees the line if this handle holds it otherwise; ``gpio_write``/``gpio_read``/``tx_pwm`` on an
  unclaimed line claim it (``tx_pwm`` auto-claims with lg's ``GPIO_V2_LINE_FLAG_OUTPUT`` quirk, i.e.
  SET_OPEN_DRAIN); a line held by another line request is ``GPIO busy`` (-79) (``gpio_read`` then says
  ``GPIO not allocated``, ``tx_pwm`` ``GPIO not set as an output``, alerts ``bad event request``, as in lg); the
  kernel's flag validation (edges only on inputs, drive modes only on outputs, one bias) gives lg's
  ``unexpected error`` (-85) with ``Invalid argument`` on stderr.
- Software PWM (lgPthTx.c): frequency 0.1..10000 Hz, duty 0..100 % (float), micros rounded as lg does; the first
  call returns 9 (free queue entries), later ones 8; ``tx_pwm(h, g, 0, 0)`` stops a running PWM and is
  ``bad PWM micros`` (-86) when none runs. A new duty takes effect at the end of the running cycle, so a state
  change is *settled* up to one PWM period after the call (``settled_at``). Stopping PWM (frequency 0, gpio_free,
  claiming the line again, gpiochip_close, or the process dying) leaves the line wherever the PWM thread last put
  it: the fake records the worst case, high whenever the duty was above 0 (or a duty-0 change had not settled).
  ``pulse_cycles != 0`` (finite pulse trains) is not emulated (NotImplementedError).
- The kernel: each ``gpiochip_open`` handle is one open file description of the chip state file, and a claimed line
  is an OFD lock on one byte of it (``fcntl F_OFD_SETLK``) — released by the kernel when the line is freed, the
  chip closed, or the process exits or is killed, kept while a forked child holds the descriptor: exactly the
  lifetime of a gpiochip line request. A line whose recorded claim has no lock is one whose owner died. A released
  output keeps its last level. Alerts (``gpio_claim_alert``/``callback``) claim the line and register the
  callback, but no edge is ever reported. Group, wave, I2C, serial and SPI functions raise NotImplementedError.

The chip state file (``create()``; little-endian): a 64-byte header (magic ``FKLGPIO\\x01``, version, lines, event
ring capacity, line record size, next event sequence number, event size, created_at), then one 80-byte record per
line (owner part ``_OWNER``, then the external input level), then the event ring (``_EVENT``, 48 bytes each).
Every change is made under ``flock(LOCK_EX)`` on the file (readers take ``LOCK_SH``), and appended to the ring with
its sequence number, ``time.monotonic_ns()`` (CLOCK_MONOTONIC: comparable across processes) and pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

ENV_CHIP: Final = "ROVER_SAFETY_FAKE_LGPIO_CHIP"  # the chip state file (required at gpiochip_open)
ENV_DEV: Final = "ROVER_SAFETY_FAKE_LGPIO_DEV"  # the device node to open; "{chip}" is replaced by the chip number
ENV_FORCE: Final = "ROVER_SAFETY_FAKE_LGPIO_FORCE"  # "1": use the fake even on a Raspberry Pi
ENV_WD: Final = "LG_WD"  # lg's own: its working directory (notification pipes)
DEFAULT_DEV: Final = "/dev/gpiochip{chip}"


class FakeLgpioConfigError(RuntimeError):
    """The fake is set up wrongly (no chip state file, not one made by ``create()``): a test error, not lgpio's."""


# ---------------------------------------------------------------------------------------------- lgpio's constants

LGPIO_PY_VERSION: Final = 0x00020200

OFF: Final = 0
LOW: Final = 0
CLEAR: Final = 0
ON: Final = 1
HIGH: Final = 1
SET: Final = 1
TIMEOUT: Final = 2
GROUP_ALL: Final = 0xFFFFFFFFFFFFFFFF

SET_ACTIVE_LOW: Final = 4
SET_OPEN_DRAIN: Final = 8
SET_OPEN_SOURCE: Final = 16
SET_PULL_UP: Final = 32
SET_PULL_DOWN: Final = 64
SET_PULL_NONE: Final = 128

RISING_EDGE: Final = 1
FALLING_EDGE: Final = 2
BOTH_EDGES: Final = 3

TX_PWM: Final = 0
TX_WAVE: Final = 1

SPI_MODE_0: Final = 0
SPI_MODE_1: Final = 1
SPI_MODE_2: Final = 2
SPI_MODE_3: Final = 3

# lgpio error numbers (PY_LGPIO/lgpio_extra.py) and their texts (lgErr.c)
OKAY: Final = 0
INIT_FAILED: Final = -1
BAD_MICROS: Final = -2
BAD_PATHNAME: Final = -3
NO_HANDLE: Final = -4
BAD_HANDLE: Final = -5
BAD_SOCKET_PORT: Final = -6
NOT_PERMITTED: Final = -7
SOME_PERMITTED: Final = -8
BAD_SCRIPT: Final = -9
BAD_TX_TYPE: Final = -10
GPIO_IN_USE: Final = -11
BAD_PARAM_NUM: Final = -12
DUP_TAG: Final = -13
TOO_MANY_TAGS: Final = -14
BAD_SCRIPT_CMD: Final = -15
BAD_VAR_NUM: Final = -16
NO_SCRIPT_ROOM: Final = -17
NO_MEMORY: Final = -18
SOCK_READ_FAILED: Final = -19
SOCK_WRIT_FAILED: Final = -20
TOO_MANY_PARAM: Final = -21
SCRIPT_NOT_READY: Final = -22
BAD_TAG: Final = -23
BAD_MICS_DELAY: Final = -24
BAD_MILS_DELAY: Final = -25
I2C_OPEN_FAILED: Final = -26
SERIAL_OPEN_FAILED: Final = -27
SPI_OPEN_FAILED: Final = -28
BAD_I2C_BUS: Final = -29
BAD_I2C_ADDR: Final = -30
BAD_SPI_CHANNEL: Final = -31
BAD_I2C_FLAGS: Final = -32
BAD_SPI_FLAGS: Final = -33
BAD_SERIAL_FLAGS: Final = -34
BAD_SPI_SPEED: Final = -35
BAD_SERIAL_DEVICE: Final = -36
BAD_SERIAL_SPEED: Final = -37
BAD_FILE_PARAM: Final = -38
BAD_I2C_PARAM: Final = -39
BAD_SERIAL_PARAM: Final = -40
I2C_WRITE_FAILED: Final = -41
I2C_READ_FAILED: Final = -42
BAD_SPI_COUNT: Final = -43
SERIAL_WRITE_FAILED: Final = -44
SERIAL_READ_FAILED: Final = -45
SERIAL_READ_NO_DATA: Final = -46
UNKNOWN_COMMAND: Final = -47
SPI_XFER_FAILED: Final = -48
BAD_POINTER: Final = -49
MSG_TOOBIG: Final = -50
BAD_MALLOC_MODE: Final = -51
TOO_MANY_SEGS: Final = -52
BAD_I2C_SEG: Final = -53
BAD_SMBUS_CMD: Final = -54
BAD_I2C_WLEN: Final = -55
BAD_I2C_RLEN: Final = -56
BAD_I2C_CMD: Final = -57
FILE_OPEN_FAILED: Final = -58
BAD_FILE_MODE: Final = -59
BAD_FILE_FLAG: Final = -60
BAD_FILE_READ: Final = -61
BAD_FILE_WRITE: Final = -62
FILE_NOT_ROPEN: Final = -63
FILE_NOT_WOPEN: Final = -64
BAD_FILE_SEEK: Final = -65
NO_FILE_MATCH: Final = -66
NO_FILE_ACCESS: Final = -67
FILE_IS_A_DIR: Final = -68
BAD_SHELL_STATUS: Final = -69
BAD_SCRIPT_NAME: Final = -70
CMD_INTERRUPTED: Final = -71
BAD_EVENT_REQUEST: Final = -72
BAD_GPIO_NUMBER: Final = -73
BAD_GROUP_SIZE: Final = -74
BAD_LINEINFO_IOCTL: Final = -75
BAD_READ: Final = -76
BAD_WRITE: Final = -77
CANNOT_OPEN_CHIP: Final = -78
GPIO_BUSY: Final = -79
GPIO_NOT_ALLOCATED: Final = -80
NOT_A_GPIOCHIP: Final = -81
NOT_ENOUGH_MEMORY: Final = -82
POLL_FAILED: Final = -83
TOO_MANY_GPIOS: Final = -84
UNEGPECTED_ERROR: Final = -85
BAD_PWM_MICROS: Final = -86
NOT_GROUP_LEADER: Final = -87
SPI_IOCTL_FAILED: Final = -88
BAD_GPIOCHIP: Final = -89
BAD_CHIPINFO_IOCTL: Final = -90
BAD_CONFIG_FILE: Final = -91
BAD_CONFIG_VALUE: Final = -92
NO_PERMISSIONS: Final = -93
BAD_USERNAME: Final = -94
BAD_SECRET: Final = -95
TX_QUEUE_FULL: Final = -96
BAD_CONFIG_ID: Final = -97
BAD_DEBOUNCE_MICS: Final = -98
BAD_WATCHDOG_MICS: Final = -99
BAD_SERVO_FREQ: Final = -100
BAD_SERVO_WIDTH: Final = -101
BAD_PWM_FREQ: Final = -102
BAD_PWM_DUTY: Final = -103
GPIO_NOT_AN_OUTPUT: Final = -104
INVALID_GROUP_ALERT: Final = -105

_ERROR_TEXT: Final[dict[int, str]] = {
    OKAY: 'No error',
    INIT_FAILED: 'initialisation failed',
    BAD_MICROS: 'micros not 0-999999',
    BAD_PATHNAME: 'can not open pathname',
    NO_HANDLE: 'no handle available',
    BAD_HANDLE: 'unknown handle',
    BAD_SOCKET_PORT: 'socket port not 1024-32000',
    NOT_PERMITTED: 'GPIO operation not permitted',
    SOME_PERMITTED: 'one or more GPIO not permitted',
    BAD_SCRIPT: 'invalid script',
    BAD_TX_TYPE: 'bad tx type for GPIO and group',
    GPIO_IN_USE: 'GPIO already in use',
    BAD_PARAM_NUM: 'script parameter id not 0-9',
    DUP_TAG: 'script has duplicate tag',
    TOO_MANY_TAGS: 'script has too many tags',
    BAD_SCRIPT_CMD: 'illegal script command',
    BAD_VAR_NUM: 'script variable id not 0-149',
    NO_SCRIPT_ROOM: 'no more room for scripts',
    NO_MEMORY: 'can not allocate temporary memory',
    SOCK_READ_FAILED: 'socket read failed',
    SOCK_WRIT_FAILED: 'socket write failed',
    TOO_MANY_PARAM: 'too many script parameters (> 10)',
    SCRIPT_NOT_READY: 'script initialising',
    BAD_TAG: 'script has unresolved tag',
    BAD_MICS_DELAY: 'bad MICS delay (too large)',
    BAD_MILS_DELAY: 'bad MILS delay (too large)',
    I2C_OPEN_FAILED: 'can not open I2C device',
    SERIAL_OPEN_FAILED: 'can not open serial device',
    SPI_OPEN_FAILED: 'can not open SPI device',
    BAD_I2C_BUS: 'bad I2C bus',
    BAD_I2C_ADDR: 'bad I2C address',
    BAD_SPI_CHANNEL: 'bad SPI channel',
    BAD_I2C_FLAGS: 'bad I2C open flags',
    BAD_SPI_FLAGS: 'bad SPI open flags',
    BAD_SERIAL_FLAGS: 'bad serial open flags',
    BAD_SPI_SPEED: 'bad SPI speed',
    BAD_SERIAL_DEVICE: 'bad serial device name',
    BAD_SERIAL_SPEED: 'bad serial baud rate',
    BAD_FILE_PARAM: 'bad file parameter',
    BAD_I2C_PARAM: 'bad I2C parameter',
    BAD_SERIAL_PARAM: 'bad serial parameter',
    I2C_WRITE_FAILED: 'i2c write failed',
    I2C_READ_FAILED: 'i2c read failed',
    BAD_SPI_COUNT: 'bad SPI count',
    SERIAL_WRITE_FAILED: 'ser write failed',
    SERIAL_READ_FAILED: 'ser read failed',
    SERIAL_READ_NO_DATA: 'ser read no data available',
    UNKNOWN_COMMAND: 'unknown command',
    SPI_XFER_FAILED: 'spi xfer/read/write failed',
    BAD_POINTER: 'bad (NULL) pointer',
    MSG_TOOBIG: 'socket/pipe message too big',
    BAD_MALLOC_MODE: 'bad memory allocation mode',
    TOO_MANY_SEGS: 'too many I2C transaction segments',
    BAD_I2C_SEG: 'an I2C transaction segment failed',
    BAD_SMBUS_CMD: 'SMBus command not supported by driver',
    BAD_I2C_WLEN: 'bad I2C write length',
    BAD_I2C_RLEN: 'bad I2C read length',
    BAD_I2C_CMD: 'bad I2C command',
    FILE_OPEN_FAILED: 'file open failed',
    BAD_FILE_MODE: 'bad file mode',
    BAD_FILE_FLAG: 'bad file flag',
    BAD_FILE_READ: 'bad file read',
    BAD_FILE_WRITE: 'bad file write',
    FILE_NOT_ROPEN: 'file not open for read',
    FILE_NOT_WOPEN: 'file not open for write',
    BAD_FILE_SEEK: 'bad file seek',
    NO_FILE_MATCH: 'no files match pattern',
    NO_FILE_ACCESS: 'no permission to access file',
    FILE_IS_A_DIR: 'file is a directory',
    BAD_SHELL_STATUS: 'bad shell return status',
    BAD_SCRIPT_NAME: 'bad script name',
    CMD_INTERRUPTED: 'Python socket command interrupted',
    BAD_EVENT_REQUEST: 'bad event request',
    BAD_GPIO_NUMBER: 'bad GPIO number',
    BAD_GROUP_SIZE: 'bad group size',
    BAD_LINEINFO_IOCTL: 'bad lineinfo IOCTL',
    BAD_READ: 'bad GPIO read',
    BAD_WRITE: 'bad GPIO write',
    CANNOT_OPEN_CHIP: 'can not open gpiochip',
    GPIO_BUSY: 'GPIO busy',
    GPIO_NOT_ALLOCATED: 'GPIO not allocated',
    NOT_A_GPIOCHIP: 'not a gpiochip',
    NOT_ENOUGH_MEMORY: 'not enough memory',
    POLL_FAILED: 'GPIO poll failed',
    TOO_MANY_GPIOS: 'too many GPIO',
    UNEGPECTED_ERROR: 'unexpected error',
    BAD_PWM_MICROS: 'bad PWM micros',
    NOT_GROUP_LEADER: 'GPIO not the group leader',
    SPI_IOCTL_FAILED: 'SPI iOCTL failed',
    BAD_GPIOCHIP: 'bad gpiochip',
    BAD_CHIPINFO_IOCTL: 'bad chipinfo IOCTL',
    BAD_CONFIG_FILE: 'bad configuration file',
    BAD_CONFIG_VALUE: 'bad configuration value',
    NO_PERMISSIONS: 'no permission to perform action',
    BAD_USERNAME: 'bad user name',
    BAD_SECRET: 'bad secret for user',
    TX_QUEUE_FULL: 'TX queue full',
    BAD_CONFIG_ID: 'bad configuration id',
    BAD_DEBOUNCE_MICS: 'bad debounce microseconds',
    BAD_WATCHDOG_MICS: 'bad watchdog microseconds',
    BAD_SERVO_FREQ: 'bad servo frequency',
    BAD_SERVO_WIDTH: 'bad servo pulsewidth',
    BAD_PWM_FREQ: 'bad PWM frequency',
    BAD_PWM_DUTY: 'bad PWM dutycycle',
    GPIO_NOT_AN_OUTPUT: 'GPIO not set as an output',
    INVALID_GROUP_ALERT: 'can not set a group to alert',
}

# gpio_get_mode bits (lgpio.h LG_GPIO_IS_*; the LG bits are the handle's own line mode << 8)
GPIO_IS_KERNEL: Final = 1
GPIO_IS_OUTPUT: Final = 2
GPIO_IS_INPUT: Final = 1 << 16
GPIO_IS_RISING_EDGE: Final = 1 << 17
GPIO_IS_FALLING_EDGE: Final = 1 << 18
_LINE_FLAGS: Final = SET_ACTIVE_LOW | SET_OPEN_DRAIN | SET_OPEN_SOURCE | SET_PULL_UP | SET_PULL_DOWN | SET_PULL_NONE
_BIAS: Final = SET_PULL_UP | SET_PULL_DOWN | SET_PULL_NONE
_MODE_INPUT, _MODE_OUTPUT, _MODE_ALERT, _MODE_GROUP = 1, 2, 4, 8  # lgGpio.c LG_CHIP_BIT_*
_GPIO_V2_LINE_FLAG_OUTPUT: Final = 8  # what xSetAsPwm passes as *lg* flags when it auto-claims (= SET_OPEN_DRAIN)

_HANDLE_SLOTS: Final = 1024  # lgHdl.c LG_HDL_SLOTS
_TX_BUF: Final = 10  # lgPthTx.h LG_TX_BUF
_MAX_PATH: Final = 1024  # lgpio.h LG_MAX_PATH
_MAX_MICS_DEBOUNCE: Final = 5_000_000
_MAX_MICS_WATCHDOG: Final = 300_000_000
_TX_THREAD_MAX_SLEEP_NS: Final = 20_000_000  # lgPthTx.c: the PWM thread sleeps at most 20 ms between edges
CLOSE_SETTLE_S: Final = 0.1  # lgGpio.c _lgGpiochipClose: usleep(100000) "long enough for PWM/events to stop"
_FLT_MAX: Final = 3.4028234663852886e38
_F32 = struct.Struct("<f")


# ---------------------------------------------------------------------------------------------- chip state file

MAGIC: Final = b"FKLGPIO\x01"
VERSION: Final = 1
HEADER_SIZE: Final = 64
_HEADER = struct.Struct("<8sIIIIQIq")  # magic, version, lines, ring capacity, line size, next seq, event size, t0
_SEQ_OFFSET: Final = 24
_SEQ = struct.Struct("<Q")
# owner part of a line record: pid, claim, direction, level, flags, kernel line flags, micros on, micros off,
# reserved, owner token, owner start time (clock ticks, /proc/<pid>/stat field 22), PWM frequency, PWM duty %,
# changed_at, settled_at (monotonic ns)
_OWNER = struct.Struct("<iBBBBIiiiQQddqq")
LINE_SIZE: Final = 80
_EXT_OFFSET: Final = 72  # int8 in the line record: level driven onto an input from outside, -1 for none
_EXT = struct.Struct("<b")
# event: seq, t (monotonic ns), pid, gpio (-1: the chip), kind, level after the call, frequency, duty %, result,
# kernel line flags (for open/close: the gpiochip number)
_EVENT = struct.Struct("<QqihBbddiI")
EVENT_SIZE: Final = 48
LINE_LOCK_BASE: Final = 1 << 40  # the line requests: an OFD lock on byte LINE_LOCK_BASE + gpio
_FLOCK = struct.Struct("hhqqi4x")  # struct flock (native): l_type, l_whence, l_start, l_len, l_pid

CLAIM_FREE, CLAIM_INPUT, CLAIM_OUTPUT, CLAIM_ALERT = 0, 1, 2, 3
CLAIM_NAMES: Final = ("free", "input", "output", "alert")
DIR_INPUT, DIR_OUTPUT = 0, 1
F_PWM: Final = 1  # software PWM runs (in the owner's threads)
F_FROZEN: Final = 2  # PWM was stopped with the line possibly high: the level is the worst case

KINDS: Final = (
    "open", "close", "claim_input", "claim_output", "claim_alert", "free", "write", "pwm", "released", "reaped",
    "set_input",
)
(EV_OPEN, EV_CLOSE, EV_CLAIM_INPUT, EV_CLAIM_OUTPUT, EV_CLAIM_ALERT, EV_FREE, EV_WRITE, EV_PWM, EV_RELEASED,
 EV_REAPED, EV_SET_INPUT) = range(len(KINDS))

DEAD_PID: Final = (1 << 22) + 1  # above the largest pid_max: never a live process (simulate_dead_owner)


def create(path: str | os.PathLike[str], lines: int = 54, events: int = 16384, mode: int = 0o666) -> None:
    """Make a fresh chip state file: ``lines`` free input lines (a Pi 5's RP1 has 54), an event ring of ``events``.

    The file is rewritten in place (same inode, so a bind mount of it stays valid); make it before any process
    maps it. ``mode`` is set exactly (no umask): the processes using it need read and write access.
    """
    if not 1 <= lines <= 1024 or not 1 <= events <= 1 << 24:
        raise ValueError(f"lines must be 1..1024 and events 1..{1 << 24}")
    size = HEADER_SIZE + lines * LINE_SIZE + events * EVENT_SIZE
    buf = bytearray(size)
    now = time.monotonic_ns()
    _HEADER.pack_into(buf, 0, MAGIC, VERSION, lines, events, LINE_SIZE, 0, EVENT_SIZE, now)
    for gpio in range(lines):
        off = HEADER_SIZE + gpio * LINE_SIZE
        _OWNER.pack_into(buf, off, 0, CLAIM_FREE, DIR_INPUT, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, now, now)
        _EXT.pack_into(buf, off + _EXT_OFFSET, -1)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
        os.pwrite(fd, bytes(buf), 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _ofd_lock(fd: int, cmd: int, ltype: int, gpio: int) -> int:
    res = fcntl.fcntl(fd, cmd, _FLOCK.pack(ltype, os.SEEK_SET, LINE_LOCK_BASE + gpio, 1, 0))
    return int(_FLOCK.unpack(res)[0])


def try_line_lock(fd: int, gpio: int) -> bool:
    """Request the line (take its OFD lock) through ``fd``; False if another line request holds it."""
    try:
        _ofd_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, gpio)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def line_unlock(fd: int, gpio: int) -> None:
    _ofd_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, gpio)


def line_locked(fd: int, gpio: int) -> bool:
    """Whether a line request other than ``fd``'s holds the line (the kernel still has it claimed)."""
    return _ofd_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, gpio) != fcntl.F_UNLCK


class ChipFile:
    """One process's mapping of a chip state file (shared by its handles; the reader has its own)."""

    def __init__(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise FakeLgpioConfigError(
                f"fake lgpio: cannot open the chip state file {path} ({e.strerror}); make it with "
                f"tests.support.fake_lgpio.create() and give every process using it read-write access"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise FakeLgpioConfigError(f"fake lgpio: {path} is not a chip state file (too short)")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            magic, version, lines, capacity, line_size, _, event_size, _ = _HEADER.unpack_from(mm, 0)
            expected = HEADER_SIZE + lines * LINE_SIZE + capacity * EVENT_SIZE
            if (magic, version, line_size, event_size) != (MAGIC, VERSION, LINE_SIZE, EVENT_SIZE) or size != expected:
                mm.close()
                raise FakeLgpioConfigError(f"fake lgpio: {path} is not a chip state file made by create()")
        except BaseException:
            os.close(fd)
            raise
        self.path = path
        self.fd = fd
        self.mm = mm
        self.lines: int = lines
        self.capacity: int = capacity
        self.events_offset = HEADER_SIZE + lines * LINE_SIZE
        self.mutex = threading.Lock()  # flock does not exclude the threads of one process: this does

    def lock(self, shared: bool = False) -> None:
        self.mutex.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except BaseException:
            self.mutex.release()
            raise

    def unlock(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.mutex.release()

    def read_owner(self, gpio: int) -> tuple[Any, ...]:
        return _OWNER.unpack_from(self.mm, HEADER_SIZE + gpio * LINE_SIZE)

    def write_owner(self, gpio: int, *fields: Any) -> None:
        _OWNER.pack_into(self.mm, HEADER_SIZE + gpio * LINE_SIZE, *fields)

    def ext(self, gpio: int) -> int:
        return int(_EXT.unpack_from(self.mm, HEADER_SIZE + gpio * LINE_SIZE + _EXT_OFFSET)[0])

    def set_ext(self, gpio: int, level: int) -> None:
        _EXT.pack_into(self.mm, HEADER_SIZE + gpio * LINE_SIZE + _EXT_OFFSET, level)

    def append(
        self, t: int, pid: int, gpio: int, kind: int, level: int, freq: float, duty: float, result: int, flags: int
    ) -> int:
        """Append one event (the caller holds the exclusive lock); returns its sequence number."""
        mm = self.mm
        seq: int = _SEQ.unpack_from(mm, _SEQ_OFFSET)[0]
        _EVENT.pack_into(
            mm, self.events_offset + (seq % self.capacity) * EVENT_SIZE,
            seq, t, pid, gpio, kind, level, freq, duty, result, flags,
        )
        _SEQ.pack_into(mm, _SEQ_OFFSET, seq + 1)
        return seq

    def next_seq(self) -> int:
        return int(_SEQ.unpack_from(self.mm, _SEQ_OFFSET)[0])

    def read_events(self, after: int = -1) -> list[tuple[Any, ...]]:
        """Retained events with seq > ``after``, oldest first (the caller holds a lock)."""
        end = self.next_seq()
        start = max(after + 1, end - self.capacity, 0)
        unpack, base, cap = _EVENT.unpack_from, self.events_offset, self.capacity
        return [unpack(self.mm, base + (seq % cap) * EVENT_SIZE) for seq in range(start, end)]

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


def frozen_level(flags: int, level: int, micros_on: int) -> int:
    """The level a record's line is left at once nothing drives its PWM any more (the worst case)."""
    if flags & F_PWM:
        return 1 if micros_on > 0 else 0
    return level


def start_ticks(pid: int) -> int:
    """A process's start time (clock ticks after boot, /proc/<pid>/stat field 22); 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


# ---------------------------------------------------------------------------------------------- lgpio: the module


class error(Exception):
    """rgpio module exception"""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


class pulse:
    """A class to store pulse information."""

    def __init__(self, group_bits: int, group_mask: int, pulse_delay: int) -> None:
        self.group_bits = group_bits
        self.group_mask = group_mask
        self.pulse_delay = pulse_delay


def u2i(uint32: int) -> int:
    """Converts a 32 bit unsigned number to signed."""
    mask = (2**32) - 1
    return uint32 | ~mask if uint32 & (1 << 31) else uint32 & mask


def error_text(errnum: int) -> str:
    """Returns a description of an error number."""
    return _ERROR_TEXT.get(errnum, "unknown error")


def get_module_version() -> str:
    """Returns the version number of the lgpio Python module as a dotted quad."""
    v = LGPIO_PY_VERSION
    return f"lgpio.py_{(v >> 24) & 0xFF}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}.{v & 0xFF}"


def _dbg(function: str, message: str) -> None:
    """lgDbg.h LG_DBG(LG_DEBUG_ALWAYS, ...): straight to file descriptor 2, as the C library's fprintf(stderr)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {function}: {message}\n".encode(errors="replace"))


def _as_int(value: Any, function: str, argument: int) -> int:
    """SWIG's int conversion (a bool is an int; a float is not)."""
    if not isinstance(value, int):
        raise TypeError(f"in method '{function}', argument {argument} of type 'int'")
    if not -(1 << 31) <= value < 1 << 31:
        raise OverflowError(f"in method '{function}', argument {argument} of type 'int'")
    return int(value)


def _as_float(value: Any, function: str, argument: int) -> float:
    """SWIG's C float conversion: an int or float within FLT_MAX, rounded to single precision."""
    if isinstance(value, float):
        x = value
    elif isinstance(value, int):
        try:
            x = float(value)
        except OverflowError:
            raise OverflowError(f"in method '{function}', argument {argument} of type 'float'") from None
    else:
        raise TypeError(f"in method '{function}', argument {argument} of type 'float'")
    if x < -_FLT_MAX or x > _FLT_MAX:
        raise OverflowError(f"in method '{function}', argument {argument} of type 'float'")
    return float(_F32.unpack(_F32.pack(x))[0])


def _kernel_flags(lflags: int) -> int:
    """xMakeFlags: the lg line flags as the kernel keeps them (and reports them through gpio_get_mode)."""
    flags = lflags & _LINE_FLAGS
    if lflags & RISING_EDGE:
        flags |= GPIO_IS_RISING_EDGE
    if lflags & FALLING_EDGE:
        flags |= GPIO_IS_FALLING_EDGE
    return flags


def _flags_valid(kflags: int, output: bool) -> bool:
    """The kernel's gpio_v2_line_flags_validate (EINVAL otherwise)."""
    if kflags & (GPIO_IS_RISING_EDGE | GPIO_IS_FALLING_EDGE) and output:
        return False
    if kflags & (SET_OPEN_DRAIN | SET_OPEN_SOURCE) and not output:
        return False
    if kflags & SET_OPEN_DRAIN and kflags & SET_OPEN_SOURCE:
        return False
    return bin(kflags & _BIAS).count("1") <= 1


@dataclass(frozen=True)
class Config:
    """Where a fake lgpio module finds things; None means the environment (read when it is needed)."""

    chip: str | None = None  # the chip state file; None: $ROVER_SAFETY_FAKE_LGPIO_CHIP
    device: str | None = None  # the device node ("{chip}" = the number); None: $ROVER_SAFETY_FAKE_LGPIO_DEV
    workdir: str | None = None  # lg's working directory; None: $LG_WD, else the current directory

    def chip_path(self) -> str:
        path = self.chip if self.chip is not None else os.environ.get(ENV_CHIP)
        if not path:
            raise FakeLgpioConfigError(
                f"fake lgpio: no chip state file: set {ENV_CHIP}=/path/to/chip.state "
                f"(made by tests.support.fake_lgpio.create()), see tests/support/fake_lgpio/__init__.py"
            )
        return path

    def device_path(self, gpiochip: int) -> str:
        template = self.device if self.device is not None else os.environ.get(ENV_DEV) or DEFAULT_DEV
        return template.replace("{chip}", str(gpiochip))


class _Line:
    """lgGpio.c's lgLineInf_t for one line of one handle, plus what the fake publishes about it."""

    __slots__ = (
        "changed", "debounce", "direction", "duty", "entries", "freq", "frozen", "kflags", "level", "mode", "off",
        "on", "pwm", "settled", "watchdog",
    )

    def __init__(self) -> None:
        self.mode = 0  # LG_CHIP_BIT_*: 0 = not claimed by this handle
        self.kflags = 0
        self.direction = DIR_INPUT
        self.level = 0  # physical level driven (outputs)
        self.pwm = False
        self.on = 0  # PWM micros high / low per cycle
        self.off = 0
        self.freq = 0.0
        self.duty = 0.0
        self.entries = 0
        self.frozen = False
        self.changed = 0
        self.settled = 0
        self.debounce = 0
        self.watchdog = 0


class _Chip:
    """An open gpiochip handle (lgChipObj_t): the device node's descriptor and the line requests."""

    __slots__ = ("dev_fd", "gpiochip", "lines", "lock_fd", "mutex", "nlines", "slot", "state", "token")

    def __init__(self, slot: int, gpiochip: int, dev_fd: int, state: ChipFile, lock_fd: int) -> None:
        self.slot = slot
        self.gpiochip = gpiochip
        self.dev_fd = dev_fd
        self.state = state
        self.lock_fd = lock_fd  # this handle's own open file description: its line requests are OFD locks on it
        self.nlines = state.lines
        self.lines = [_Line() for _ in range(state.lines)]
        self.token = int.from_bytes(os.urandom(8), "little") or 1
        self.mutex = threading.Lock()  # lgHdlGetLockedObj: one call at a time per handle


class _Notify:
    __slots__ = ("fd", "name", "paused")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.paused = False


class _CallbackADT:
    """A class to hold callback information."""

    def __init__(self, gpiochip: int, gpio: int, edge: int, func: Callable[[int, int, int, int], Any]) -> None:
        self.chip = gpiochip
        self.gpio = gpio
        self.edge = edge
        self.func = func


class _CallbackThread(threading.Thread):
    """lgpio's notification thread: made at import, reads the pipe ``.lgd-nfy<handle>`` in the working directory."""

    def __init__(self, lib: Lgpio) -> None:
        threading.Thread.__init__(self)
        self._notify = lib.notify_handle()
        self._file = open(f".lgd-nfy{self._notify}", "rb")  # noqa: SIM115 (lgpio.py: relative, kept open)
        self.go = False
        self.daemon = True
        self.callbacks: list[_CallbackADT] = []
        self.go = True
        self.start()

    def stop(self) -> None:
        if self.go:
            self.go = False

    def append(self, callb: _CallbackADT) -> None:
        self.callbacks.append(callb)

    def remove(self, callb: _CallbackADT) -> None:
        if callb in self.callbacks:
            self.callbacks.remove(callb)

    def run(self) -> None:
        recv_siz = 16
        msg_siz = 16
        buf = b""
        while self.go:
            buf += self._file.read(recv_siz)
            offset = 0
            while self.go and (len(buf) - offset) >= msg_siz:
                msgbuf = buf[offset:offset + msg_siz]
                offset += msg_siz
                tick, chip, gpio, level, flags, _pad = struct.unpack("QBBBBI", msgbuf)
                if flags == 0:
                    for cb in self.callbacks:
                        if cb.chip == chip and cb.gpio == gpio:
                            cb.func(chip, gpio, level, tick)
            buf = buf[offset:]
        self._file.close()


class _Callback:
    """A class to provide GPIO level change callbacks (lgpio's ``_callback``)."""

    def __init__(
        self, thread: _CallbackThread, chip: int, gpio: int, edge: int = RISING_EDGE,
        func: Callable[[int, int, int, int], Any] | None = None,
    ) -> None:
        self.count = 0
        self._reset = False
        self._thread = thread
        self.callb = _CallbackADT(chip, gpio, edge, self._tally if func is None else func)
        thread.append(self.callb)

    def cancel(self) -> None:
        self._thread.remove(self.callb)

    def _tally(self, chip: int, gpio: int, level: int, tick: int) -> None:
        if self._reset:
            self._reset = False
            self.count = 0
        self.count += 1

    def tally(self) -> int:
        return self.count

    def reset_tally(self) -> None:
        self._reset = True
        self.count = 0


# the lgpio functions made available on the module (the Lgpio methods of these names)
API: Final = (
    "gpiochip_open", "gpiochip_close", "gpio_get_chip_info", "gpio_get_line_info", "gpio_get_mode",
    "gpio_claim_input", "gpio_claim_output", "gpio_free", "gpio_read", "gpio_write", "tx_pulse", "tx_pwm",
    "tx_servo", "tx_busy", "tx_room", "gpio_set_debounce_micros", "gpio_set_watchdog_micros", "gpio_claim_alert",
    "callback", "notify_open", "notify_pause", "notify_resume", "notify_close", "get_internal", "set_internal",
)
NOT_EMULATED: Final = (
    "group_claim_input", "group_claim_output", "group_free", "group_read", "group_write", "tx_wave",
    "i2c_open", "i2c_close", "i2c_write_quick", "i2c_write_byte", "i2c_read_byte", "i2c_write_byte_data",
    "i2c_write_word_data", "i2c_read_byte_data", "i2c_read_word_data", "i2c_process_call", "i2c_write_block_data",
    "i2c_read_block_data", "i2c_block_process_call", "i2c_write_i2c_block_data", "i2c_read_i2c_block_data",
    "i2c_read_device", "i2c_write_device", "i2c_zip", "serial_open", "serial_close", "serial_read_byte",
    "serial_write_byte", "serial_read", "serial_write", "serial_data_available", "spi_open", "spi_close",
    "spi_read", "spi_write", "spi_xfer",
)


# the constants lgpio.py defines (levels, line and event flags, tx kinds, SPI modes, error numbers)
CONSTANTS: Final = (
    "LGPIO_PY_VERSION", "OFF", "LOW", "CLEAR", "ON", "HIGH", "SET", "TIMEOUT", "GROUP_ALL", "SET_ACTIVE_LOW",
    "SET_OPEN_DRAIN", "SET_OPEN_SOURCE", "SET_PULL_UP", "SET_PULL_DOWN", "SET_PULL_NONE", "RISING_EDGE",
    "FALLING_EDGE", "BOTH_EDGES", "TX_PWM", "TX_WAVE", "SPI_MODE_0", "SPI_MODE_1", "SPI_MODE_2", "SPI_MODE_3", "OKAY",
    "INIT_FAILED", "BAD_MICROS", "BAD_PATHNAME", "NO_HANDLE", "BAD_HANDLE", "BAD_SOCKET_PORT", "NOT_PERMITTED",
    "SOME_PERMITTED", "BAD_SCRIPT", "BAD_TX_TYPE", "GPIO_IN_USE", "BAD_PARAM_NUM", "DUP_TAG", "TOO_MANY_TAGS",
    "BAD_SCRIPT_CMD", "BAD_VAR_NUM", "NO_SCRIPT_ROOM", "NO_MEMORY", "SOCK_READ_FAILED", "SOCK_WRIT_FAILED",
    "TOO_MANY_PARAM", "SCRIPT_NOT_READY", "BAD_TAG", "BAD_MICS_DELAY", "BAD_MILS_DELAY", "I2C_OPEN_FAILED",
    "SERIAL_OPEN_FAILED", "SPI_OPEN_FAILED", "BAD_I2C_BUS", "BAD_I2C_ADDR", "BAD_SPI_CHANNEL", "BAD_I2C_FLAGS",
    "BAD_SPI_FLAGS", "BAD_SERIAL_FLAGS", "BAD_SPI_SPEED", "BAD_SERIAL_DEVICE", "BAD_SERIAL_SPEED", "BAD_FILE_PARAM",
    "BAD_I2C_PARAM", "BAD_SERIAL_PARAM", "I2C_WRITE_FAILED", "I2C_READ_FAILED", "BAD_SPI_COUNT",
    "SERIAL_WRITE_FAILED", "SERIAL_READ_FAILED", "SERIAL_READ_NO_DATA", "UNKNOWN_COMMAND", "SPI_XFER_FAILED",
    "BAD_POINTER", "MSG_TOOBIG", "BAD_MALLOC_MODE", "TOO_MANY_SEGS", "BAD_I2C_SEG", "BAD_SMBUS_CMD", "BAD_I2C_WLEN",
    "BAD_I2C_RLEN", "BAD_I2C_CMD", "FILE_OPEN_FAILED", "BAD_FILE_MODE", "BAD_FILE_FLAG", "BAD_FILE_READ",
    "BAD_FILE_WRITE", "FILE_NOT_ROPEN", "FILE_NOT_WOPEN", "BAD_FILE_SEEK", "NO_FILE_MATCH", "NO_FILE_ACCESS",
    "FILE_IS_A_DIR", "BAD_SHELL_STATUS", "BAD_SCRIPT_NAME", "CMD_INTERRUPTED", "BAD_EVENT_REQUEST", "BAD_GPIO_NUMBER",
    "BAD_GROUP_SIZE", "BAD_LINEINFO_IOCTL", "BAD_READ", "BAD_WRITE", "CANNOT_OPEN_CHIP", "GPIO_BUSY",
    "GPIO_NOT_ALLOCATED", "NOT_A_GPIOCHIP", "NOT_ENOUGH_MEMORY", "POLL_FAILED", "TOO_MANY_GPIOS", "UNEGPECTED_ERROR",
    "BAD_PWM_MICROS", "NOT_GROUP_LEADER", "SPI_IOCTL_FAILED", "BAD_GPIOCHIP", "BAD_CHIPINFO_IOCTL", "BAD_CONFIG_FILE",
    "BAD_CONFIG_VALUE", "NO_PERMISSIONS", "BAD_USERNAME", "BAD_SECRET", "TX_QUEUE_FULL", "BAD_CONFIG_ID",
    "BAD_DEBOUNCE_MICS", "BAD_WATCHDOG_MICS", "BAD_SERVO_FREQ", "BAD_SERVO_WIDTH", "BAD_PWM_FREQ", "BAD_PWM_DUTY",
    "GPIO_NOT_AN_OUTPUT", "INVALID_GROUP_ALERT",
)


def _not_emulated(name: str) -> Callable[..., Any]:
    def function(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"fake lgpio: {name}() is not emulated (only what gpiozero's LGPIOFactory uses)")

    function.__name__ = name
    return function


class Lgpio:
    """One process's lgpio (one ``import lgpio``): the handle table, the mapped chip files, the working directory.

    Its public methods are the module's functions, with lgpio's signatures and return conventions.
    """

    def __init__(self, module: ModuleType, config: Config) -> None:
        self.module = module
        self.config = config
        self.slots: list[_Chip | _Notify | bool | None] = [None] * _HANDLE_SLOTS
        self.slots_lock = threading.Lock()
        self.states: dict[str, ChipFile] = {}
        self.pid = os.getpid()
        self.start = start_ticks(self.pid)
        self.workdir: str | None = None
        self.min_tx_delay = 10  # lgPthTx.c lgMinTxDelay (micros)
        self.debug_level = 1
        self.notify_thread: _CallbackThread | None = None
        self.notify_pipe: _Notify | None = None  # the one lgpio.py opens at import

    # ------------------------------------------------------------------ the wrapper's plumbing

    def _u2i(self, status: int) -> int:
        if status < 0 and self.module.exceptions:
            raise error(error_text(status))
        return status

    def _u2i_list(self, lst: list[Any]) -> list[Any]:
        if lst[0] < 0 and self.module.exceptions:
            raise error(error_text(lst[0]))
        return lst

    def _alloc(self, obj: _Chip | _Notify | bool) -> int:
        with self.slots_lock:
            for slot, used in enumerate(self.slots):
                if used is None:
                    self.slots[slot] = obj
                    return slot
        return NO_HANDLE

    def _chip(self, slot: int) -> _Chip | None:
        obj = self.slots[slot] if 0 <= slot < _HANDLE_SLOTS else None
        return obj if isinstance(obj, _Chip) else None

    def _state(self) -> ChipFile:
        path = self.config.chip_path()
        state = self.states.get(path)
        if state is None:
            state = self.states[path] = ChipFile(path)
        return state

    # ------------------------------------------------------------------ working directory and notification pipes

    def work_dir(self) -> str:
        """lgUtil.c lguGetWorkDir: resolved once ($LG_WD, else the current directory), then chdir()ed to."""
        if self.workdir is None:
            wd = self.config.workdir if self.config.workdir is not None else os.environ.get(ENV_WD)
            if wd is not None:
                if wd.startswith("/"):
                    resolved = wd if len(wd) < _MAX_PATH else "/tmp"
                else:
                    try:
                        cwd = os.getcwd()
                    except OSError:
                        resolved = "/tmp"
                    else:
                        resolved = f"{cwd}/{wd}" if len(cwd) + len(wd) + 2 < _MAX_PATH else cwd
            else:
                try:
                    resolved = os.getcwd()
                except OSError:
                    resolved = "/tmp"
            try:
                os.chdir(resolved)
            except OSError as e:
                _dbg("lguGetWorkDir", f"can't set working directory ({e.strerror})")
            self.workdir = resolved
        return self.workdir

    def notify_handle(self) -> int:
        """lgNotify.c lgNotifyOpenWithSize(0): the pipe <workdir>/.lgd-nfy<handle>; -3 if it cannot be opened."""
        slot = self._alloc(True)
        if slot < 0:
            return NO_MEMORY
        name = f"{self.work_dir()}/.lgd-nfy{slot}"
        perm = 0o664
        with contextlib.suppress(OSError):  # xCreatePipe
            os.unlink(name)
        with contextlib.suppress(OSError):
            os.mkfifo(name, perm)
        try:
            os.chmod(name, perm)
        except OSError as e:
            _dbg("xCreatePipe", f"Can't set permissions ({perm}) for {name}, {e.strerror}")
        try:
            fd = os.open(name, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            self.slots[slot] = None
            return BAD_PATHNAME
        os.set_inheritable(fd, True)  # lg opens it without O_CLOEXEC
        self.slots[slot] = _Notify(fd, name)
        return slot

    def notify_open(self) -> int:
        """Opens a notification pipe (``.lgd-nfy<handle>`` in the working directory)."""
        return self._u2i(self.notify_handle())

    def _notify(self, handle: int) -> _Notify | None:
        obj = self.slots[handle] if 0 <= handle < _HANDLE_SLOTS else None
        return obj if isinstance(obj, _Notify) else None

    def notify_pause(self, handle: int) -> int:
        n = self._notify(_as_int(handle, "_notify_pause", 1))
        if n is not None:
            n.paused = True
        return self._u2i(OKAY if n is not None else BAD_HANDLE)

    def notify_resume(self, handle: int) -> int:
        n = self._notify(_as_int(handle, "_notify_resume", 1))
        if n is not None:
            n.paused = False
        return self._u2i(OKAY if n is not None else BAD_HANDLE)

    def notify_close(self, handle: int) -> int:
        n = self._notify(_as_int(handle, "_notify_close", 1))
        if n is None:
            return self._u2i(BAD_HANDLE)
        os.close(n.fd)  # _notifyClose unlinks "/dev/lg<n>", not the pipe: the pipe stays
        self.slots[handle] = None
        return self._u2i(OKAY)

    # ------------------------------------------------------------------ chips

    def gpiochip_open(self, gpiochip: int) -> int:
        """This returns a handle to a gpiochip device (/dev/gpiochip<gpiochip>)."""
        handle = u2i(self._gpiochip_open(_as_int(gpiochip, "_gpiochip_open", 1)))
        if handle >= 0:
            handle = handle | (gpiochip << 16)
        return self._u2i(handle)

    def _gpiochip_open(self, gpiochip: int) -> int:
        if gpiochip < 0:
            return BAD_GPIOCHIP
        try:
            dev_fd = os.open(self.config.device_path(gpiochip), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return CANNOT_OPEN_CHIP
        # (lg's GPIO_GET_CHIPINFO ioctl is not emulated: whatever opened is taken for the chip)
        try:
            state = self._state()
            lock_fd = os.open(state.path, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            os.close(dev_fd)
            raise
        placeholder = self._alloc(True)
        if placeholder < 0:
            os.close(lock_fd)
            os.close(dev_fd)
            return NOT_ENOUGH_MEMORY
        chip = _Chip(placeholder, gpiochip, dev_fd, state, lock_fd)
        self.slots[placeholder] = chip
        self._log(chip, -1, EV_OPEN, 0, placeholder, gpiochip)
        return placeholder

    def gpiochip_close(self, handle: int) -> int:
        """This closes a gpiochip device."""
        return self._u2i(self._gpiochip_close(handle & 0xFFFF))

    def _gpiochip_close(self, slot: int) -> int:
        chip = self._chip(slot)
        if chip is None:
            return BAD_HANDLE
        with chip.mutex:
            if self.slots[slot] is not chip:
                return BAD_HANDLE
            self.slots[slot] = None
            now = time.monotonic_ns()
            for line in chip.lines:  # lgPthTxStop: the PWM threads drop the lines wherever they are
                if line.pwm:
                    self._stop_pwm(line, now)
            time.sleep(CLOSE_SETTLE_S)
            for gpio, line in enumerate(chip.lines):
                if line.mode:
                    self._release(chip, gpio, line, EV_RELEASED)
            os.close(chip.lock_fd)
            os.close(chip.dev_fd)
            self._log(chip, -1, EV_CLOSE, 0, slot, chip.gpiochip)
        return OKAY

    def gpio_get_chip_info(self, handle: int) -> list[Any]:
        """This returns summary information of an opened gpiochip: [status, lines, name, label]."""
        chip = self._chip(handle & 0xFFFF)
        if chip is None:
            return self._u2i_list([BAD_HANDLE, 0, "", ""])
        return self._u2i_list([OKAY, chip.nlines, f"gpiochip{chip.gpiochip}", "fake-lgpio"])

    def gpio_get_line_info(self, handle: int, gpio: int) -> list[Any]:
        """This returns detailed information of a GPIO: [status, offset, flags, name, user]."""
        mode = self._gpio_get_mode(handle & 0xFFFF, _as_int(gpio, "_gpio_get_line_info", 2))
        if mode < 0:
            return self._u2i_list([mode, 0, 0, "", ""])
        return self._u2i_list([OKAY, gpio, mode, f"GPIO{gpio}", "lg" if mode & GPIO_IS_KERNEL else ""])

    # ------------------------------------------------------------------ publishing to the chip file

    def _publish(self, chip: _Chip, gpio: int, line: _Line, kind: int, result: int) -> None:
        """Write this handle's view of the line to the chip file and log the call (one locked section)."""
        mode = line.mode
        claim = (
            CLAIM_OUTPUT if mode & _MODE_OUTPUT else CLAIM_ALERT if mode & _MODE_ALERT
            else CLAIM_INPUT if mode & _MODE_INPUT else CLAIM_FREE
        )
        flags = (F_PWM if line.pwm else 0) | (F_FROZEN if line.frozen else 0)
        level = (1 if line.on > 0 else 0) if line.pwm else line.level
        state = chip.state
        state.lock()
        try:
            if claim:
                state.write_owner(
                    gpio, self.pid, claim, line.direction, line.level, flags, line.kflags, line.on, line.off, 0,
                    chip.token, self.start, line.freq, line.duty, line.changed, line.settled,
                )
            else:
                state.write_owner(
                    gpio, 0, CLAIM_FREE, line.direction, line.level, flags, line.kflags, 0, 0, 0, 0, 0,
                    0.0, 0.0, line.changed, line.settled,
                )
            state.append(line.changed, self.pid, gpio, kind, level, line.freq, line.duty, result, line.kflags)
        finally:
            state.unlock()

    def _log(self, chip: _Chip, gpio: int, kind: int, level: int, result: int, flags: int = 0) -> None:
        """Log a call that changed nothing (a failure) or that concerns the chip."""
        state = chip.state
        state.lock()
        try:
            state.append(time.monotonic_ns(), self.pid, gpio, kind, level, 0.0, 0.0, result, flags)
        finally:
            state.unlock()

    # ------------------------------------------------------------------ claiming and freeing (lgGpio.c)

    def _claim(self, chip: _Chip, gpio: int, lflags: int, output: bool, value: int, alert: bool = False) -> int:
        """xClaim + xGpioHandleRequest for one line (GPIO_V2_GET_LINE_IOCTL)."""
        kind = EV_CLAIM_ALERT if alert else EV_CLAIM_OUTPUT if output else EV_CLAIM_INPUT
        if gpio < 0 or gpio > chip.nlines:
            return NOT_PERMITTED
        kflags = _kernel_flags(lflags)
        if gpio == chip.nlines or not _flags_valid(kflags, output):
            if not alert:
                _dbg("xGpioHandleRequest", os.strerror(errno.EINVAL))
            return BAD_EVENT_REQUEST if alert else UNEGPECTED_ERROR
        if not try_line_lock(chip.lock_fd, gpio):
            self._log(chip, gpio, kind, -1, GPIO_BUSY)
            return GPIO_BUSY
        line = chip.lines[gpio]
        now = time.monotonic_ns()
        state = chip.state
        active_low = 1 if kflags & SET_ACTIVE_LOW else 0
        line.mode = _MODE_ALERT if alert else _MODE_OUTPUT if output else _MODE_INPUT
        line.kflags = kflags
        line.direction = DIR_OUTPUT if output else DIR_INPUT
        line.pwm, line.frozen, line.on, line.off, line.freq, line.duty, line.entries = False, False, 0, 0, 0.0, 0.0, 0
        line.changed = line.settled = now
        state.lock()
        try:
            prev = state.read_owner(gpio)
            if prev[1] != CLAIM_FREE:  # claimed, yet nobody held it: the kernel released it when its owner died
                state.append(now, prev[0], gpio, EV_REAPED, frozen_level(prev[4], prev[3], prev[6]), prev[11],
                             prev[12], OKAY, prev[5])
            if output:
                line.level = (1 if value else 0) ^ active_low
            else:
                ext = state.ext(gpio)
                line.level = ext if ext >= 0 else 1 if kflags & SET_PULL_UP else 0
            claim = CLAIM_ALERT if alert else CLAIM_OUTPUT if output else CLAIM_INPUT
            state.write_owner(
                gpio, self.pid, claim, line.direction, line.level, 0, kflags, 0, 0, 0, chip.token, self.start,
                0.0, 0.0, now, now,
            )
            state.append(now, self.pid, gpio, kind, line.level, 0.0, 0.0, OKAY, kflags)
        finally:
            state.unlock()
        return OKAY

    def _stop_pwm(self, line: _Line, now: int) -> None:
        """The PWM record goes inactive: the thread drops it without touching the line (lgPthTx.c)."""
        level = 1 if line.on > 0 or now < line.settled else 0
        line.pwm = False
        line.frozen = level == 1
        line.level = level
        line.on = line.off = line.entries = 0
        line.freq = line.duty = 0.0
        line.changed = line.settled = now

    def _release(self, chip: _Chip, gpio: int, line: _Line, kind: int) -> None:
        """The line request ends: an output keeps driving its last level, an input stays an input."""
        now = time.monotonic_ns()
        if line.pwm:
            self._stop_pwm(line, now)
        line.mode = 0
        line.freq = line.duty = 0.0
        line.changed = now
        if not line.frozen:
            line.settled = now
        self._publish(chip, gpio, line, kind, OKAY)
        line_unlock(chip.lock_fd, gpio)

    def _set_free(self, chip: _Chip, gpio: int) -> int:
        """xSetAsFree (singletons: the fake has no groups)."""
        line = chip.lines[gpio]
        if line.mode:
            self._release(chip, gpio, line, EV_FREE)
        return OKAY

    def _set_output(self, chip: _Chip, gpio: int, lflags: int, value: int) -> int:
        """xSetAsOutput for one GPIO: nothing to do if already an output, else (auto) free and claim."""
        if 0 <= gpio < chip.nlines:
            mode = chip.lines[gpio].mode
            if mode & _MODE_OUTPUT:
                return OKAY
            if not mode & _MODE_GROUP:
                self._set_free(chip, gpio)
        return self._claim(chip, gpio, lflags, True, value)

    def _set_input(self, chip: _Chip, gpio: int, lflags: int) -> int:
        """xSetAsInput for one GPIO: nothing to do if already an input, else (auto) free and claim."""
        if 0 <= gpio < chip.nlines:
            mode = chip.lines[gpio].mode
            if mode & _MODE_INPUT:
                return OKAY
            if not mode & _MODE_GROUP:
                self._set_free(chip, gpio)
        return self._claim(chip, gpio, lflags, False, 0)

    def gpio_claim_input(self, handle: int, gpio: int, lFlags: int = 0) -> int:
        """This claims a GPIO for input."""
        chip = self._chip(handle & 0xFFFF)
        lflags = _as_int(lFlags, "_gpio_claim_input", 2)
        g = _as_int(gpio, "_gpio_claim_input", 3)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            return self._u2i(self._set_input(chip, g, lflags))

    def gpio_claim_output(self, handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> int:
        """This claims a GPIO for output (level 0: low, anything else: high)."""
        chip = self._chip(handle & 0xFFFF)
        lflags = _as_int(lFlags, "_gpio_claim_output", 2)
        g = _as_int(gpio, "_gpio_claim_output", 3)
        value = _as_int(level, "_gpio_claim_output", 4)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            return self._u2i(self._set_output(chip, g, lflags, value))

    def gpio_free(self, handle: int, gpio: int) -> int:
        """This frees a GPIO."""
        chip = self._chip(handle & 0xFFFF)
        g = _as_int(gpio, "_gpio_free", 2)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            if not 0 <= g < chip.nlines:
                return self._u2i(BAD_GPIO_NUMBER)
            if not chip.lines[g].mode:
                return self._u2i(GPIO_NOT_ALLOCATED)
            return self._u2i(self._set_free(chip, g))

    def gpio_claim_alert(
        self, handle: int, gpio: int, eFlags: int, lFlags: int = 0, notify_handle: int | None = None
    ) -> int:
        """This claims a GPIO to be used as a source of alerts on level changes (none are ever reported)."""
        if notify_handle is None:
            assert self.notify_thread is not None
            notify_handle = self.notify_thread._notify
        chip = self._chip(handle & 0xFFFF)
        lflags = _as_int(lFlags, "_gpio_claim_alert", 2)
        eflags = _as_int(eFlags, "_gpio_claim_alert", 3)
        g = _as_int(gpio, "_gpio_claim_alert", 4)
        _as_int(notify_handle, "_gpio_claim_alert", 5)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            if not 0 <= g < chip.nlines:
                return self._u2i(BAD_GPIO_NUMBER)
            if chip.lines[g].mode & _MODE_GROUP:
                return self._u2i(INVALID_GROUP_ALERT)
            self._set_free(chip, g)
            status = self._claim(chip, g, lflags | eflags, False, 0, alert=True)
            return self._u2i(BAD_EVENT_REQUEST if status == GPIO_BUSY else status)

    def callback(
        self, handle: int, gpio: int, edge: int = RISING_EDGE, func: Callable[[int, int, int, int], Any] | None = None
    ) -> _Callback:
        """Calls a user supplied function whenever the GPIO edge is detected (the fake detects none)."""
        assert self.notify_thread is not None
        return _Callback(self.notify_thread, handle >> 16, gpio, edge, func)

    # ------------------------------------------------------------------ reading and writing

    def gpio_get_mode(self, handle: int, gpio: int) -> int:
        """This returns the mode of a GPIO (kernel bits, and this handle's LG bits << 8)."""
        return self._u2i(self._gpio_get_mode(handle & 0xFFFF, _as_int(gpio, "_gpio_get_mode", 2)))

    def _gpio_get_mode(self, slot: int, gpio: int) -> int:
        chip = self._chip(slot)
        if chip is None:
            return BAD_HANDLE
        if not 0 <= gpio < chip.nlines:
            return BAD_GPIO_NUMBER
        line = chip.lines[gpio]
        if line.mode:
            status = GPIO_IS_KERNEL | (GPIO_IS_OUTPUT if line.direction else GPIO_IS_INPUT) | line.kflags
        else:
            state = chip.state
            state.lock(shared=True)
            try:
                rec = state.read_owner(gpio)
            finally:
                state.unlock()
            direction = GPIO_IS_OUTPUT if rec[2] == DIR_OUTPUT else GPIO_IS_INPUT
            if rec[1] != CLAIM_FREE and line_locked(chip.lock_fd, gpio):
                status = GPIO_IS_KERNEL | direction | rec[5]
            else:
                status = direction  # released: the kernel clears the line's flags
        return status | (line.mode << 8)

    def gpio_read(self, handle: int, gpio: int) -> int:
        """This returns the level of a GPIO (an unclaimed one is claimed as an input first)."""
        chip = self._chip(handle & 0xFFFF)
        g = _as_int(gpio, "_gpio_read", 2)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            if not 0 <= g < chip.nlines:
                return self._u2i(BAD_GPIO_NUMBER)
            line = chip.lines[g]
            if not line.mode:
                self._set_input(chip, g, 0)
            if not line.mode:
                return self._u2i(GPIO_NOT_ALLOCATED)
            if line.mode & _MODE_OUTPUT:
                physical = (1 if line.on > 0 else 0) if line.pwm else line.level
            else:
                ext = chip.state.ext(g)
                physical = ext if ext >= 0 else 1 if line.kflags & SET_PULL_UP else 0
            return physical ^ (1 if line.kflags & SET_ACTIVE_LOW else 0)

    def gpio_write(self, handle: int, gpio: int, level: int) -> int:
        """This sets the level of an output GPIO (an unclaimed or input one is claimed as an output)."""
        chip = self._chip(handle & 0xFFFF)
        g = _as_int(gpio, "_gpio_write", 2)
        value = _as_int(level, "_gpio_write", 3)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        with chip.mutex:
            if not 0 <= g < chip.nlines:
                return self._u2i(BAD_GPIO_NUMBER)
            line = chip.lines[g]
            if line.mode & _MODE_OUTPUT:
                line.level = (1 if value else 0) ^ (1 if line.kflags & SET_ACTIVE_LOW else 0)
                line.frozen = False
                line.changed = time.monotonic_ns()
                if not line.pwm:
                    line.settled = line.changed
                self._publish(chip, g, line, EV_WRITE, OKAY)
                return OKAY
            if line.mode & _MODE_GROUP:
                return self._u2i(GPIO_NOT_AN_OUTPUT)
            return self._u2i(self._set_output(chip, g, 0, value))

    # ------------------------------------------------------------------ software PWM (lgGpio.c xSetAsPwm, lgPthTx.c)

    def tx_pwm(
        self, handle: int, gpio: int, pwm_frequency: float, pwm_duty_cycle: float, pulse_offset: int = 0,
        pulse_cycles: int = 0,
    ) -> int:
        """This starts software timed PWM on an output GPIO (frequency 0: off, 0.1-10000 Hz; duty 0-100 %).

        If OK returns the number of entries left in the PWM queue for the GPIO.
        """
        slot = handle & 0xFFFF
        g = _as_int(gpio, "_tx_pwm", 2)
        freq = _as_float(pwm_frequency, "_tx_pwm", 3)
        duty = _as_float(pwm_duty_cycle, "_tx_pwm", 4)
        offset = _as_int(pulse_offset, "_tx_pwm", 5)
        cycles = _as_int(pulse_cycles, "_tx_pwm", 6)
        if freq == 0.0:
            return self._u2i(self._tx_pulse(slot, g, 0, 0, 0, 0, 0.0, 0.0))
        if freq < 0.1 or freq > 1e4:
            return self._u2i(BAD_PWM_FREQ)
        if duty < 0.0 or duty > 100.0:
            return self._u2i(BAD_PWM_DUTY)
        micros = int(1.0e6 / freq + 0.5)
        micros_on = int(duty / 100.0 * micros + 0.5)
        return self._u2i(self._tx_pulse(slot, g, micros_on, micros - micros_on, offset, cycles, freq, duty))

    def tx_pulse(
        self, handle: int, gpio: int, pulse_on: int, pulse_off: int, pulse_offset: int = 0, pulse_cycles: int = 0
    ) -> int:
        """This starts software timed pulses on an output GPIO (both 0: off)."""
        on = _as_int(pulse_on, "_tx_pulse", 3)
        off = _as_int(pulse_off, "_tx_pulse", 4)
        total = on + off
        freq, duty = (1e6 / total, on * 100.0 / total) if total > 0 else (0.0, 0.0)
        return self._u2i(self._tx_pulse(
            handle & 0xFFFF, _as_int(gpio, "_tx_pulse", 2), on, off, _as_int(pulse_offset, "_tx_pulse", 5),
            _as_int(pulse_cycles, "_tx_pulse", 6), freq, duty,
        ))

    def tx_servo(
        self, handle: int, gpio: int, pulse_width: int, servo_frequency: int = 50, pulse_offset: int = 0,
        pulse_cycles: int = 0,
    ) -> int:
        """This starts software timed servo pulses on an output GPIO (width 0: off, 500-2500 us; 40-500 Hz)."""
        width = _as_int(pulse_width, "_tx_servo", 3)
        freq = _as_int(servo_frequency, "_tx_servo", 4)
        slot, g = handle & 0xFFFF, _as_int(gpio, "_tx_servo", 2)
        offset, cycles = _as_int(pulse_offset, "_tx_servo", 5), _as_int(pulse_cycles, "_tx_servo", 6)
        if width == 0:
            return self._u2i(self._tx_pulse(slot, g, 0, 0, 0, 0, 0.0, 0.0))
        if not 40 <= freq <= 500:
            return self._u2i(BAD_SERVO_FREQ)
        if not 500 <= width <= 2500:
            return self._u2i(BAD_SERVO_WIDTH)
        micros = int(1.0e6 / freq + 0.5)
        if micros - width < 0:
            return self._u2i(BAD_SERVO_WIDTH)
        return self._u2i(self._tx_pulse(slot, g, width, micros - width, offset, cycles, float(freq),
                                        width * 100.0 / micros))

    def _tx_pulse(
        self, slot: int, gpio: int, on: int, off: int, offset: int, cycles: int, freq: float, duty: float
    ) -> int:
        """lgTxPulse + xSetAsPwm."""
        chip = self._chip(slot)
        if chip is None:
            return BAD_HANDLE
        if not 0 <= gpio < chip.nlines:
            return BAD_GPIO_NUMBER
        if cycles:
            raise NotImplementedError("fake lgpio: PWM or pulses with pulse_cycles != 0 are not emulated")
        with chip.mutex:
            line = chip.lines[gpio]
            if not line.mode & _MODE_OUTPUT and not line.mode & _MODE_GROUP:
                self._set_output(chip, gpio, _GPIO_V2_LINE_FLAG_OUTPUT, 0)
            if not line.mode & _MODE_OUTPUT:
                self._log(chip, gpio, EV_PWM, -1, GPIO_NOT_AN_OUTPUT)
                return GPIO_NOT_AN_OUTPUT
            now = time.monotonic_ns()
            if line.pwm:
                if not (on or off):  # p->active = 0: stop, wherever the line is
                    self._stop_pwm(line, now)
                    self._publish(chip, gpio, line, EV_PWM, OKAY)
                    return OKAY
                if on + off <= self.min_tx_delay:
                    self._log(chip, gpio, EV_PWM, -1, BAD_PWM_MICROS)
                    return BAD_PWM_MICROS
                if line.entries > 1:  # the pending entry (infinite cycles) is replaced
                    line.entries -= 1
                if line.entries >= _TX_BUF:
                    return TX_QUEUE_FULL
                line.entries += 1
                status = _TX_BUF - line.entries
                if (on, off) != (line.on, line.off):  # takes over at the end of the running cycle
                    line.settled = max(line.settled, now + (line.on + line.off) * 1000)
                line.on, line.off, line.freq, line.duty, line.changed = on, off, freq, duty, now
                self._publish(chip, gpio, line, EV_PWM, status)
                return status
            if on + off <= self.min_tx_delay:
                self._log(chip, gpio, EV_PWM, -1, BAD_PWM_MICROS)
                return BAD_PWM_MICROS
            line.pwm, line.frozen, line.entries = True, False, 1
            line.on, line.off, line.freq, line.duty, line.changed = on, off, freq, duty, now
            # the first edge comes at the next cycle boundary after the PWM thread's current sleep (<= 20 ms)
            line.settled = now + (on + off) * 1000 + _TX_THREAD_MAX_SLEEP_NS
            self._publish(chip, gpio, line, EV_PWM, _TX_BUF - 1)
            return _TX_BUF - 1

    def tx_busy(self, handle: int, gpio: int, kind: int) -> int:
        """This returns 1 if transmissions of the kind (TX_PWM or TX_WAVE) are active on the GPIO, else 0."""
        k = _as_int(kind, "_tx_busy", 3)
        if k not in (TX_PWM, TX_WAVE):
            return self._u2i(BAD_TX_TYPE)
        chip, g = self._chip(handle & 0xFFFF), _as_int(gpio, "_tx_busy", 2)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        if not 0 <= g < chip.nlines:
            return self._u2i(BAD_GPIO_NUMBER)
        return 1 if k == TX_PWM and chip.lines[g].pwm else 0

    def tx_room(self, handle: int, gpio: int, kind: int) -> int:
        """This returns the number of free entries to queue further transmissions of the kind on the GPIO."""
        k = _as_int(kind, "_tx_room", 3)
        if k not in (TX_PWM, TX_WAVE):
            return self._u2i(BAD_TX_TYPE)
        chip, g = self._chip(handle & 0xFFFF), _as_int(gpio, "_tx_room", 2)
        if chip is None:
            return self._u2i(BAD_HANDLE)
        if not 0 <= g < chip.nlines:
            return self._u2i(BAD_GPIO_NUMBER)
        line = chip.lines[g]
        return _TX_BUF - line.entries if k == TX_PWM and line.pwm else _TX_BUF

    # ------------------------------------------------------------------ alerts' settings, internals

    def gpio_set_debounce_micros(self, handle: int, gpio: int, debounce_micros: int) -> int:
        """This sets the debounce time for a GPIO (it only affects alerts)."""
        return self._u2i(self._set_micros(handle, gpio, debounce_micros, "_gpio_set_debounce_micros",
                                          _MAX_MICS_DEBOUNCE, BAD_DEBOUNCE_MICS, "debounce"))

    def gpio_set_watchdog_micros(self, handle: int, gpio: int, watchdog_micros: int) -> int:
        """This sets the watchdog time for a GPIO (it only affects alerts)."""
        return self._u2i(self._set_micros(handle, gpio, watchdog_micros, "_gpio_set_watchdog_micros",
                                          _MAX_MICS_WATCHDOG, BAD_WATCHDOG_MICS, "watchdog"))

    def _set_micros(
        self, handle: int, gpio: int, micros: int, function: str, maximum: int, bad: int, attr: str
    ) -> int:
        slot, g, us = handle & 0xFFFF, _as_int(gpio, function, 2), _as_int(micros, function, 3)
        if not 0 <= us <= maximum:
            return bad
        chip = self._chip(slot)
        if chip is None:
            return BAD_HANDLE
        if not 0 <= g < chip.nlines:
            return BAD_GPIO_NUMBER
        setattr(chip.lines[g], attr, us)
        return OKAY

    def get_internal(self, config_id: int) -> list[Any]:
        """Returns [status, value] of a configuration item (0: debug level, 1: minimum PWM delay)."""
        cid = _as_int(config_id, "_get_internal", 1)
        if cid == 0:
            return self._u2i_list([OKAY, self.debug_level])
        if cid == 1:
            return self._u2i_list([OKAY, self.min_tx_delay])
        return self._u2i_list([BAD_CONFIG_ID, None])

    def set_internal(self, config_id: int, config_value: int) -> int:
        """Sets the value of a configuration item."""
        cid, value = _as_int(config_id, "_set_internal", 1), int(config_value)
        if cid == 0:
            self.debug_level = value | 1
            return self._u2i(OKAY)
        if cid == 1:
            if value > 1000:
                return self._u2i(BAD_CONFIG_VALUE)
            self.min_tx_delay = value
            return self._u2i(OKAY)
        return self._u2i(BAD_CONFIG_ID)

    # ------------------------------------------------------------------ the process going away

    def exit(self) -> None:
        """The process ends (in-process uninstall): the kernel closes its descriptors, its threads are gone.

        Nothing is written: every line it held is released by the kernel as it stood (a PWM line frozen), exactly
        as when a process is killed. The notification thread is stopped; its pipe stays, as lg leaves it.
        """
        thread, pipe = self.notify_thread, self.notify_pipe
        if thread is not None and pipe is not None and thread.is_alive():
            thread.go = False
            with contextlib.suppress(OSError):
                os.write(pipe.fd, bytes(16))  # wakes the blocked read; with go False nothing is dispatched
            thread.join(2.0)
        for slot, obj in enumerate(self.slots):
            fds = (obj.lock_fd, obj.dev_fd) if isinstance(obj, _Chip) else (obj.fd,) if isinstance(obj, _Notify) else ()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.slots[slot] = None
        for state in self.states.values():
            state.close()
        self.states.clear()


def make_module(config: Config | None = None, name: str = "lgpio") -> ModuleType:
    """A fresh fake ``lgpio`` module, as ``import lgpio`` makes one: this runs lgpio's import-time side effects.

    Those are lg's: resolve the working directory (``config.workdir``, else ``$LG_WD``, else the current one),
    ``chdir`` to it, create ``.lgd-nfy0`` there and start the notification thread. Raises ``FileNotFoundError``
    (``'.lgd-nfy-3'``) when the pipe cannot be made, as lgpio does.
    """
    module = ModuleType(name, "lgpio: a fake of lg's Python module for tests (tests/support/fake_lgpio)")
    lib = Lgpio(module, config or Config())
    namespace: dict[str, Any] = {key: globals()[key] for key in CONSTANTS}
    namespace.update(
        exceptions=True, error=error, pulse=pulse, u2i=u2i, error_text=error_text,
        get_module_version=get_module_version, xref=lambda: None, _fake=lib,
    )
    namespace.update({function: getattr(lib, function) for function in API})
    namespace.update({function: _not_emulated(function) for function in NOT_EMULATED})
    module.__dict__.update(namespace)
    thread = _CallbackThread(lib)  # lgpio.py: _notify_thread = _callback_thread()
    lib.notify_thread = thread
    pipe = lib.slots[thread._notify]
    lib.notify_pipe = pipe if isinstance(pipe, _Notify) else None
    module.__dict__["_notify_thread"] = thread
    return module


def on_raspberry_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


def import_lgpio(name: str, site_dir: str) -> ModuleType:
    """What ``site/lgpio.py`` becomes: the fake, or on a Raspberry Pi (unless ``$ROVER_SAFETY_FAKE_LGPIO_FORCE=1``)
    the real lgpio from the rest of ``sys.path`` — the fake never shadows a real lgpio on a Pi unless asked."""
    if on_raspberry_pi() and os.environ.get(ENV_FORCE) != "1":
        import importlib.machinery
        import importlib.util

        here = os.path.realpath(site_dir)
        path = [p for p in sys.path if os.path.realpath(p or ".") != here]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(
                f"this is a Raspberry Pi and the real lgpio is not installed; the fake lgpio is used on a Pi only "
                f"with {ENV_FORCE}=1", name=name,
            )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return make_module(Config(), name)
