"""How an operator command finds the daemon: its flags, else the environment and the client profile, else the
daemon `make run` starts (127.0.0.1:8080, plain text on loopback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a command runs: `rover-safety safe-stop` must not pay for gRPC's import
    from ..sync import Client

DEFAULT_ADDRESS = "127.0.0.1:8080"
PROFILE = "~/.config/rover-safety/client.yaml"
EPILOG = f"""connection: flags first, then ROVER_SAFETY_ADDRESS, ROVER_SAFETY_KEY_ID, ROVER_SAFETY_API_KEY,
ROVER_SAFETY_CA_FILE, ROVER_SAFETY_TLS_FINGERPRINT, ROVER_SAFETY_INSECURE, then the profile file
({PROFILE}, or $ROVER_SAFETY_PROFILE); with none of them, {DEFAULT_ADDRESS} in plain text."""


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--address", help=f"the daemon's host:port (default: the profile's, else {DEFAULT_ADDRESS})")
    group.add_argument("--profile", help=f"a client profile file (default: $ROVER_SAFETY_PROFILE or {PROFILE})")
    group.add_argument("--key-id", help="the API key's id (better in the profile)")
    group.add_argument("--api-key-file", help="a file holding the API key (never the key itself on the command "
                                              "line, where other users see it)")
    group.add_argument("--ca-file", help="verify the daemon's certificate against this CA (PEM)")
    group.add_argument("--tls-fingerprint", help="pin the daemon's certificate (SHA-256, as gen-cert prints)")
    group.add_argument("--insecure", action="store_true", help="plain text (loopback only with a key)")
    parser.epilog = EPILOG


def connection_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`connect()`'s keyword arguments from the flags, then the environment and the profile.

    With no TLS setting anywhere, plain text to a loopback address that takes no key (the daemon `make run`
    starts), TLS verified by the system's roots otherwise.
    """
    from ..connection import parse_address
    from ..profile import CONNECTION_FIELDS, ClientProfile

    profile = ClientProfile.load(args.profile)
    kwargs: dict[str, Any] = {"address": args.address or profile.address or DEFAULT_ADDRESS}
    for name in CONNECTION_FIELDS:
        if getattr(profile, name):
            kwargs[name] = getattr(profile, name)
    if args.key_id:
        kwargs["key_id"] = args.key_id
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as key_file:
            kwargs["api_key"] = key_file.read().strip()
    if args.ca_file:
        kwargs["ca_file"] = args.ca_file
    if args.tls_fingerprint:
        kwargs["tls_fingerprint"] = args.tls_fingerprint
    if args.insecure or profile.insecure:
        kwargs["tls"] = False
    elif kwargs.get("ca_file") or kwargs.get("tls_fingerprint"):
        kwargs["tls"] = True
    else:
        kwargs["tls"] = not (parse_address(kwargs["address"]).loopback and "api_key" not in kwargs)
    return kwargs


def open_client(args: argparse.Namespace, **options: Any) -> Client:
    """A connected client, with the command's own options (e.g. handle_sigterm)."""
    from ..sync import connect

    return connect(**connection_kwargs(args), connect_timeout=3.0, **options)


Command = Callable[[argparse.Namespace], int]


def one_line_errors(name: str) -> Callable[[Command], Command]:
    """A client error (unreachable daemon, refused key, ...) is one line on stderr and exit 1, never a traceback."""

    def wrap(command: Command) -> Command:
        def run(args: argparse.Namespace) -> int:
            from ..errors import ClientError

            try:
                return command(args)
            except ClientError as exc:
                print(f"rover-safety {name}: {exc}", file=sys.stderr)
                return 1
            except OSError as exc:  # e.g. an unreadable --api-key-file
                print(f"rover-safety {name}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                return 130

        return run

    return wrap
