"""`rover-safety stop-all`: stop everything now."""

from __future__ import annotations

import argparse

from .connecting import one_line_errors, open_client

NAME = "stop-all"
HELP = "stop every motor and base now"
DESCRIPTION = """Stop every resource the daemon drives, now (RobotService/StopAll). With auth.public_stop: true the
daemon takes it from anyone in reach, without a key."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@one_line_errors(NAME)
def run(args: argparse.Namespace) -> int:
    with open_client(args, handle_sigterm=False) as rover:
        rover.stop_all()
        print(f"stopped everything on {rover.address}")
    return 0
