"""`rover-safety watch`: a live view of sessions, resources and events, pushed by the daemon (no polling)."""

from __future__ import annotations

import argparse
import collections
import sys
import time

from ..status import RECONNECTED, RECONNECTING, Event, Status
from .connecting import one_line_errors, open_client
from .render import event_line, parts_table, resources_table, seconds, sessions_table

NAME = "watch"
HELP = "a live view: sessions, resources, expiries, as they happen"
DESCRIPTION = """A live view of the daemon, fed by its event stream (SafetyService/WatchEvents): sessions as they
start, heartbeat, expire and close, resources as they move and stop. It survives a daemon restart (it says so and
reconnects) and exits on Ctrl-C. When stdout is not a terminal it prints one line per event; with --once it prints
the whole view once and exits."""

CLEAR = "\x1b[H\x1b[2J"
EVENTS_SHOWN = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", action="store_true", help="one line per event even on a terminal")
    parser.add_argument("--once", action="store_true",
                        help="print the view once, as the daemon's first snapshot has it, and exit (for scripts)")


def screen(address: str, status: Status | None, recent: collections.deque[Event], link: str) -> str:
    lines = [f"rover-safety at {address} ({link})  {time.strftime('%H:%M:%S')}   Ctrl-C quits", ""]
    if status is not None:
        gpio = "up" if status.gpio_up else "DOWN"
        lines.append(f"GPIO {status.gpio_backend}: {gpio}; heartbeat window {seconds(status.heartbeat_window_seconds)}"
                     + (f"; MOTION REFUSED: {status.motion_refused}" if status.motion_refused else ""))
        lines += ["", *sessions_table(status.sessions), "", *resources_table(status)]
        if status.parts:
            lines += ["", *parts_table(status)]
    lines += ["", "events:", *(event_line(e) for e in recent)]
    return "\n".join(lines)


@one_line_errors(NAME)
def run(args: argparse.Namespace) -> int:
    live = sys.stdout.isatty() and not args.lines
    with open_client(args, handle_sigterm=False) as rover:
        status: Status | None = None
        recent: collections.deque[Event] = collections.deque(maxlen=EVENTS_SHOWN)
        link = "connected"
        stream = rover.watch()
        try:
            for event in stream:
                if event.kind == RECONNECTING:
                    link = "daemon lost: reconnecting"
                elif event.kind == RECONNECTED:
                    link = "connected again"
                if event.status is not None:
                    status = event.status
                if args.once and event.kind == "snapshot":
                    print(screen(rover.address, status, recent, link))
                    break
                if event.kind != "snapshot":
                    recent.append(event)
                    if not live:
                        print(event_line(event), flush=True)
                if live:
                    sys.stdout.write(CLEAR + screen(rover.address, status, recent, link) + "\n")
                    sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            stream.close()
    return 0
