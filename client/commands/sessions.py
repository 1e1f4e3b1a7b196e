"""`rover-safety sessions`: who is connected and what each drives."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .connecting import one_line_errors, open_client
from .render import sessions_table

NAME = "sessions"
HELP = "list the live sessions (owner, peer, age, last heartbeat, what each drives)"
DESCRIPTION = """List the daemon's live sessions. Every session is shown; the full session id only of your own
(an id is a secret: whoever holds it can heartbeat or close that session)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (a list of sessions) for scripts")


@one_line_errors(NAME)
def run(args: argparse.Namespace) -> int:
    with open_client(args, handle_sigterm=False) as rover:
        sessions = rover.sessions()
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in sessions], indent=2))
    else:
        print("\n".join(sessions_table(sessions)))
    return 0
