"""`rover-safety sessions`: who is connected and what each drives."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .connecting import one_line_errors, open_client
from .render import parts_table, sessions_table

NAME = "sessions"
HELP = "list the live sessions (owner, peer, age, last heartbeat, what each drives) and the sub-parts"
DESCRIPTION = """List the daemon's live sessions. Every session is shown; the full session id only of your own
(an id is a secret: whoever holds it can heartbeat or close that session)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON ({sessions: [...], parts: [...]}) for scripts")


@one_line_errors(NAME)
def run(args: argparse.Namespace) -> int:
    with open_client(args, handle_sigterm=False) as rover:
        status = rover.status()
    if args.json:
        print(json.dumps({"sessions": [dataclasses.asdict(s) for s in status.sessions],
                          "parts": [dataclasses.asdict(p) for p in status.parts]}, indent=2))
        return 0
    print("\n".join(sessions_table(status.sessions)))
    if status.parts:
        print()
        print("\n".join(parts_table(status)))
    return 0
