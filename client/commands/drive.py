"""`rover-safety drive BASE`: keyboard teleoperation from a terminal, holding a session like any client.

A terminal sends no key-release events, so the base stops when no key has arrived within KEY_TIMEOUT, a little
above a keyboard's auto-repeat delay (as ROS's teleop_twist_keyboard does): while a key is held its repeats keep
it going. Quitting closes the session, so the base stops at once; a `kill -9` leaves the daemon to stop it when the
session's window lapses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator

from ..errors import SessionExpired
from .connecting import one_line_errors, open_client

NAME = "drive"
HELP = "drive a base from the keyboard (arrows or WASD, space stops, +/- speed, q quits)"
DESCRIPTION = __doc__ or ""

KEY_TIMEOUT = 0.6  # seconds without a key before the base stops (auto-repeat starts after about 0.5 s)
SPEED_STEP = 0.1
# key -> (linear, angular): forward is +linear, counter-clockwise (left) is +angular
MOVES = {
    "\x1b[A": (1.0, 0.0), "w": (1.0, 0.0), "W": (1.0, 0.0),
    "\x1b[B": (-1.0, 0.0), "s": (-1.0, 0.0), "S": (-1.0, 0.0),
    "\x1b[D": (0.0, 1.0), "a": (0.0, 1.0), "A": (0.0, 1.0),
    "\x1b[C": (0.0, -1.0), "d": (0.0, -1.0), "D": (0.0, -1.0),
}
NAMES = {(1.0, 0.0): "forward", (-1.0, 0.0): "backward", (0.0, 1.0): "turning left", (0.0, -1.0): "turning right"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="the base to drive, e.g. base")
    parser.add_argument("--speed", type=float, default=0.5, help="starting power, 0..1 (default 0.5)")


@contextlib.contextmanager
def raw_keys(fd: int) -> Iterator[None]:
    """Keys as they are typed (no line buffering, no echo); the terminal is restored however this ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(fd: int) -> str:
    """One key: a character, or a whole escape sequence such as an arrow's."""
    data = os.read(fd, 1)
    if data == b"\x1b":
        while select.select([fd], [], [], 0.01)[0]:
            data += os.read(fd, 1)
            if len(data) >= 3 and data[-1:].isalpha():
                break
    return data.decode(errors="replace")


def say(text: str) -> None:
    sys.stdout.write("\r\x1b[K" + text)
    sys.stdout.flush()


@one_line_errors(NAME)
def run(args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        print("rover-safety drive: needs a terminal (keys are read as they are typed)", file=sys.stderr)
        return 2
    speed = min(1.0, max(SPEED_STEP, args.speed))
    fd = sys.stdin.fileno()
    with open_client(args) as rover:
        base = rover.base(args.base)
        print(f"driving {args.base} on {rover.address}: arrows or WASD move (hold), space stops, +/- speed, q quits")
        moving: tuple[float, float] | None = None
        with raw_keys(fd):
            say(f"stopped, speed {speed:.0%}")
            while True:
                ready = select.select([fd], [], [], KEY_TIMEOUT if moving else None)[0]
                if not ready:  # no key within the timeout: the key was released
                    base.stop()
                    moving = None
                    say(f"stopped (key released), speed {speed:.0%}")
                    continue
                key = read_key(fd)
                if key in ("q", "Q", "\x03", "\x04"):
                    break
                try:
                    if key == " ":
                        base.stop()
                        moving = None
                        say(f"stopped, speed {speed:.0%}")
                    elif key in ("+", "="):
                        speed = min(1.0, speed + SPEED_STEP)
                        say(f"speed {speed:.0%}")
                        moving = None if moving is None else (0.0, 0.0)  # re-send at the new speed
                    elif key in ("-", "_"):
                        speed = max(SPEED_STEP, speed - SPEED_STEP)
                        say(f"speed {speed:.0%}")
                        moving = None if moving is None else (0.0, 0.0)
                    elif key in MOVES:
                        direction = MOVES[key]
                        if moving != direction:
                            base.set_power(direction[0] * speed, direction[1] * speed)
                            say(f"{NAMES[direction]} at {speed:.0%}")
                        moving = direction
                except SessionExpired:
                    moving = None
                    say("the session expired and the rover stopped; press a key to drive again")
        base.stop()
        say("stopped; closing the session\n")
    return 0
