"""The operator's commands, on the client library: `rover-safety sessions | watch | stop-all | drive`.

They reach the daemon only through its gRPC API, like any other client; `daemon/cli.py` registers them beside
`serve` in one `rover-safety` command line.
"""

from __future__ import annotations

import argparse

from . import drive, sessions, stop_all, watch
from .connecting import add_connection_options

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator commands to the `rover-safety` command line."""
    for module in (sessions, watch, stop_all, drive):
        parser = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        add_connection_options(parser)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
